"""Cross-check against TensorFlow Lite Micro: `ir.Graph` -> `.tflite` flatbuffer -> TFLM interpreter.

SPEC 4 says our arithmetic *is* TFLite's, so the int8 forward of an exported model run by the TFLite
Micro interpreter (PyPI `tflite-micro`, reference kernels) must equal `reference.forward` bit for
bit. This module is that check, an independent witness beside the host C comparison in `verify`.

Export (`export`): the int8 network up to and including the global average pool; the fp32 head
is not part of it.
- Conv -> CONV_2D (weights OHWI), pointwise -> CONV_2D 1x1, depthwise -> DEPTHWISE_CONV_2D
  (weights 1HWC, depth multiplier 1). Weights are int8 with per-channel float32 scales
  (quantized dimension 0 for CONV_2D, 3 for DEPTHWISE_CONV_2D) and zero points 0; the bias is
  int32 with scale x_scale * w_scale[c] (TFLM does not read it for int8, TFLite tools expect it).
- Padding: tiny-training pads (K-1)/2 on every side. TFLite's SAME pads bottom/right first when the
  total is odd (stride 2 on an even input), so every conv with K > 1 gets an explicit PAD (pad
  value = the PAD output's zero point = the conv input's, since PAD's tensors carry the input's
  quantisation) followed by VALID. One rule for all strides; SAME would be identical only for
  stride 1, and relying on that would make the check depend on TFLite's SAME arithmetic.
  Padded taps then contribute w * (x_zero - x_zero) = 0, exactly SPEC 4's "non-padded taps".
- No fused activation (NONE): ReLU6 is folded into the int8 output range, so the clamp is
  [-128, 127], as in our kernels.
- Residual add -> ADD (the two inputs' and the output's quantisation); global pool ->
  AVERAGE_POOL_2D, filter H x W, VALID, stride 1, output quantisation = input's.
- Tensor scales are float32 in the flatbuffer. `quant` rounds every scale to float32 before it
  computes multipliers in double, so TFLM's Prepare derives the very multipliers in `quant`;
  `export` re-reads the file it built and checks that before anyone runs it.

Flatbuffer tensors are named after IR tensors (PAD outputs: `<conv>/pad`), and `verify` maps IR
tensors to interpreter tensor indices through those names in the file itself, so it never asks
the interpreter for an index that does not exist (an out-of-range index kills the process).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from compiler import quant, reference
from compiler.errors import TradyError
from compiler.ir import Add, AvgPool, Conv, Graph, Tensor
from compiler.verify import ForwardResult, op_difference

PAD_SUFFIX = "/pad"


def _tfl():
    """The tflite-micro modules (imported on use: only this cross-check needs the package)."""
    try:
        from tflite_micro import runtime
        from tflite_micro.tensorflow.lite.micro.compression import model_editor
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated
    except ImportError as e:
        raise TradyError(f"the tflite-micro package is not importable ({e}); pip install tflite-micro") from None
    return runtime, model_editor, schema_py_generated


def _act_quant(me, t: Tensor):
    """Per-tensor activation quantisation, scale as float32 (what the flatbuffer stores)."""
    return me.Quantization(scales=quant.f32(t.scale), zero_points=int(t.zero))


def export(graph: Graph, prepared: dict | None = None) -> bytes:
    """Build the .tflite flatbuffer of the int8 network (input -> global pool), batch 1, NHWC.

    `prepared` (from `quant.prepare`, computed if None) is what our kernels use; the multipliers
    TFLM will derive from the float32 scales written to the file are checked against it.
    """
    _, me, tfl = _tfl()
    prepared = prepared if prepared is not None else quant.prepare(graph)
    model = me.Model(description=f"trady export of {graph.name} ({graph.source} sha256 {graph.source_sha256[:12]})")
    sg = model.add_subgraph(name=graph.name)
    acts: dict[str, object] = {}

    def act(name: str) -> object:
        if name not in acts:
            t = graph.tensors[name]
            acts[name] = sg.add_tensor(shape=(1, *t.shape), dtype=tfl.TensorType.INT8,
                                       quantization=_act_quant(me, t), name=name)
        return acts[name]

    paddings: dict[int, object] = {}

    def operator(opcode: int, options_type: int, options: object, inputs: list, outputs: list) -> None:
        fb = tfl.OperatorT()
        fb.builtinOptionsType = options_type
        fb.builtinOptions = options
        sg.add_operator(opcode=opcode, inputs=inputs, outputs=outputs, _fb=fb)

    for op in graph.ops:
        if isinstance(op, Conv):
            x = act(op.input)
            p = op.padding
            if p > 0:
                xt = graph.tensors[op.input]
                if p not in paddings:
                    pads = np.array([[0, 0], [p, p], [p, p], [0, 0]], np.int32)
                    paddings[p] = sg.add_tensor(shape=(4, 2), dtype=tfl.TensorType.INT32, data=pads,
                                                name=f"paddings_{p}")
                padded = sg.add_tensor(shape=(1, xt.shape[0] + 2 * p, xt.shape[1] + 2 * p, xt.shape[2]),
                                       dtype=tfl.TensorType.INT8, quantization=_act_quant(me, xt),
                                       name=op.name + PAD_SUFFIX)
                operator(tfl.BuiltinOperator.PAD, tfl.BuiltinOptions.PadOptions, tfl.PadOptionsT(),
                         [x, paddings[p]], [padded])
                x = padded
            _conv(me, tfl, sg, operator, op, graph.tensors[op.input], x, act(op.output))
        elif isinstance(op, Add):
            o = tfl.AddOptionsT()
            o.fusedActivationFunction = tfl.ActivationFunctionType.NONE
            operator(tfl.BuiltinOperator.ADD, tfl.BuiltinOptions.AddOptions, o,
                     [act(op.inputs[0]), act(op.inputs[1])], [act(op.output)])
        elif isinstance(op, AvgPool):
            h, w, _ = graph.tensors[op.input].shape
            o = tfl.Pool2DOptionsT()
            o.padding = tfl.Padding.VALID
            o.strideH = o.strideW = 1
            o.filterHeight, o.filterWidth = h, w
            o.fusedActivationFunction = tfl.ActivationFunctionType.NONE
            operator(tfl.BuiltinOperator.AVERAGE_POOL_2D, tfl.BuiltinOptions.Pool2DOptions, o,
                     [act(op.input)], [act(op.output)])
        else:
            raise TradyError(f"op {op.name}: {type(op).__name__} has no TFLite export")
    sg.inputs = [act(graph.input)]
    sg.outputs = [act(graph.head.input)]
    fb = bytes(model.build())
    check_multipliers(fb, graph, prepared)
    return fb


def _conv(me, tfl, sg, operator, op: Conv, xt: Tensor, x: object, y: object) -> None:
    """CONV_2D (OHWI) or DEPTHWISE_CONV_2D (1HWC), VALID (any padding is an explicit PAD before it)."""
    xs = quant.f32(xt.scale)
    ws = [float(s) for s in op.w_scales.astype(np.float32)]
    if op.depthwise:
        wdata, axis = op.weight.transpose(1, 2, 3, 0), 3  # (C,1,K,K) -> (1,K,K,C)
        opcode, otype, o = (tfl.BuiltinOperator.DEPTHWISE_CONV_2D, tfl.BuiltinOptions.DepthwiseConv2DOptions,
                            tfl.DepthwiseConv2DOptionsT())
        o.depthMultiplier = 1
    else:
        wdata, axis = op.weight.transpose(0, 2, 3, 1), 0  # OIHW -> OHWI
        opcode, otype, o = tfl.BuiltinOperator.CONV_2D, tfl.BuiltinOptions.Conv2DOptions, tfl.Conv2DOptionsT()
    wdata = np.ascontiguousarray(wdata, dtype=np.int8)
    n = op.out_channels
    w = sg.add_tensor(shape=wdata.shape, dtype=tfl.TensorType.INT8, data=wdata, name=f"{op.name}/weight",
                      quantization=me.Quantization(scales=ws, zero_points=[0] * n, axis=axis))
    b = sg.add_tensor(shape=(n,), dtype=tfl.TensorType.INT32, data=np.ascontiguousarray(op.bias, np.int32),
                      name=f"{op.name}/bias",
                      quantization=me.Quantization(scales=[xs * s for s in ws], zero_points=[0] * n, axis=0))
    o.padding = tfl.Padding.VALID
    o.strideH = o.strideW = op.stride
    o.dilationHFactor = o.dilationWFactor = 1
    o.fusedActivationFunction = tfl.ActivationFunctionType.NONE
    operator(opcode, otype, o, [x, w, b], [y])


def check_multipliers(fb: bytes, graph: Graph, prepared: dict) -> None:
    """Re-read `fb` and derive every conv/ADD multiplier as TFLM's Prepare does, from the float32
    scales in the file; they must be `prepared`'s, else a later mismatch would be a scale issue."""
    _, me, _ = _tfl()
    sg = me.read(fb).subgraphs[0]
    byname = {t.name: t for t in sg.tensors}

    def scale(name: str) -> float:
        return float(np.float32(byname[name].quantization.scales[0]))

    for i, op in enumerate(graph.ops):
        if isinstance(op, Conv):
            xs, ys = scale(op.input), scale(op.output)
            ws = byname[f"{op.name}/weight"].quantization.scales
            got = [quant.quantize_multiplier(xs * float(np.float32(s)) / ys) for s in ws]
            want = prepared[op.name]
            ours = list(zip(want.multiplier.tolist(), want.shift.tolist(), strict=True))
            for c, (g, w) in enumerate(zip(got, ours, strict=True)):
                if g != w:
                    raise TradyError(f"op {i} ({op.name}) channel {c}: the file's float32 scales give "
                                     f"(multiplier, shift) {g}, quant.prepare has {w}")
        elif isinstance(op, Add):
            a, b, y = (Tensor(n, (1, 1, 1), scale(n), 0) for n in (*op.inputs, op.output))
            got = quant.add_quant(a, b, y)
            want = prepared[op.name]
            for field in ("input1_multiplier", "input1_shift", "input2_multiplier", "input2_shift",
                          "output_multiplier", "output_shift"):
                if getattr(got, field) != getattr(want, field):
                    raise TradyError(f"op {i} ({op.name}): the file's float32 scales give {field} "
                                     f"{getattr(got, field)}, quant.prepare has {getattr(want, field)}")


