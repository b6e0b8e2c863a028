"""Code generation end to end: `trady compile` -> C project -> gcc (-Werror, sanitizers) -> `trady verify`.

The per-model end-to-end tests are `slow` except for mcunet-5fps. A tiny hand-built model
(tests/tt_support.py `tiny_model_dict`) is compiled and the generated files are compared with a
golden copy in tests/golden/tiny/, so that any change to the templates or the emitter shows up as
a diff in review (the model's path and sha256 are replaced by placeholders first). When a change
is intended, regenerate the copy with

    TRADY_UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/test_codegen.py -k golden

and commit the new files together with the change (the test then fails no more, and the diff of
tests/golden/ shows exactly what the generated code looks like now).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tt_support import (
    MODEL_NAMES,
    assert_one_line_error,
    model_path,
    require_tool,
    run_cli,
    tiny_model_dict,
    write_model,
)

from compiler import emit, host, pipeline, verify
from compiler.importers import tiny_training
from compiler.ir import Add, Conv

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny"
BUDGET = "64832"


def _env() -> dict[str, str]:
    """The environment for make: no CC/CFLAGS from the caller, so the Makefile's own flags apply."""
    return {k: v for k, v in os.environ.items() if k not in ("CC", "CFLAGS", "MAKEFLAGS")}


def make(folder: Path, *args: str) -> subprocess.CompletedProcess:
    require_tool("make")
    require_tool("gcc")
    return subprocess.run(["make", "-C", str(folder), *args], capture_output=True, text=True, env=_env(),
                          check=False)


MODELS = [pytest.param(m, marks=[] if m == "mcunet-5fps" else [pytest.mark.slow]) for m in MODEL_NAMES]


@pytest.fixture(scope="module", params=MODELS)
def compiled(request, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    out = tmp_path_factory.mktemp(f"compile_{name}") / "project"
    rc, stdout, err = run_cli(["compile", str(model_path(name)), "--budget", BUDGET, "--out", str(out)])
    assert rc == 0, err
    assert stdout.splitlines()[-1] == f"wrote {out}"
    return name, out


def test_default_target_builds_with_werror(compiled):
    _, folder = compiled
    dry = make(folder, "-n", "-B")  # the default target's command line
    assert dry.returncode == 0, dry.stderr
    for flag in ("-std=c99", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"):
        assert flag in dry.stdout, f"default target does not pass {flag}: {dry.stdout}"
    r = make(folder)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (folder / "host_sim").is_file()
    assert "warning" not in r.stderr.lower()


def test_sanitizer_target_builds(compiled):
    _, folder = compiled
    dry = make(folder, "-n", "-B", "host_sim_san")
    assert "-fsanitize=address,undefined" in dry.stdout and "-Werror" in dry.stdout
    r = make(folder, "host_sim_san")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (folder / "host_sim_san").is_file()


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "sanitize"])
def test_verify_passes(compiled, sanitize, monkeypatch):
    _, folder = compiled
    monkeypatch.delenv("CFLAGS", raising=False)
    monkeypatch.delenv("CC", raising=False)
    rc, out, err = run_cli(["verify", str(folder), "--images", "2", *(["--sanitize"] if sanitize else [])])
    assert rc == 0, out + err
    assert out.splitlines()[-1].startswith("verify: OK"), out


@pytest.mark.parametrize("name", MODELS)
def test_compile_is_deterministic(name, tmp_path):
    """Two compiles of the same model give byte-identical folders (no timestamps, sorted iteration)."""
    folders = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        rc, _, err = run_cli(["compile", str(model_path(name)), "--budget", BUDGET, "--out", str(out)])
        assert rc == 0, err
        folders.append(out)
    first, second = folders
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), f"{rel} differs between compiles"


# The generated project (mcunet-5fps) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def mcunet(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mcunet") / "project"
    rc, _, err = run_cli(["compile", str(model_path("mcunet-5fps")), "--budget", BUDGET, "--out", str(out)])
    assert rc == 0, err
    return out


