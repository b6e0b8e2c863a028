"""Float training model for the offline ranking: `ir.Graph` -> a trainable PyTorch module (NCHW, batched).

Used by `trady rank` (compiler/rank.py), never by the compiled C. Each conv becomes a float conv
with the dequantised weights `W_q * s_w` and biases `bias * s_x * s_w` (padding (K-1)/2, groups =
channels for depthwise); each conv and residual-add output is clamped to its int8 range in real
units `[s_y(-128 - z_y), s_y(127 - z_y)]` (ReLU6 folded into the range, as in the int8 graph); the
pool is a global mean; the head is a fresh `nn.Linear` for N classes on the pooled real features.

With `fake_quant=True` every conv/add/pool output is also rounded to its int8 grid with a
straight-through estimator (the forward sees the rounded value, the backward the clamp's
gradient). The rounding follows the int8 kernels: MBQM's double rounding with each output
channel's right shift (residual adds: one rounding half away from zero), the pool's mean rounded half away from zero, and dead channels computed
exactly as the reference does (int32 bias add with wrap-around). Fed the reference's own input,
each layer then matches it except at near-ties (about 1e-5 of the elements in float64); end to
end, on real images, the pooled features stay within a few int8 steps (tests/test_rank.py).

Dead output channels (SPEC 3: w_scale < 1e-6) keep their imported float parameters and are frozen:
a gradient hook zeroes their weight rows and bias entries, so they are never trained and never
count towards a gradient norm. Without fake quantisation their float output is the bias term (the
tiny weights add next to nothing), where the int8 reference can differ when its bias add wraps.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compiler import quant
from compiler.ir import Add, AvgPool, Conv, Graph, Tensor


def real_range(t: Tensor) -> tuple[float, float]:
    """The real values an int8 tensor can hold: [s(-128 - z), s(127 - z)]."""
    s = quant.f32(t.scale)
    return s * (-128 - t.zero), s * (127 - t.zero)


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


class _FakeQuant(torch.autograd.Function):
    """Round to the int8 grid of (scale, zero) as the int8 kernels do; straight-through gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float, zero: int,
                pre: torch.Tensor | None) -> torch.Tensor:
        v = x / scale  # q - zero, not yet rounded
        if pre is None:  # average pool: the raw mean (zero point included) rounded half away from zero
            q = round_half_away(v + zero)
        else:  # MBQM's double rounding: first to 1/2^right (SRDHM), then half away from zero (RDBPOT)
            q = round_half_away(round_half_away(v * pre) / pre) + zero
        return (torch.clamp(q, -128, 127) - zero) * scale

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return g, None, None, None


