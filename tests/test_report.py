"""`trady report`, `trady bench` and the linear probe on small inputs (compiler/report.py, commands.py,
probe.py). The real 55% probe check is in test_probe.py (slow)."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from compiler import cli, emit, pipeline, probe, report
from compiler.cli import default_data, default_model

RES = 16


def _conv_spec(rng: np.random.Generator, cin: int, cout: int, k: int, stride: int, depthwise: bool,
               x_scale: float, x_zero: int, y_scale: float, y_zero: int, dead: tuple[int, ...] = ()) -> dict:
    w = rng.integers(-127, 128, (cout, 1 if depthwise else cin, k, k), dtype=np.int8)
    ws = rng.uniform(0.004, 0.02, cout).astype(np.float32)
    bias = rng.integers(-2000, 2000, cout).astype(np.int32)
    for c in dead:  # dead channels as in the shared models (SPEC 3)
        ws[c], bias[c] = np.float32(3.9e-9), np.iinfo(np.int32).min
    return {"in_channel": cin, "out_channel": cout, "kernel_size": k, "stride": stride,
            "groups": cin if depthwise else 1,
            "params": {"weight": w, "bias": bias, "w_scales": ws, "x_scale": x_scale, "x_zero": x_zero,
                       "y_scale": y_scale, "y_zero": y_zero}}


def write_tiny_model(path: Path, seed: int = 3) -> Path:
    """A 16x16 tiny-training model file: conv 3x3/2 -> [dw 3x3, pw] + residual -> [pw, dw 3x3/2, pw]
    -> pool -> classifier, with a dead channel, saved as a torch zip of plain dicts and arrays."""
    rng = np.random.default_rng(seed)
    s = [2 / 255, 0.05, 0.04, 0.06, 0.07, 0.05, 0.08, 0.09]
    z = [0, -20, 5, -3, 10, -128, 7, -5]
    first = _conv_spec(rng, 3, 8, 3, 2, False, s[0], z[0], s[1], z[1], dead=(2,))
    first["in_shape"] = RES
    blocks = [
        {"pointwise1": None,
         "depthwise": _conv_spec(rng, 8, 8, 3, 1, True, s[1], z[1], s[2], z[2], dead=(2,)),
         "pointwise2": _conv_spec(rng, 8, 8, 1, 1, False, s[2], z[2], s[3], z[3]),
         "residual": {"params": {"x_scale": s[1], "x_zero": z[1], "y_scale": s[4], "y_zero": z[4]}}, "se": None},
        {"pointwise1": _conv_spec(rng, 8, 16, 1, 1, False, s[4], z[4], s[5], z[5]),
         "depthwise": _conv_spec(rng, 16, 16, 3, 2, True, s[5], z[5], s[6], z[6]),
         "pointwise2": _conv_spec(rng, 16, 12, 1, 1, False, s[6], z[6], s[7], z[7]),
         "residual": None, "se": None},
    ]
    classifier = {"in_channel": 12, "out_channel": 5, "kernel_size": 1, "stride": 1, "groups": 1,
                  "params": {"weight": rng.integers(-127, 128, (5, 12, 1, 1), dtype=np.int8),
                             "bias": rng.integers(-100, 100, 5).astype(np.int32),
                             "w_scales": rng.uniform(0.01, 0.02, 5).astype(np.float32),
                             "x_scale": s[7], "x_zero": z[7], "y_scale": 0.1, "y_zero": 0}}
    torch.save({"first_conv": first, "blocks": blocks, "feature_mix": None, "classifier": classifier}, path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny-net.pkl")


@pytest.fixture(scope="module")
def mcunet_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("proj") / "mcunet-5fps"
    project = pipeline.build(default_model(), pipeline.Options(budget=15_936))
    return pipeline.write(project, out)


def _layer_rows(md: str) -> list[list[str]]:
    """Cells of the per-layer table's data rows (those whose first cell is a layer index)."""
    section = md.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ")]
    return [r for r in rows if r[0].isdigit()]


def _bytes_table(md: str, title: str) -> dict[str, int]:
    section = md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and re.fullmatch(r"\**[\d,]+\**", cells[1]):
            out[cells[0].strip("*")] = int(cells[1].strip("*").replace(",", ""))
    return out


