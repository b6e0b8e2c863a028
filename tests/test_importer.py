"""Importer (compiler/importers/tiny_training.py): the three real models, and malformed files.

Each malformed file is a real model's dict (read with `load_dict`), mutated, and written back as a
torch-style zip (`archive/data.pkl`, pickle protocol 2, and `archive/version`). Each must give,
through the CLI, exit code 2, exactly one line on stderr naming the file and the field, and no
output folder.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from tt_support import (
    MODEL_NAMES,
    assert_one_line_error,
    model_path,
    run_cli,
    write_model,
    write_pickle_bytes,
)

from compiler.costs import layer_costs, total_units
from compiler.errors import TradyError
from compiler.importers import tiny_training
from compiler.ir import DEAD_W_SCALE, Add, Conv

# From ../shared/models/README.md (and SPEC 6 for mcunet-5fps's 1,309,808).
EXPECTED = {
    "mcunet-5fps": {"convs": 42, "units": 1_309_808, "params": 623_216, "macs_m": 22.6},
    "mbv2-w0.35": {"convs": 51, "units": 1_200_352, "params": 350_688, "macs_m": 16.8},
    "proxyless-w0.3": {"convs": 60, "units": 1_123_632, "params": 416_816, "macs_m": 18.7},
}


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model(request):
    path = model_path(request.param)
    return request.param, path, tiny_training.load(path), tiny_training.load_dict(path)


def raw_convs(d: dict) -> list[tuple[str, dict]]:
    """The convs of the raw dict in forward order (classifier excluded), read without the importer."""
    out = [("first_conv", d["first_conv"])]
    for i, blk in enumerate(d["blocks"]):
        out += [(f"blocks[{i}].{part}", blk[part]) for part in ("pointwise1", "depthwise", "pointwise2")
                if blk.get(part) is not None]
    if d.get("feature_mix") is not None:
        out.append(("feature_mix", d["feature_mix"]))
    return out


def test_real_model_imports(model):
    name, _path, g, d = model
    exp = EXPECTED[name]
    assert len(g.convs) == exp["convs"]
    assert total_units(g) == exp["units"]
    n_res = sum(blk.get("residual") is not None for blk in d["blocks"])
    assert sum(isinstance(op, Add) for op in g.ops) == n_res > 0
    assert len(g.ops) == exp["convs"] + n_res + 1  # + the pool
    params = sum(c.weight.size for c in g.convs) + g.head.weight.size
    assert params == exp["params"]
    macs = sum(c.macs for c in layer_costs(g)) + g.head.weight.size  # README counts the classifier
    assert round(macs / 1e6, 1) == exp["macs_m"]
    assert g.tensors[g.input].shape == (128, 128, 3)
    assert g.tensors[g.input].scale == pytest.approx(2 / 255) and g.tensors[g.input].zero == 0
    assert g.head.classes == 1000
    # Every conv matches the raw dict: kind, weights unchanged, quantisation carried through.
    for conv, (where, spec) in zip(g.convs, raw_convs(d), strict=True):
        p = spec["params"]
        assert np.array_equal(conv.weight, p["weight"]), where
        assert np.array_equal(conv.bias, p["bias"]) and np.array_equal(conv.w_scales, p["w_scales"]), where
        assert conv.depthwise == (spec["groups"] > 1), where
        assert conv.stride == spec["stride"], where
        y = g.tensors[conv.output]
        assert (y.scale, y.zero) == (p["y_scale"], p["y_zero"]), where


def test_dead_channels(model):
    """Dead channels are exactly those with w_scale < 1e-6, counted from the raw dict."""
    name, _, g, d = model
    assert DEAD_W_SCALE == 1e-6
    raw = sum(int((spec["params"]["w_scales"] < 1e-6).sum()) for _, spec in raw_convs(d))
    assert raw > 0, f"{name} has dead channels (SPEC 3)"
    assert sum(int(c.dead.sum()) for c in g.convs) == raw
    for conv in g.convs:
        assert np.array_equal(conv.dead, conv.w_scales < 1e-6)
    # The next conv's dead input channels are the producer's dead output channels.
    by_out = {c.output: c for c in g.convs}
    for cost, conv in zip(layer_costs(g), g.convs, strict=True):
        prod = by_out.get(conv.input)
        want = tuple(np.flatnonzero(prod.dead).tolist()) if prod is not None else ()
        assert cost.dead_in_channels == want, conv.name


def test_resolution_option(model):
    _, path, _, _ = model
    g = tiny_training.load(path, resolution=96)
    assert g.tensors[g.input].shape == (96, 96, 3)
    assert g.tensors["pool"].shape[:2] == (1, 1)


# Malformed files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_dict():
    return tiny_training.load_dict(model_path("mcunet-5fps"))


def compile_bad(path: Path, tmp_path: Path, *needles: str) -> str:
    out = tmp_path / "out"
    rc, _, err = run_cli(["compile", str(path), "--budget", "1000", "--out", str(out)])
    line = assert_one_line_error(rc, err, path.name, *needles)
    assert not out.exists(), "a failed compile must not create the output folder"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary folder left behind"
    return line


def mutated(base: dict, tmp_path: Path, change, name: str = "bad.pkl") -> Path:
    d = copy.deepcopy(base)
    change(d)
    return write_model(d, tmp_path / name)


def test_the_unmutated_round_trip_compiles(base_dict, tmp_path):
    """The writer itself is sound: the same dict written back compiles."""
    path = write_model(copy.deepcopy(base_dict), tmp_path / "same.pkl")
    rc, _, err = run_cli(["compile", str(path), "--budget", "1000", "--out", str(tmp_path / "out")])
    assert rc == 0, err


def test_not_a_zip(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(b"this is not a zip archive\n")
    compile_bad(path, tmp_path, "zip")


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "nodata.pkl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/version", "3\n")
    compile_bad(path, tmp_path, "data.pkl")


class _RunsShellCommand:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_a_shell_command_is_refused(base_dict, tmp_path):
    marker = tmp_path / "PWNED"
    d = copy.deepcopy(base_dict)
    d["blocks"][3]["depthwise"]["act"] = _RunsShellCommand(marker)
    payload = pickle.dumps(d, protocol=2)
    assert b"system" in payload  # the payload really carries os.system
    path = write_pickle_bytes(payload, tmp_path / "evil.pkl")
    compile_bad(path, tmp_path, "system", "not allowed")
    assert not marker.exists(), "the pickle's command ran"
    # The same payload does run under plain pickle: the test would notice a harmless file otherwise.
    pickle.loads(payload)
    assert marker.exists()


class _StoragePickler(pickle.Pickler):
    """Stores one array as a persistent id, the way torch.save stores tensor storages."""

    def __init__(self, f, target):
        super().__init__(f, protocol=2)
        self.target = target

    def persistent_id(self, obj):
        if obj is self.target:
            return ("storage", "FloatStorage", "0", "cpu", int(obj.size))
        return None


def test_torch_persistent_storage_ids_are_refused(base_dict, tmp_path):
    d = copy.deepcopy(base_dict)
    target = d["blocks"][3]["depthwise"]["params"]["w_scales"]
    buf = io.BytesIO()
    _StoragePickler(buf, target).dump(d)
    path = write_pickle_bytes(buf.getvalue(), tmp_path / "storage.pkl")
    compile_bad(path, tmp_path, "persistent")


def test_real_torch_save_file_is_refused(base_dict, tmp_path):
    """A file torch.save wrote with a tensor in it (rebuild function + storage): refused, one line."""
    d = copy.deepcopy(base_dict)
    p = d["blocks"][3]["depthwise"]["params"]
    p["weight"] = torch.from_numpy(p["weight"])
    path = tmp_path / "torchsave.pkl"
    torch.save(d, path)
    line = compile_bad(path, tmp_path)
    assert "torch" in line and "not allowed" in line


def test_object_dtype_array_is_refused(base_dict, tmp_path):
    def change(d):
        d["blocks"][3]["depthwise"]["params"]["bias"] = np.array([1, "x", None], dtype=object)

    compile_bad(mutated(base_dict, tmp_path, change), tmp_path, "dtype")


def test_missing_key(base_dict, tmp_path):
    def change(d):
        del d["blocks"][3]["depthwise"]["params"]["bias"]

    compile_bad(mutated(base_dict, tmp_path, change), tmp_path, "blocks[3].depthwise.params.bias", "missing")


def test_wrong_dtype(base_dict, tmp_path):
    def change(d):
        p = d["blocks"][3]["depthwise"]["params"]
        p["weight"] = p["weight"].astype(np.float32)

    compile_bad(mutated(base_dict, tmp_path, change), tmp_path, "blocks[3].depthwise.params.weight", "int8",
                "float32")


def test_wrong_shape(base_dict, tmp_path):
    def change(d):
        p = d["blocks"][3]["pointwise1"]["params"]
        p["weight"] = p["weight"][:, :-1]  # one input channel short

    line = compile_bad(mutated(base_dict, tmp_path, change), tmp_path, "blocks[3].pointwise1.params.weight")
    assert "expected array" in line and "found array" in line


def test_x_scale_inconsistent_with_previous_y_scale(base_dict, tmp_path):
    def change(d):
        d["blocks"][3]["depthwise"]["params"]["x_scale"] *= 1.5

    line = compile_bad(mutated(base_dict, tmp_path, change), tmp_path, "blocks[3].depthwise.params.x_scale")
    want = base_dict["blocks"][3]["pointwise1"]["params"]["y_scale"]
    assert repr(want) in line, f"the message should give the producer's y_scale {want!r}: {line}"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scale(base_dict, tmp_path, value):
    def change(d):
        d["blocks"][3]["depthwise"]["params"]["y_scale"] = value

    compile_bad(mutated(base_dict, tmp_path, change), tmp_path, "blocks[3].depthwise.params.y_scale",
                "finite")


def test_non_finite_weight_scale(base_dict, tmp_path):
    def change(d):
        d["blocks"][3]["depthwise"]["params"]["w_scales"][5] = np.inf

    compile_bad(mutated(base_dict, tmp_path, change), tmp_path, "blocks[3].depthwise.params.w_scales",
                "finite")


# Further malformed fields: each names the field itself, not a later layer that trips over it.
@pytest.mark.parametrize(("where", "key", "value", "needles"), [
    (("blocks", 3, "depthwise"), "stride", 0, ("blocks[3].depthwise.stride",)),
    (("blocks", 3, "depthwise"), "stride", -1, ("blocks[3].depthwise.stride",)),
    (("blocks", 3, "depthwise"), "kernel_size", 4, ("blocks[3].depthwise.kernel_size",)),
    (("blocks", 3, "depthwise", "params"), "y_scale", -0.1, ("depthwise.params.y_scale", "positive")),
    (("blocks", 3, "depthwise", "params"), "y_scale", 0.0, ("blocks[3].depthwise.params.y_scale",)),
    (("blocks", 3, "depthwise", "params"), "y_zero", 300, ("blocks[3].depthwise.params.y_zero",)),
    (("blocks", 3, "depthwise", "params"), "y_zero", "0", ("blocks[3].depthwise.params.y_zero", "int")),
    (("blocks", 3, "depthwise"), "groups", 7, ("blocks[3].depthwise.groups",)),
    (("first_conv", "params"), "x_scale", -1.0, ("first_conv.params.x_scale",)),
    (("blocks", 2, "residual", "params"), "x_scale", 1.0, ("blocks[2].residual.params.x_scale",)),
    (("blocks", 2, "residual", "params"), "y_zero", -129, ("blocks[2].residual.params.y_zero",)),
    (("classifier", "params"), "w_scales", None, ("classifier.params.w_scales",)),
    ((), "blocks", [], ("blocks", "non-empty list")),
    ((), "classifier", None, ("classifier",)),
], ids=["stride_0", "stride_negative", "kernel_even", "y_scale_negative", "y_scale_zero", "y_zero_range",
        "y_zero_str", "groups", "input_scale_negative", "residual_x_scale", "residual_y_zero",
        "classifier_w_scales", "no_blocks", "no_classifier"])
def test_malformed_field(base_dict, tmp_path, where, key, value, needles):
    def change(d):
        node = d
        for k in where:
            node = node[k]
        if value is None:
            del node[key]
        else:
            node[key] = value

    compile_bad(mutated(base_dict, tmp_path, change), tmp_path, *needles)


def test_top_level_not_a_dict(tmp_path):
    compile_bad(write_model([1, 2, 3], tmp_path / "list.pkl"), tmp_path, "dict")


def test_truncated_pickle(base_dict, tmp_path):
    payload = pickle.dumps(copy.deepcopy(base_dict), protocol=2)
    compile_bad(write_pickle_bytes(payload[: len(payload) // 2], tmp_path / "cut.pkl"), tmp_path)


def test_load_dict_accepts_only_numeric_arrays_and_plain_values(base_dict, tmp_path):
    """The restricted unpickler round-trips every kind of value the real files hold."""
    d = tiny_training.load_dict(write_model(copy.deepcopy(base_dict), tmp_path / "rt.pkl"))
    assert d.keys() == base_dict.keys()
    blk = d["blocks"][3]["depthwise"]
    assert blk["kernel_size"] == base_dict["blocks"][3]["depthwise"]["kernel_size"]
    assert isinstance(blk["params"]["weight"], np.ndarray) and blk["params"]["weight"].dtype == np.int8
    assert isinstance(g := d["first_conv"]["params"]["x_scale"], float) and g == pytest.approx(2 / 255)


def test_every_conv_import_error_is_a_tradyerror(base_dict, tmp_path):
    """Programmatic use: load() raises the one-line TradyError, never a bare Python exception."""
    def change(d):
        d["blocks"][3]["depthwise"]["stride"] = 0

    with pytest.raises(TradyError, match=r"blocks\[3\]\.depthwise\.stride"):
        tiny_training.load(mutated(base_dict, tmp_path, change))
    assert isinstance(tiny_training.load(model_path("mcunet-5fps")).convs[0], Conv)
