"""TFLite Micro cross-check (compiler/tflm.py): exported .tflite run by the TFLM interpreter equals the
reference executor bit for bit (SPEC 4), on a hand-built graph and on the three shared models."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from compiler import quant, reference, tflm
from compiler.errors import TradyError
from compiler.ir import DEAD_W_SCALE, Add, AvgPool, Conv, Graph, Head, Tensor

pytest.importorskip("tflite_micro", reason="the tflite-micro package is not installed")

MODELS = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


@dataclass(frozen=True)
class ConvCase:
    name: str
    kind: str  # conv | depthwise | pointwise
    kernel: int
    stride: int
    out_channels: int
    y_zero: int


def _conv(rng: np.random.Generator, case: ConvCase, x: Tensor, tensors: dict[str, Tensor]) -> Conv:
    """Seeded int8 weights and int32 bias; the output scale puts typical accumulators near +-40 LSB."""
    cin = x.shape[2]
    cout = cin if case.kind == "depthwise" else case.out_channels
    w = rng.integers(-127, 128, (cout, 1 if case.kind == "depthwise" else cin, case.kernel, case.kernel),
                     dtype=np.int8)
    ws = rng.uniform(0.002, 0.02, cout).astype(np.float32)
    bias = rng.integers(-4000, 4000, cout).astype(np.int32)
    ws[1] = np.float32(3.937008e-09)  # a dead channel as in the shared models (SPEC 3)
    assert ws[1] < DEAD_W_SCALE
    bias[1] = np.iinfo(np.int32).min  # bias + a negative sum wraps in int32, in TFLM and in ours
    taps = w.shape[1] * case.kernel * case.kernel
    y_scale = x.scale * float(np.median(ws)) * math.sqrt(taps) * 73 * 60 / 40
    p = (case.kernel - 1) // 2
    ho = (x.shape[0] + 2 * p - case.kernel) // case.stride + 1
    wo = (x.shape[1] + 2 * p - case.kernel) // case.stride + 1
    tensors[case.name] = Tensor(case.name, (ho, wo, cout), y_scale, case.y_zero)
    return Conv(case.name, case.kind, x.name, case.name, w, bias, ws, case.stride)


def tiny_graph(seed: int = 7) -> Graph:
    """conv 3x3/2 -> depthwise 5x5/1 -> pointwise -> add (with the conv output) -> depthwise 7x7/2 ->
    pointwise -> global pool, on an odd 13x11 input with an asymmetric input zero point."""
    rng = np.random.default_rng(seed)
    tensors = {"input": Tensor("input", (13, 11, 3), 0.0213, -7)}
    ops: list = []
    cases = [ConvCase("c0", "conv", 3, 2, 8, -11), ConvCase("dw1", "depthwise", 5, 1, 8, 9),
             ConvCase("pw1", "pointwise", 1, 1, 8, 3)]
    x = tensors["input"]
    for case in cases:
        ops.append(_conv(rng, case, x, tensors))
        x = tensors[case.name]
    tensors["add"] = Tensor("add", x.shape, 0.7 * max(tensors["c0"].scale, x.scale), -5)
    ops.append(Add("add", ("c0", "pw1"), "add"))
    x = tensors["add"]
    for case in (ConvCase("dw2", "depthwise", 7, 2, 8, 2), ConvCase("pw2", "pointwise", 1, 1, 6, -20)):
        ops.append(_conv(rng, case, x, tensors))
        x = tensors[case.name]
    tensors["pool"] = Tensor("pool", (1, 1, x.shape[2]), x.scale, x.zero)
    ops.append(AvgPool("pool", x.name, "pool"))
    head = Head("pool", rng.standard_normal((2, x.shape[2])).astype(np.float32), np.zeros(2, np.float32))
    return Graph("tiny", "synthetic", "0" * 64, "input", tensors, tuple(ops), head).verify()


def _images(graph: Graph, n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n, *graph.tensors[graph.input].shape), dtype=np.int8)


def _project(graph: Graph) -> SimpleNamespace:
    return SimpleNamespace(graph=graph, quant=quant.prepare(graph))


def test_tiny_graph_bit_exact() -> None:
    g = tiny_graph()
    images = _images(g, 5)
    res = tflm.verify(_project(g), images, batch=2)  # batch 2: the image index crosses batches
    assert res.ok, res.message
    assert (res.ops, res.images) == (len(g.ops), 5)
    assert res.values == 5 * sum(g.tensors[op.output].size for op in g.ops)
    assert "bit-exact" in res.message
    # The case is not degenerate: outputs are spread, not pinned to the int8 rails.
    ref, _ = reference.forward(g, images)
    for op in g.ops:
        v = ref[op.output]
        assert np.mean((v == -128) | (v == 127)) < 0.5, op.name
        assert len(np.unique(v)) > 4, op.name


def test_runner_gives_every_op_output() -> None:
    g = tiny_graph(seed=11)
    image = _images(g, 1, seed=5)
    outs = tflm.Runner(g).run(image[0])
    ref, _ = reference.forward(g, image)
    assert [o.shape for o in outs] == [g.tensors[op.output].shape for op in g.ops]
    for op, o in zip(g.ops, outs, strict=True):
        np.testing.assert_array_equal(o, ref[op.output][0], err_msg=op.name)


def test_first_difference_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference that differs in one value: the message names op, image, (h, w, c) and both values."""
    g = tiny_graph()
    images = _images(g, 3)
    forward = reference.forward

    def perturbed(graph, imgs, prepared=None):
        vals, logits = forward(graph, imgs, prepared)
        if len(imgs) == 1:  # the second batch (batch=2, three images): image 2
            vals["dw1"] = vals["dw1"].copy()
            vals["dw1"][0, 4, 3, 5] ^= 1
        return vals, logits

    monkeypatch.setattr(tflm.reference, "forward", perturbed)
    res = tflm.verify(_project(g), images, batch=2)
    assert not res.ok
    want = int(forward(g, images[2:3])[0]["dw1"][0, 4, 3, 5])
    assert res.message == f"op 1 (dw1) image 2 at (h=4, w=3, c=5): TFLM {want} != reference {want ^ 1}"