def test_generated_c_layout(mcunet):
    c = (mcunet / "mcunet_5fps.c").read_text()
    plan = json.loads((mcunet / "mcunet_5fps_plan.json").read_text())
    arena = plan["arena_bytes"]
    n_conv, n_add = 42, sum(op["type"] == "Add" for op in plan["ops"])
    assert c.startswith("/* Generated by trady") and "Do not edit." in c.splitlines()[0]
    # The file opens with the memory map (table and timeline), before any code.
    head = c[:c.index("#include")]
    assert f"Memory map: one static arena of {arena} bytes" in head
    assert "| buffer | offset | bytes | shape (H, W, C) | live steps |" in head
    assert "Timeline" in head and "(in place over" in head
    assert f"static int32_t arena_words[{(arena + 3) // 4}];" in c
    # Parameters as designated initialisers, one set per layer.
    conv_params = re.findall(r"static const tt_conv_params (L\d+)_params = \{\n"
                             r"    \.input_offset = -?\d+,\n    \.output_offset = -?\d+,\n"
                             r"    \.stride = [12],\n    \.padding = [0-3],\n(?:    \.patch = &L\d+_patch,\n)?\};", c)
    assert len(conv_params) == n_conv
    assert len(re.findall(r"tt_per_channel_quant L\d+_quant = \{\.multiplier = L\d+_multiplier, "
                          r"\.shift = L\d+_shift\};", c)) == n_conv
    filter_dims = r"tt_dims L\d+_filter_dims = \{\.n = \d+, \.h = \d, \.w = \d, \.c = \d+\};"
    assert len(re.findall(filter_dims, c)) == n_conv
    assert n_add == 7 and len(re.findall(r"static const tt_add_params L\d+_params = \{", c)) == n_add
    assert len(re.findall(r"    \.input1_offset = -?\d+,\n    \.input1_multiplier = \d+,", c)) == n_add
    # Every conv call passes those structs, by name.
    calls = re.findall(r"TT_TRY\((tt_\w+)\(&ctx, &(L\d+)_params, &\2_quant, &\2_in_dims, BUF_\w+,\s*"
                       r"&\2_filter_dims, \2_weight, \2_bias, &\2_out_dims, BUF_\w+\)\);", c)
    assert len(calls) == n_conv
    assert {f for f, _ in calls} == {"tt_conv2d_s8", "tt_depthwise_conv2d_s8", "tt_pointwise_conv2d_s8"}
    assert len(re.findall(r"TT_TRY\(tt_add_s8\(&(L\d+)_params, ", c)) == n_add
    assert "char " not in c.replace("const char *", "")  # int8_t, never char


def test_plan_json(mcunet):
    plan = json.loads((mcunet / "mcunet_5fps_plan.json").read_text())
    for key in ("model", "total_units", "budget_units", "layers", "sram_bytes", "flash_bytes"):
        assert key in plan, key
    assert plan["model"] == "mcunet-5fps"
    assert plan["total_units"] == 1_309_808
    assert plan["budget_units"] == 64_832
    assert len(plan["layers"]) == 42
    for layer in plan["layers"]:
        for key in ("name", "kind", "in_shape", "out_shape", "macs", "C_W", "C_A"):
            assert key in layer, (layer.get("name"), key)
        assert layer["kind"] in ("conv", "depthwise", "pointwise")
        assert layer["C_A"] == layer["in_shape"][0] * layer["in_shape"][1]
    assert sum((la["C_W"] + la["C_A"]) * la["in_channels"] for la in plan["layers"]) == 1_309_808
    first = plan["layers"][0]
    assert (first["name"], first["kind"], first["in_shape"], first["out_shape"]) == \
        ("first_conv", "conv", [128, 128, 3], [64, 64, 16])
    assert first["macs"] == 64 * 64 * 16 * 27 and first["C_W"] == 16 * 9 and first["C_A"] == 128 * 128
    for part in ("sram_bytes", "flash_bytes"):
        parts = {k: v for k, v in plan[part].items() if k != "total"}
        assert parts and plan[part]["total"] == sum(parts.values()), part
    assert plan["sram_bytes"]["activation_arena"] == 163_840  # the forward pass alone
    # Every conv weight lives somewhere: frozen in flash, or trainable (initial values in flash).
    flash = plan["flash_bytes"]
    assert flash["total"] >= 463_216 + 4 * sum(la["out_shape"][2] for la in plan["layers"])


# Bad command lines --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "needles"), [
    (["--budget", "0"], ("--budget", "0")),
    (["--budget", "abc"], ("--budget", "abc")),
    (["--budget", "100", "--classes", "1"], ("--classes", "1")),
], ids=["budget_0", "budget_abc", "classes_1"])
def test_bad_options(args, needles, tmp_path):
    out = tmp_path / "out"
    rc, _, err = run_cli(["compile", str(model_path("mcunet-5fps")), *args, "--out", str(out)])
    assert_one_line_error(rc, err, *needles)
    assert not out.exists()


def test_missing_model_file(tmp_path):
    out = tmp_path / "out"
    rc, _, err = run_cli(["compile", str(tmp_path / "nope.pkl"), "--budget", "100", "--out", str(out)])
    assert_one_line_error(rc, err, "nope.pkl", "not found")
    assert not out.exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_output_replaced_only_on_success(tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "keep.txt").write_text("previous build\n")
    before = _snapshot(out)
    bad = write_model({"not": "a model"}, tmp_path / "bad.pkl")
    rc, _, err = run_cli(["compile", str(bad), "--budget", "100", "--out", str(out)])
    assert_one_line_error(rc, err, "bad.pkl")
    assert _snapshot(out) == before, "a failed compile touched the existing output folder"
    rc, _, err = run_cli(["compile", str(model_path("mcunet-5fps")), "--budget", "100", "--out", str(out)])
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "mcunet_5fps.c").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pkl", "project"], "temporary folder left"


def test_output_folder_permissions_follow_umask(tiny, tmp_path):
    """The project folder gets the permissions any other new folder would (umask), not mkdtemp's 0700."""
    model, _ = tiny
    out = tmp_path / "project"
    rc, _, err = run_cli(["compile", str(model), "--budget", "300", "--classes", "3", "--out", str(out)])
    assert rc == 0, err
    plain = tmp_path / "plain"
    plain.mkdir()
    got, want = oct(out.stat().st_mode & 0o777), oct(plain.stat().st_mode & 0o777)
    assert got == want, f"{out} has mode {got}; a new folder gets {want}"