def fake_quant(x: torch.Tensor, t: Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
    """x (real units) rounded to the int8 grid of tensor t, straight-through in the backward.

    `pre`: 2^right per channel, [1, C, 1, 1], for an output requantised by MBQM with that right
    shift (conv, add; 1 where there is none); None for the pool's single rounding of the raw mean.
    """
    return _FakeQuant.apply(x, quant.f32(t.scale), t.zero, pre)


class TorchModel(nn.Module):
    """Trainable float twin of an int8 graph: `forward(x_real NCHW) -> logits`, `features(x) -> pooled`.

    Parameters: `weights[i]`, `biases[i]` for conv i in forward order (as `graph.convs`), and `head`.
    """

    def __init__(self, graph: Graph, classes: int | None = None, fake_quant: bool = False,
                 head: tuple[np.ndarray, np.ndarray] | None = None, seed: int = 0) -> None:
        """`head`: (weight [classes, F], bias [classes]) to start from. Default: the graph's own head
        when `classes` is None, else a fresh one, `pipeline.init_head(graph, classes, seed)` (the
        head `trady compile` would emit: uniform +-1/sqrt(F) weights, zero bias)."""
        super().__init__()
        self.graph = graph
        self.fake_quant = fake_quant
        t = graph.tensors
        self.conv_index = {c.name: i for i, c in enumerate(graph.convs)}
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, conv in enumerate(graph.convs):
            s_x = np.float64(quant.f32(t[conv.input].scale))
            s_w = conv.w_scales.astype(np.float32).astype(np.float64)
            w = conv.weight.astype(np.float64) * s_w[:, None, None, None]
            b = conv.bias.astype(np.float64) * s_x * s_w
            self.weights.append(nn.Parameter(torch.from_numpy(w.astype(np.float32))))
            self.biases.append(nn.Parameter(torch.from_numpy(b.astype(np.float32))))
            alive = torch.from_numpy((~conv.dead).astype(np.float32))
            self.register_buffer(f"alive_{i}", alive, persistent=False)
            if conv.dead.any():
                self.weights[i].register_hook(self._masker(i, 4))
                self.biases[i].register_hook(self._masker(i, 1))
        feat = graph.head.features
        n = graph.head.classes if classes is None else classes
        self.head = nn.Linear(feat, n)
        if head is None and classes is None:
            head = (graph.head.weight, graph.head.bias)
        elif head is None:
            from compiler.pipeline import init_head

            fresh = init_head(graph, n, seed)
            head = (fresh.weight, fresh.bias)
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(np.asarray(head[0], np.float32)))
            self.head.bias.copy_(torch.from_numpy(np.asarray(head[1], np.float32)))
        self.ranges = {name: real_range(ten) for name, ten in t.items()}
        last_use: dict[str, int] = {}
        for k, op in enumerate(graph.ops):
            for name in (op.inputs if isinstance(op, Add) else (op.input,)):
                last_use[name] = k
        last_use[graph.head.input] = len(graph.ops)
        self._last_use = last_use
        self._quant = quant.prepare(graph)
        self._pre = {op.output: torch.from_numpy(np.ldexp(1.0, np.maximum(-self._quant[op.name].shift, 0)))
                     .view(1, -1, 1, 1) for op in graph.convs}

    def _masker(self, i: int, ndim: int):
        def hook(g: torch.Tensor) -> torch.Tensor:
            alive = getattr(self, f"alive_{i}").to(g.dtype)
            return g * alive.view(-1, *([1] * (ndim - 1)))
        return hook

    def input_real(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """int8 images NHWC -> real input NCHW in the module's dtype: (q - z) * s."""
        x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        t = self.graph.tensors[self.graph.input]
        dtype = self.head.weight.dtype
        return (x.permute(0, 3, 1, 2).to(dtype) - t.zero) * quant.f32(t.scale)

    def _out(self, y: torch.Tensor, name: str) -> torch.Tensor:
        lo, hi = self.ranges[name]
        y = torch.clamp(y, lo, hi)
        if not self.fake_quant:
            return y
        pre = self._pre.get(name)
        if pre is None:
            pre = torch.ones((), dtype=y.dtype)
        return fake_quant(y, self.graph.tensors[name], pre.to(y.dtype))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Real input NCHW -> pooled real features [N, F]."""
        g = self.graph
        vals: dict[str, torch.Tensor] = {g.input: x}
        for k, op in enumerate(g.ops):
            if isinstance(op, Conv):
                i = self.conv_index[op.name]
                y = F.conv2d(vals[op.input], self.weights[i], self.biases[i], stride=op.stride,
                             padding=op.padding, groups=op.out_channels if op.depthwise else 1)
                if self.fake_quant and op.dead.any():
                    y = self._dead_exact(vals[op.input], op, y)
                vals[op.output] = self._out(y, op.output)
            elif isinstance(op, Add):
                vals[op.output] = self._out(vals[op.inputs[0]] + vals[op.inputs[1]], op.output)
            elif isinstance(op, AvgPool):
                y = vals[op.input].mean(dim=(2, 3), keepdim=True)
                vals[op.output] = fake_quant(y, g.tensors[op.output]) if self.fake_quant else y
            for name in (op.inputs if isinstance(op, Add) else (op.input,)):
                if self._last_use.get(name) == k and name != g.head.input:
                    del vals[name]
        return vals[g.head.input].flatten(1)

    def _dead_exact(self, x: torch.Tensor, op: Conv, y: torch.Tensor) -> torch.Tensor:
        """Replace the dead channels of y by the int8 reference's value (int32 wrap included).

        Only with fake quantisation, where x is on its int8 grid; the dead channels are frozen, so
        this constant-weight path needs no gradient.
        """
        q = self._quant[op.name]
        dead = np.flatnonzero(op.dead)
        tx, ty = self.graph.tensors[op.input], self.graph.tensors[op.output]
        with torch.no_grad():
            xq = torch.round(x.detach().double() / quant.f32(tx.scale))  # x - x_zero, exact integers
            if op.depthwise:
                xq = xq[:, dead]
            w = torch.from_numpy(op.weight[dead].astype(np.float64))
            acc = F.conv2d(xq, w, stride=op.stride, padding=op.padding, groups=len(dead) if op.depthwise else 1)
            acc = quant.wrap32_t(acc.to(torch.int64) + torch.from_numpy(op.bias[dead].astype(np.int64)).view(1, -1, 1, 1))
            m = torch.from_numpy(q.multiplier[dead].astype(np.int64)).view(1, -1, 1, 1)
            s = torch.from_numpy(q.shift[dead].astype(np.int64)).view(1, -1, 1, 1)
            yq = (quant.mbqm_t(acc, m, s) + ty.zero).clamp(-128, 127)
            exact = ((yq - ty.zero) * quant.f32(ty.scale)).to(y.dtype)
        idx = torch.from_numpy(dead)
        return y.index_copy(1, idx, exact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real input NCHW -> logits [N, classes]."""
        return self.head(self.features(x))

    def conv_weight_grad_norms(self) -> list[torch.Tensor]:
        """Per conv, per input channel c: ||dW[:, c]||_2 of the current .grad (depthwise: ||dW[c]||)."""
        out = []
        for conv, w in zip(self.graph.convs, self.weights, strict=True):
            g = w.grad if w.grad is not None else torch.zeros_like(w)
            dims = (1, 2, 3) if conv.depthwise else (0, 2, 3)
            out.append(g.detach().pow(2).sum(dim=dims).sqrt())
        return out
