"""Trainable weights with a flash home (SPEC 8): working copies in the update arena, weight patches in
the kernels, page-buffered write-back at each resampling. C and reference must stay bit-exact across
epoch boundaries (a broken write-back or patch shows as a weight or logit difference), `auto` picks
the home from the target's SRAM, and bad options give one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tt_support import assert_one_line_error, model_path, require_tool, run_cli, tiny_model_dict, write_model

from compiler import pipeline


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny model (every conv kind, a residual add, a dead channel) and a 3-class random data set."""
    tmp = tmp_path_factory.mktemp("flash")
    model = write_model(tiny_model_dict(), tmp / "tiny.pkl")
    rng = np.random.default_rng(7)
    data = tmp / "three.npz"
    np.savez(data, x_train=rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8), y_train=rng.integers(0, 3, 24),
             x_test=rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), y_test=rng.integers(0, 3, 6))
    return model, data


def compile_tiny(model: Path, out: Path, budget: int, home: str, page: int = 64) -> Path:
    rc, _, err = run_cli(["compile", str(model), "--budget", str(budget), "--classes", "3", "--weight-home", home,
                          "--flash-page", str(page), "--out", str(out)])
    assert rc == 0, err
    return out


# budget 300: a few channels per epoch (partial selections, write-back then reload); 100000: the whole pool,
# so every conv kind (dense 3x3, depthwise, pointwise) runs with patched channels in forward and backward.
@pytest.mark.parametrize("budget", [300, 100_000])
@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "sanitize"])
def test_flash_home_training_c_equals_reference(tiny_setup, tmp_path, budget, sanitize):
    require_tool("make")
    model, data = tiny_setup
    out = compile_tiny(model, tmp_path / "p", budget, "flash")
    plan = json.loads(next(out.glob("*_plan.json")).read_text())
    assert plan["weight_home"] == "flash" and plan["sram_bytes"]["trainable_weights"] == 0
    assert plan["sram_bytes"]["flash_page_buffer"] == 64
    argv = ["verify", str(out), "--data", str(data), "--steps", "12", "--lr", "0.05", "--seed", "3"]
    rc, stdout, err = run_cli(argv + (["--sanitize"] if sanitize else []))
    last = stdout.strip().splitlines()[-1]
    assert rc == 0, stdout + err
    assert "flash weight home" in last and "identical selections" in last


def test_flash_home_write_back_is_checked(tiny_setup, tmp_path):
    """Dropping the write-back in the generated C must make verify fail at the epoch boundary."""
    require_tool("make")
    model, data = tiny_setup
    out = compile_tiny(model, tmp_path / "p", 300, "flash")
    c = out / "tiny.c"
    text = c.read_text()
    assert text.count("    TT_TRY(tt_flash_writeback_slices(") >= 3
    c.write_text(text.replace("    TT_TRY(tt_flash_writeback_slices(", "    if (0) TT_TRY(tt_flash_writeback_slices("))
    rc, stdout, _ = run_cli(["verify", str(out), "--data", str(data), "--steps", "12", "--lr", "0.05", "--seed", "3"])
    assert rc == 1 and "FAIL" in stdout and "first divergence at step 6" in stdout, stdout


def test_flash_home_sim_counts_programmed_pages(tiny_setup, tmp_path):
    require_tool("make")
    model, data = tiny_setup
    pages = {}
    for home in ("ram", "flash"):
        out = compile_tiny(model, tmp_path / home, 300, home)
        rc, _, err = run_cli(["sim", str(out), "--data", str(data), "--epochs", "3", "--lr", "0.05"])
        assert rc == 0, err
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        pages[home] = [r["flash_pages"] for r in rows]
    assert pages["ram"] == [0, 0, 0]
    # write-backs happen when epochs 2 and 3 begin; the count only grows
    assert pages["flash"][0] == 0 and 0 < pages["flash"][1] <= pages["flash"][2]