def export_file(project, path: str | Path) -> Path:
    """Write the project's .tflite to `path` atomically (temporary sibling, then rename)."""
    path = Path(path)
    fb = export(project.graph, project.quant)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(fb)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def tensor_indices(fb: bytes, names: list[str]) -> list[int]:
    """Interpreter tensor index of each named tensor, read from the flatbuffer itself."""
    _, me, _ = _tfl()
    sg = me.read(fb).subgraphs[0]
    index = {t.name: i for i, t in enumerate(sg.tensors)}
    missing = [n for n in names if n not in index]
    if missing:
        raise TradyError(f"exported model lacks tensors {missing[:3]} ({len(sg.tensors)} tensors in the file)")
    return [index[n] for n in names]


def arena_bytes(fb: bytes, graph: Graph) -> int:
    """TFLM arena for kPreserveAllTensors (no buffer sharing): every activation incl. PAD outputs
    kept at once, twice over for alignment and per-channel multiplier tables, plus 1 MiB."""
    acts = sum(t.size for t in graph.tensors.values())
    pads = sum((graph.tensors[op.input].shape[0] + 2 * op.padding) * (graph.tensors[op.input].shape[1]
               + 2 * op.padding) * op.in_channels for op in graph.convs if op.padding > 0)
    return 2 * (acts + pads) + len(fb) + (1 << 20)


