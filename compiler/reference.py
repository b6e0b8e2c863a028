"""Reference executor: the living definition of the arithmetic contract (SPEC 4).

`ir.Graph` + int8 images -> every tensor of the forward pass (int8, NHWC) and the fp32 logits.
Integer ops run as exact integer arithmetic on torch tensors: convolutions sum in floating point
where that is exact: float32 when every partial sum of a layer is bounded by 2^24 (sum of |w| over
an output channel's taps times the largest |x - x_zero|), float64 otherwise (|w| <= 127,
|x - x_zero| <= 255, at most 2^20 taps, so every partial sum is below 2^53); then the int32 accumulator, requantisation and clamping run on int64 tensors with the
same wrap-around and rounding as the C kernels. The fp32 head accumulates in the same order as
the C loop (bias first, then features in order, one rounding per multiply and per add), so its
logits are bit-identical to C compiled with -ffp-contract=off.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from compiler import quant
from compiler.ir import Add, AvgPool, Conv, Graph, Head


def conv_s8(x: torch.Tensor, op: Conv, q: quant.ConvQuant) -> torch.Tensor:
    """int8-valued int64 NCHW -> int8-valued int64 NCHW (SPEC 4, conv/depthwise/pointwise)."""
    bound = int(np.abs(op.weight.astype(np.int64)).sum(axis=(1, 2, 3)).max()) * (128 + abs(q.input_offset))
    dtype = torch.float32 if bound < (1 << 24) else torch.float64
    xf = (x + q.input_offset).to(dtype)
    w = torch.from_numpy(op.weight).to(dtype)
    groups = op.out_channels if op.depthwise else 1
    acc = F.conv2d(xf, w, stride=op.stride, padding=op.padding, groups=groups).to(torch.int64)
    # int32 accumulator: the sum is bounded (see above); adding the bias wraps as in TFLite.
    acc = quant.wrap32_t(acc + torch.from_numpy(op.bias.astype(np.int64)).view(1, -1, 1, 1))
    m = torch.from_numpy(q.multiplier.astype(np.int64)).view(1, -1, 1, 1)
    s = torch.from_numpy(q.shift.astype(np.int64)).view(1, -1, 1, 1)
    return (quant.mbqm_t(acc, m, s) + q.output_offset).clamp(-128, 127)


def add_s8(a: torch.Tensor, b: torch.Tensor, q: quant.AddQuant) -> torch.Tensor:
    """TFLite int8 ADD (reference_integer_ops::Add)."""
    one = torch.ones((), dtype=torch.int64)
    sa = quant.mbqm_t((a + q.input1_offset) << q.left_shift, one * q.input1_multiplier, one * q.input1_shift)
    sb = quant.mbqm_t((b + q.input2_offset) << q.left_shift, one * q.input2_multiplier, one * q.input2_shift)
    out = quant.mbqm_t(sa + sb, one * q.output_multiplier, one * q.output_shift) + q.output_offset
    return out.clamp(-128, 127)


def avgpool_s8(x: torch.Tensor) -> torch.Tensor:
    """Global average pool: sum over H*W, divide rounding half away from zero (TFLite AVERAGE_POOL_2D)."""
    n = x.shape[2] * x.shape[3]
    acc = x.sum(dim=(2, 3), keepdim=True)
    rounded = torch.where(acc > 0, torch.div(acc + n // 2, n, rounding_mode="trunc"),
                          torch.div(acc - n // 2, n, rounding_mode="trunc"))
    return rounded.clamp(-128, 127)


def head_f32(pooled: np.ndarray, head: Head, x_scale: float, x_zero: int) -> np.ndarray:
    """fp32 logits [N, classes] from int8 pooled features [N, F], in the C loop's order."""
    f = (pooled.astype(np.float32) - np.float32(x_zero)) * np.float32(quant.f32(x_scale))
    acc = np.broadcast_to(head.bias, (pooled.shape[0], head.classes)).astype(np.float32)
    for i in range(head.features):
        acc = acc + head.weight[:, i][None, :] * f[:, i][:, None]
    return acc


def forward(graph: Graph, images: np.ndarray, prepared: dict | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run the int8 graph on images [N, H, W, C] int8; return ({tensor: int8 NHWC}, logits)."""
    want = graph.tensors[graph.input].shape
    if images.dtype != np.int8 or images.ndim != 4 or images.shape[1:] != want:
        raise ValueError(f"images {images.shape} {images.dtype}: expected int8 [N, {want[0]}, {want[1]}, {want[2]}]")
    q = prepared if prepared is not None else quant.prepare(graph)
    vals: dict[str, torch.Tensor] = {graph.input: torch.from_numpy(images.astype(np.int64)).permute(0, 3, 1, 2)}
    with torch.no_grad():
        for op in graph.ops:
            if isinstance(op, Conv):
                vals[op.output] = conv_s8(vals[op.input], op, q[op.name])
            elif isinstance(op, Add):
                vals[op.output] = add_s8(vals[op.inputs[0]], vals[op.inputs[1]], q[op.name])
            elif isinstance(op, AvgPool):
                vals[op.output] = avgpool_s8(vals[op.input])
    out = {k: v.permute(0, 2, 3, 1).numpy().astype(np.int8) for k, v in vals.items()}
    feat = graph.tensors[graph.head.input]
    logits = head_f32(out[graph.head.input].reshape(images.shape[0], -1), graph.head, feat.scale, feat.zero)
    return out, logits


def features(graph: Graph, images: np.ndarray, batch: int = 64, progress=None) -> np.ndarray:
    """Pooled int8 features [N, F] only (keeps memory low on large sets)."""
    q = quant.prepare(graph)
    chunks = []
    for i in range(0, len(images), batch):
        vals, _ = forward(graph, images[i:i + batch], q)
        chunks.append(vals[graph.head.input].reshape(len(images[i:i + batch]), -1))
        if progress is not None:
            progress(len(images[i:i + batch]))
    return np.concatenate(chunks)