def test_auto_weight_home_follows_the_target_sram(tiny_setup):
    model, _ = tiny_setup
    small = pipeline.build(model, pipeline.Options(budget=300, classes=3))
    assert small.spec.weight_home == "ram" and small.plan_json["sram_bytes"]["trainable_weights"] > 0
    mcunet = model_path("mcunet-5fps")
    topk = Path(__file__).resolve().parent.parent / "docs" / "topk-mcunet-last17.json"
    for budget in (15_936, 64_832, 112_640):
        ram = pipeline.build(mcunet, pipeline.Options(budget=budget, topk=str(topk), weight_home="ram"))
        auto = pipeline.build(mcunet, pipeline.Options(budget=budget, topk=str(topk)))
        assert ram.plan_json["sram_bytes"]["total"] > pipeline.TARGET_SRAM["host"]
        assert auto.spec.weight_home == "flash"
        sram, flash = auto.plan_json["sram_bytes"], auto.plan_json["flash_bytes"]
        assert sram["total"] <= pipeline.TARGET_SRAM["host"], sram
        assert sram["update_arena"] == budget and sram["trainable_weights"] == 0
        home = flash["trainable_weights_init"]
        assert home % 2048 == 0 and home >= ram.plan_json["sram_bytes"]["trainable_weights"]


@pytest.mark.parametrize("argv,needle", [
    (["--weight-home", "eeprom"], "--weight-home eeprom"),
    (["--flash-page", "1000"], "--flash-page 1000"),
])
def test_bad_weight_home_options(tiny_setup, tmp_path, argv, needle):
    model, _ = tiny_setup
    out = tmp_path / "bad"
    rc, _, err = run_cli(["compile", str(model), "--budget", "300", "--classes", "3", "--out", str(out), *argv])
    assert_one_line_error(rc, err, needle)
    assert not out.exists()


# Gradient accumulation (SPEC 5, --accumulate N) ---------------------------------------------------------------

# N = 3 divides the 6-step epochs; N = 5 does not, so a partial sum is flushed at the resampling.
@pytest.mark.parametrize("accumulate", [3, 5])
@pytest.mark.parametrize("home", ["ram", "flash"])
def test_accumulated_training_c_equals_reference(tiny_setup, tmp_path, home, accumulate):
    require_tool("make")
    model, data = tiny_setup
    out = tmp_path / "p"
    rc, _, err = run_cli(["compile", str(model), "--budget", "300", "--classes", "3", "--weight-home", home,
                          "--flash-page", "64", "--accumulate", str(accumulate), "--out", str(out)])
    assert rc == 0, err
    plan = json.loads(next(out.glob("*_plan.json")).read_text())
    h = pipeline.load_project(out).graph.head
    head = h.weight.size + h.bias.size
    assert plan["accumulate"] == accumulate
    assert plan["sram_bytes"]["grad_accumulator"] == 4 * (plan["budget_bytes"] + head)
    rc, stdout, err = run_cli(["verify", str(out), "--data", str(data), "--steps", "12", "--lr", "0.05",
                               "--seed", "3", "--sanitize"])
    assert rc == 0, stdout + err
    assert f"accumulate {accumulate}" in stdout.splitlines()[-1]


def test_accumulated_training_resumes_mid_sum(tiny_setup, tmp_path):
    """A state saved between two updates carries the pending sums: resuming equals the uninterrupted run."""
    from compiler import host

    require_tool("make")
    model, _ = tiny_setup
    out = tmp_path / "p"
    rc, _, err = run_cli(["compile", str(model), "--budget", "300", "--classes", "3", "--weight-home", "flash",
                          "--flash-page", "64", "--accumulate", "4", "--out", str(out)])
    assert rc == 0, err
    exe = host.build(out)
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (10, 9, 9, 3)).astype(np.int8)
    y = rng.integers(0, 3, 10).astype(np.int32)

    def trace(lo: int, hi: int, *options: str) -> bytes:
        return host.run_trace(exe, x[lo:hi], y[lo:hi], 5, 3, 0.05, 1, 10, options)

    full = trace(0, 10)
    state = tmp_path / "s.bin"
    assert trace(0, 6, f"save={state}") + trace(6, 10, f"load={state}", "start=6") == full


def test_flash_home_without_trainable_convs_is_a_ram_plan(tiny_setup, tmp_path):
    """head-only has no trainable conv weights: --weight-home flash has nothing to place and builds as usual."""
    require_tool("make")
    model, data = tiny_setup
    out = tmp_path / "p"
    rc, _, err = run_cli(["compile", str(model), "--budget", "300", "--classes", "3", "--strategy", "head-only",
                          "--weight-home", "flash", "--out", str(out)])
    assert rc == 0, err
    assert json.loads(next(out.glob("*_plan.json")).read_text())["weight_home"] == "ram"
    rc, stdout, err = run_cli(["verify", str(out), "--data", str(data), "--steps", "4"])
    assert rc == 0, stdout + err
