"""Stage 2, the IR: importers produce a `Graph`; every later stage reads it and never mutates it.

Activations are int8 tensors laid out HWC (batch is not part of the IR). Every op names its
input and output tensors; the op list is in execution order. `Graph.verify()` checks shapes,
names, dtypes and quantisation consistency and raises `IRError` naming the op, index and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.errors import TradyError

DEAD_W_SCALE = 1e-6  # SPEC 3: a channel whose weight scale is below this is dead


class IRError(TradyError):
    """The graph is inconsistent."""


@dataclass(frozen=True, eq=False)
class Tensor:
    """An int8 activation tensor, HWC, per-tensor affine quantisation (real = scale * (q - zero))."""

    name: str
    shape: tuple[int, int, int]  # (H, W, C)
    scale: float
    zero: int

    @property
    def size(self) -> int:
        h, w, c = self.shape
        return h * w * c


@dataclass(frozen=True, eq=False)
class Conv:
    """Dense, pointwise or depthwise convolution with the output range folded into int8.

    weight is int8 OIHW (depthwise: C,1,K,K), symmetric per output channel (w_scales);
    bias is int32; padding is (K-1)/2 on every side.
    """

    name: str
    kind: str  # "conv" | "pointwise" | "depthwise"
    input: str
    output: str
    weight: np.ndarray
    bias: np.ndarray
    w_scales: np.ndarray
    stride: int

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[2])

    @property
    def padding(self) -> int:
        return (self.kernel - 1) // 2

    @property
    def depthwise(self) -> bool:
        return self.kind == "depthwise"

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return self.out_channels if self.depthwise else int(self.weight.shape[1])

    @property
    def dead(self) -> np.ndarray:
        """Boolean mask over output channels: dead channels (SPEC 3)."""
        return self.w_scales < DEAD_W_SCALE


@dataclass(frozen=True, eq=False)
class Add:
    """TFLite int8 residual ADD of two tensors of the same shape."""

    name: str
    inputs: tuple[str, str]
    output: str


@dataclass(frozen=True, eq=False)
class AvgPool:
    """Global average pool; output (1, 1, C) keeps the input's quantisation."""

    name: str
    input: str
    output: str


Op = Conv | Add | AvgPool


@dataclass(frozen=True, eq=False)
class Head:
    """fp32 classifier on the dequantised pooled features: logits = weight @ f + bias."""

    input: str
    weight: np.ndarray  # float32 [classes, features]
    bias: np.ndarray  # float32 [classes]

    @property
    def classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def features(self) -> int:
        return int(self.weight.shape[1])


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    source: str  # file name of the imported model
    source_sha256: str
    input: str
    tensors: dict[str, Tensor]
    ops: tuple[Op, ...]
    head: Head
    meta: dict = field(default_factory=dict)

    @property
    def convs(self) -> list[Conv]:
        return [op for op in self.ops if isinstance(op, Conv)]

    def producer_indices(self) -> dict[str, int]:
        """Tensor name -> index of the op that writes it (-1 for the graph input)."""
        return {self.input: -1} | {op.output: i for i, op in enumerate(self.ops)}

    def producer(self, tensor: str) -> Op | None:
        for op in self.ops:
            if op.output == tensor:
                return op
        return None

    def verify(self) -> Graph:
        """Check the graph; raise IRError naming op, index and shapes; return self."""
        t = self.tensors
        if self.input not in t:
            raise IRError(f"graph {self.name}: input tensor {self.input!r} is not declared")
        defined = {self.input}
        for i, op in enumerate(self.ops):
            where = f"op {i} ({op.name})"
            ins = op.inputs if isinstance(op, Add) else (op.input,)
            for name in ins:
                if name not in defined:
                    raise IRError(f"{where}: input {name!r} is not produced by an earlier op")
            if op.output in defined:
                raise IRError(f"{where}: output {op.output!r} is written twice")
            if op.output not in t:
                raise IRError(f"{where}: output {op.output!r} is not declared")
            defined.add(op.output)
            out = t[op.output]
            if isinstance(op, Conv):
                _verify_conv(where, op, t[op.input], out)
            elif isinstance(op, Add):
                a, b = (t[n] for n in op.inputs)
                if not a.shape == b.shape == out.shape:
                    raise IRError(f"{where}: add shapes differ: {a.shape} + {b.shape} -> {out.shape}")
            elif isinstance(op, AvgPool):
                x = t[op.input]
                if out.shape != (1, 1, x.shape[2]) or (out.scale, out.zero) != (x.scale, x.zero):
                    raise IRError(f"{where}: pool {x.shape} -> {out.shape} must give (1, 1, C), same quantisation")
            else:
                raise IRError(f"{where}: unknown op type {type(op).__name__}")
        for name, ten in t.items():
            if not -128 <= ten.zero <= 127 or not ten.scale > 0:
                raise IRError(f"tensor {name}: zero point {ten.zero} / scale {ten.scale} out of range")
            if name not in defined:
                raise IRError(f"tensor {name}: declared but never produced")
        h = self.head
        feat = t.get(h.input)
        if feat is None or feat.shape != (1, 1, h.features):
            got = None if feat is None else feat.shape
            raise IRError(f"head: input {h.input!r} has shape {got}, expected (1, 1, {h.features})")
        if h.weight.dtype != np.float32 or h.bias.shape != (h.classes,) or h.classes < 2:
            raise IRError(f"head: weight {h.weight.shape} {h.weight.dtype}, bias {h.bias.shape}: "
                          "expected float32 [classes>=2, features] and [classes]")
        return self


def _verify_conv(where: str, op: Conv, x: Tensor, y: Tensor) -> None:
    w = op.weight
    if w.dtype != np.int8 or w.ndim != 4 or w.shape[2] != w.shape[3] or w.shape[2] % 2 != 1:
        raise IRError(f"{where}: weight {w.shape} {w.dtype}: expected int8 OIHW with odd square kernel")
    if op.kind not in ("conv", "pointwise", "depthwise"):
        raise IRError(f"{where}: unknown conv kind {op.kind!r}")
    if op.kind == "pointwise" and op.kernel != 1:
        raise IRError(f"{where}: pointwise conv with kernel {op.kernel}")
    if op.depthwise and w.shape[1] != 1:
        raise IRError(f"{where}: depthwise weight {w.shape}: expected (C, 1, K, K)")
    if op.bias.dtype != np.int32 or op.bias.shape != (op.out_channels,):
        raise IRError(f"{where}: bias {op.bias.shape} {op.bias.dtype}: expected int32 [{op.out_channels}]")
    if op.w_scales.shape != (op.out_channels,) or not np.all(op.w_scales > 0):
        raise IRError(f"{where}: w_scales {op.w_scales.shape}: expected [{op.out_channels}] positive")
    if op.stride < 1:
        raise IRError(f"{where}: stride {op.stride}: expected >= 1")
    if x.shape[2] != op.in_channels:
        raise IRError(f"{where}: input {x.shape} has {x.shape[2]} channels, weight {w.shape} wants {op.in_channels}")
    ho = (x.shape[0] + 2 * op.padding - op.kernel) // op.stride + 1
    wo = (x.shape[1] + 2 * op.padding - op.kernel) // op.stride + 1
    if y.shape != (ho, wo, op.out_channels):
        raise IRError(f"{where}: output {y.shape}, expected {(ho, wo, op.out_channels)} from input {x.shape}")