def test_failure_while_writing_leaves_old_output(tiny, tmp_path, monkeypatch):
    """A failure inside `pipeline.write` (here: a runtime source that cannot be copied) leaves the old
    folder as it was and no temporary folder behind."""
    model, _ = tiny
    project = pipeline.build(model, pipeline.Options(budget=300, classes=3))
    out = tmp_path / "project"
    out.mkdir()
    (out / "keep.txt").write_text("previous build\n")
    monkeypatch.setattr(emit, "support_files", lambda: {"runtime/missing.c": tmp_path / "does-not-exist.c"})
    with pytest.raises(OSError):
        pipeline.write(project, out)
    assert _snapshot(out) == {"keep.txt": b"previous build\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


# A tiny model (tests/tt_support.py): golden files, sign convention, and C vs reference ---------------

GOLDEN_FILES = ("tiny.c", "tiny.h", "model.h", "Makefile", "tiny_plan.json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tiny")
    model = write_model(tiny_model_dict(), tmp / "tiny.pkl")
    out = tmp / "tiny"
    rc, _, err = run_cli(["compile", str(model), "--budget", "300", "--classes", "3", "--out", str(out)])
    assert rc == 0, err
    return model, out


def _normalised(text: str, model: Path) -> str:
    """The generated text without what depends on this machine or on pickle's bytes: the model's
    path and sha256 (both are checked elsewhere)."""
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    text = text.replace(str(model.resolve()), "<model path>")
    return text.replace(sha, "<sha256>").replace(sha[:16], "<sha256>")


def test_golden_tiny_model(tiny):
    model, out = tiny
    generated = {name: _normalised((out / name).read_text(), model) for name in GOLDEN_FILES}
    assert "<sha256>" in generated["tiny.c"] and "<model path>" in generated["tiny_plan.json"]
    if os.environ.get("TRADY_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in generated.items():
            (GOLDEN / name).write_text(text)
    missing = [n for n in GOLDEN_FILES if not (GOLDEN / n).is_file()]
    assert not missing, f"golden files {missing} absent: run with TRADY_UPDATE_GOLDEN=1 (module docstring)"
    for name, text in generated.items():
        want = (GOLDEN / name).read_text()
        if text != want:
            got_lines, want_lines = text.splitlines(), want.splitlines()
            i = next((k for k, (a, b) in enumerate(zip(got_lines, want_lines, strict=False)) if a != b),
                     min(len(got_lines), len(want_lines)))
            pytest.fail(f"{name} differs from tests/golden/tiny/{name} at line {i + 1}:\n"
                        f"  generated: {got_lines[i] if i < len(got_lines) else '<end of file>'}\n"
                        f"  golden:    {want_lines[i] if i < len(want_lines) else '<end of file>'}\n"
                        "If the change is intended, regenerate with TRADY_UPDATE_GOLDEN=1, review the diff.")


def test_emitted_offsets_follow_the_sign_convention(tiny):
    """In the generated C, .input_offset = -x_zero of the conv's input, .output_offset = +y_zero."""
    model, out = tiny
    graph = tiny_training.load(model)
    c = (out / "tiny.c").read_text()
    convs = [(i, op) for i, op in enumerate(graph.ops) if isinstance(op, Conv)]
    for i, op in convs:
        m = re.search(rf"static const tt_conv_params L{i}_params = \{{\n    \.input_offset = (-?\d+),\n"
                      rf"    \.output_offset = (-?\d+),", c)
        assert m, f"L{i}_params not found"
        x, y = graph.tensors[op.input], graph.tensors[op.output]
        assert (int(m.group(1)), int(m.group(2))) == (-x.zero, y.zero), op.name
    assert any(graph.tensors[op.input].zero not in (0,) for _, op in convs)  # the check has teeth
    add = next(i for i, op in enumerate(graph.ops) if isinstance(op, Add))
    m = re.search(rf"tt_add_params L{add}_params = \{{\n    \.input1_offset = (-?\d+),", c)
    assert int(m.group(1)) == -graph.tensors[graph.ops[add].inputs[0]].zero


@pytest.mark.parametrize("sanitize", [False, True], ids=["plain", "sanitize"])
def test_tiny_model_c_matches_reference(tiny, sanitize, monkeypatch):
    """The whole path on odd sizes, every conv kind, a residual add, a dead channel, asymmetric zeros."""
    monkeypatch.delenv("CFLAGS", raising=False)
    monkeypatch.delenv("CC", raising=False)
    require_tool("make")
    require_tool("gcc")
    _, out = tiny
    project = pipeline.load_project(out)
    exe = host.build(out, sanitize=sanitize)
    images = np.random.default_rng(11).integers(-128, 128, (6, 9, 9, 3)).astype(np.int8)
    images[0] = -128
    images[1] = 127
    result = verify.compare_forward(project, exe, images)
    assert result.ok, result.message