class Runner:
    """A TFLM interpreter over an exported graph, reading every op's output after each invoke."""

    def __init__(self, graph: Graph, prepared: dict | None = None):
        runtime, _, _ = _tfl()
        self.graph = graph
        self.fb = export(graph, prepared)
        self.outputs = [op.output for op in graph.ops]
        self.index = tensor_indices(self.fb, self.outputs)
        self.interpreter = runtime.Interpreter.from_bytes(
            self.fb, arena_size=arena_bytes(self.fb, graph),
            intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)  # sic: the package's spelling

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        """One int8 HWC image -> each op's int8 output, HWC, in op order."""
        self.interpreter.set_input(image[None], 0)
        self.interpreter.invoke()
        t = self.graph.tensors
        outs = []
        for name, i in zip(self.outputs, self.index, strict=True):
            got = self.interpreter.GetTensor(i, 0)  # {"dtype", "shape", "tensor_data"}
            data = np.array(got["tensor_data"], copy=True)  # the arena is reused by the next invoke
            if data.dtype != np.int8 or tuple(int(d) for d in got["shape"]) != (1, *t[name].shape):
                raise TradyError(f"TFLM tensor {i} ({name}): {data.dtype} {tuple(got['shape'])}, "
                                 f"expected int8 {(1, *t[name].shape)}")
            outs.append(data.reshape(t[name].shape))
        return outs


def verify(project, images: np.ndarray, batch: int = 32) -> ForwardResult:
    """Every op output of TFLM vs `reference.forward`, bit for bit; the first difference in op order."""
    g = project.graph
    want = g.tensors[g.input].shape
    if images.dtype != np.int8 or images.ndim != 4 or images.shape[1:] != want:
        raise TradyError(f"images {images.shape} {images.dtype}: expected int8 [N, {want[0]}, {want[1]}, {want[2]}]")
    runner = Runner(g, project.quant)
    values = 0
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        ref, _ = reference.forward(g, chunk, project.quant)
        got = [np.stack(per_op) for per_op in zip(*(runner.run(img) for img in chunk), strict=True)]
        values += sum(ref[op.output].size for op in g.ops)
        diff = op_difference(g, ref, got, start, "TFLM")
        if diff is not None:
            return ForwardResult(False, len(g.ops), len(images), values, diff)
    pads = sum(1 for op in g.convs if op.padding > 0)
    return ForwardResult(True, len(g.ops), len(images), values,
                         f"{len(g.ops)} ops x {len(images)} images bit-exact ({values:,} int8 values; "
                         f".tflite of {len(runner.fb):,} bytes, {len(g.ops) + pads} TFLM operators incl. "
                         f"{pads} PAD)")