def test_export_layout_and_file(tmp_path) -> None:
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as tfl

    g = tiny_graph()
    fb = tflm.export(g)
    assert fb[4:8] == b"TFL3"
    sg = me.read(fb).subgraphs[0]
    ops = [o.opcode for o in sg.operators]
    b = tfl.BuiltinOperator
    assert ops == [b.PAD, b.CONV_2D, b.PAD, b.DEPTHWISE_CONV_2D, b.CONV_2D, b.ADD, b.PAD,
                   b.DEPTHWISE_CONV_2D, b.CONV_2D, b.AVERAGE_POOL_2D]
    t = {x.name: x for x in sg.tensors}
    c0 = g.ops[0]
    np.testing.assert_array_equal(t["c0/weight"].array, c0.weight.transpose(0, 2, 3, 1))
    assert t["c0/weight"].quantization.axis in (None, 0)
    assert t["dw1/weight"].shape == (1, 5, 5, 8) and t["dw1/weight"].quantization.axis == 3
    assert t["c0/pad"].shape == (1, 15, 13, 3) and t["c0/pad"].quantization.zero_points == [-7]
    assert sg.outputs[0].name == "pool" and sg.inputs[0].name == "input"
    p = tflm.export_file(SimpleNamespace(graph=g, quant=quant.prepare(g)), tmp_path / "sub" / "tiny.tflite")
    assert p.read_bytes() == fb
    assert [x.name for x in tmp_path.joinpath("sub").iterdir()] == ["tiny.tflite"]


def test_export_checks_multipliers() -> None:
    g = tiny_graph()
    prepared = quant.prepare(g)
    q = prepared["pw1"]
    mult = q.multiplier.copy()
    mult[3] += 1
    prepared["pw1"] = quant.ConvQuant(mult, q.shift, q.input_offset, q.output_offset)
    with pytest.raises(TradyError, match=r"op 2 \(pw1\) channel 3"):
        tflm.export(g, prepared)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_shared_models_bit_exact(model: str) -> None:
    from compiler import data, pipeline
    from compiler.cli import default_data, shared_dir

    path = shared_dir() / "models" / f"{model}.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    if not default_data().is_file():
        pytest.skip(f"{default_data()} not found")
    project = pipeline.build(path, pipeline.Options(budget=15936))
    resolution = project.graph.tensors[project.graph.input].shape[0]
    images = data.load(default_data(), resolution, limit_train=0, limit_test=2).test.x[:2]
    res = tflm.verify(project, images)
    assert res.ok, res.message
    assert res.ops == len(project.graph.ops) and res.images == 2