def test_report_files_tables_and_totals(mcunet_project: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["report", str(mcunet_project)]) == 0
    printed = capsys.readouterr().out
    md = (mcunet_project / report.REPORT_MD).read_text()
    assert printed.strip() == md.strip()
    png = (mcunet_project / report.MEMORY_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not [p.name for p in mcunet_project.iterdir() if p.name.startswith(".")], "temporary files left behind"

    plan = report.load_plan(mcunet_project)
    rows = _layer_rows(md)
    assert [r[1].strip("`") for r in rows] == [layer["name"] for layer in plan["layers"]]
    assert len(rows) == 42
    units = [int(r[9].replace(",", "")) for r in rows]
    assert sum(units) == plan["total_units"] == 1_309_808
    assert sum(int(r[6].replace(",", "")) for r in rows) == plan["macs"]
    assert all(r[11] == "-" for r in rows)  # no TopK file yet
    assert f"**{plan['total_units']:,}**" in md

    sram = _bytes_table(md, "SRAM (bytes)")
    assert sram.pop("total") == sum(sram.values()) == plan["sram_bytes"]["total"]
    assert len(sram) == len(plan["sram_bytes"]) - 1
    flash = _bytes_table(md, "Flash (bytes)")
    assert flash.pop("total") == sum(flash.values()) == plan["flash_bytes"]["total"]
    assert "code" in md and "firmware" in md

    # The ASCII map: 16 arena slices x every planned step, drawn by the emitter's `timeline`.
    timeline = md.split("```", 2)[1].strip("\n").splitlines()
    n_steps = report.steps(plan)
    assert n_steps >= len(plan["ops"]) + 1
    assert timeline == emit.timeline(report.memory_plan(plan), n_steps)
    assert len(timeline) == 17 and all(len(line.split("|")[1]) == n_steps for line in timeline[:-1])
    assert all(f"`{b['name']}`" in md for b in plan["buffers"])


def test_report_any_sram_parts_and_topk(mcunet_project: Path, tmp_path: Path) -> None:
    plan = report.load_plan(mcunet_project)
    plan["sram_bytes"] = {"activation_arena": 100, "update_arena": 30, "masks": 7, "head": 11, "stack": 2,
                          "total": 150}
    plan["topk"] = {"k": 1, "ranking": [{"layer": "blocks.13.pointwise2", "rgn": 2.0}, "first_conv"]}
    md = report.markdown(plan)
    sram = _bytes_table(md, "SRAM (bytes)")
    assert sram.pop("total") == sum(sram.values()) == 150
    assert len(sram) == 5
    rows = {r[1].strip("`"): r[11] for r in _layer_rows(md)}
    assert rows["blocks.13.pointwise2"] == "1" and rows["first_conv"] == "(2)" and rows["blocks.0.depthwise"] == "-"
    assert "K = 1" in md


def test_report_tiny_model_and_in_place_adds(tiny_model: Path, tmp_path: Path) -> None:
    out = pipeline.write(pipeline.build(tiny_model, pipeline.Options(budget=100, classes=3)), tmp_path / "t")
    text, md, png = report.write(out)
    assert md.is_file() and png.is_file()
    rows = _layer_rows(text)
    assert [r[1] for r in rows] == ["`first_conv`", "`blocks.0.depthwise`", "`blocks.0.pointwise2`",
                                    "`blocks.1.pointwise1`", "`blocks.1.depthwise`", "`blocks.1.pointwise2`"]
    # dead channel 2 of first_conv (out) feeds the depthwise (in), whose channel 2 is dead too
    assert [r[10] for r in rows[:3]] == ["0/1", "1/1", "1/0"]
    assert "| 3..4 (in place over `first_conv`) |" in text


def test_report_bad_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a compiled project" in err[0]
    (tmp_path / "x_plan.json").write_text("{not json")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "unreadable plan" in capsys.readouterr().err
    assert not (tmp_path / report.REPORT_MD).exists()


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="gcc/make not installed")
def test_bench_prints_positive_ratio(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["bench", "--model", str(tiny_model), "--images", "3", "--repeats", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    c_ms = float(re.search(r"([\d.]+) ms/image", lines[0]).group(1))
    ref_ms = float(re.search(r"([\d.]+) ms/image", lines[1]).group(1))
    ratio = float(re.search(r"ratio reference / C: ([\d.]+)", lines[2]).group(1))
    assert c_ms > 0 and ref_ms > 0 and ratio > 0
    assert math.isclose(ratio, ref_ms / c_ms, rel_tol=0.05, abs_tol=0.02)
    assert lines[3].startswith("bench tiny-net")


def test_probe_runs_on_a_tiny_subset() -> None:
    r = probe.linear_probe(default_model(), default_data(), train=10, test=10, progress=False)
    assert 0.0 <= r.accuracy <= 1.0 and 0.0 <= r.train_accuracy <= 1.0
    assert (r.train, r.test, r.features, r.classes) == (10, 10, 160, 10)


def test_probe_cli_last_line(tiny_model: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["probe", "--model", str(tiny_model), "--train", "20", "--test", "10", "--min-accuracy", "0"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = re.fullmatch(r"probe accuracy: ([\d.]+)% \(20 train / 10 test images, bar 0%: PASS\)", last)
    assert m and 0 <= float(m.group(1)) <= 100


def test_probe_standardise_and_fit_separable() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    x = rng.normal(size=(60, 4)) + 6 * np.eye(3, 4)[y]
    x[:, 3] = 5.0  # a constant feature stays finite (0) after standardising
    a, b = probe.standardise(x[:45], x[45:])
    assert np.allclose(a.mean(axis=0), 0) and np.allclose(a.std(axis=0)[:3], 1) and np.all(a[:, 3] == 0)
    w, bias = probe.fit_logistic(a, y[:45], 3)
    assert probe.accuracy(a, y[:45], w, bias) == 1.0 and probe.accuracy(b, y[45:], w, bias) >= 0.9
    w2, bias2 = probe.fit_logistic(a, y[:45], 3)
    assert torch.equal(w, w2) and torch.equal(bias, bias2)  # deterministic


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("make") is None, reason="gcc/make not installed")
def test_demo_runs_every_stage_on_a_tiny_model(tiny_model: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["demo", "--model", str(tiny_model), "--out", str(tmp_path), "--images", "3", "--train", "20",
                   "--test", "10", "--sim-epochs", "1", "--sim-train", "20", "--sim-test", "10"])
    out = capsys.readouterr().out
    for i in range(1, 7):
        assert f"=== [{i}/6]" in out
    assert (tmp_path / "tiny-net" / report.REPORT_MD).is_file()
    last = out.strip().splitlines()[-1]
    assert "verify bit-exact on 3 images" in last and "SRAM" in last and "probe" in last
    assert "trained on device (host sim)" in last and (tmp_path / "tiny-net" / "metrics.png").is_file()
    assert rc == (0 if "PASS" in last else 1)  # a random tiny net may well miss the 55% bar
