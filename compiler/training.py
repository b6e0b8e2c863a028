"""Reference training step (SPEC 5): the living definition the generated train_step must equal.

One step on one image (batch 1):
1. the int8 forward (reference.forward), keeping for each selected input channel its input map
   A[c] and, for every op on the backward path, a clamp mask (1 where -128 < q < 127);
2. softmax cross-entropy on the fp32 logits, with tt_expf (below) so C and Python agree bitwise;
3. head: g_f = W^T g (summed over classes in order), then W -= lr g f^T, b -= lr g;
4. backward from the pool down to the deepest op holding a selected channel, carrying g = dL/dq
   (the gradient with respect to each tensor's integer value) in fp32:
   - pool: g_x = g_y * (1 / (H W));
   - add: g_y *= mask; g_a = g_y * (s_a / s_y), g_b = g_y * (s_b / s_y);
   - conv: g' = g_y * mask * M[o] (M = s_x s_w[o] / s_y, the effective scale) is quantised to
     int16 with one per-tensor scale sigma = max|g'| / 32767; from there every sum is an integer
     sum (exact, so any summation order gives the same value): the input gradient
     g_x = sigma * sum_o,k w * G' (transposed conv), and for each selected channel c
     dW[o, c, k] = sigma * sum (A[c] - x_zero) * G'[o];
5. QAS SGD on a master copy with 8 fractional bits: each selected slice keeps an int8 residual
   r (in 1/256 LSB) next to its saved input plane in the update arena, so the master value is
   W + r/256. A step adds d = floor(-lr * (dW / s_w[o]^2) * 256 + u) (u uniform [0, 1) from the
   on-device PRNG: stochastic rounding, so even updates below 1/256 LSB are kept on average), then
   W = clamp(round_half_up(m / 256), -127, 127) and r = clamp(m - 256 W, -128, 127) for
   m = 256 W + r + d. The forward always uses the int8 W. When the selection changes (an epoch
   boundary of a dynamic strategy), every slice's residual is folded back stochastically
   (W += floor(r / 256 + u)) before the new selection starts with r = 0. Dead output channels have
   1/s_w^2 := 0 and never change. A layer's input gradient is computed before its weights change.
Every fp32 operation is elementwise or an ordered loop that the C code performs identically, so
int8 weights, head and losses agree bit for bit with C built with -ffp-contract=off.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from compiler import quant, reference
from compiler.ir import Add, AvgPool, Conv, Graph
from compiler.prng import STREAM_ROUNDING, XorShift32
from compiler.sampler import Pool, Sampler

F32 = np.float32
GRAD_LEVELS = 32767  # int16 gradient quantisation
RESIDUAL_ONE = 256  # residual units per weight LSB
STEP_LIMIT = F32(1 << 20)  # |d| bound in 1/256 LSB before the int conversion (an update > 4096 LSB saturates anyway)


# ---- float32 math with a fixed operation sequence (the C twins are in runtime_c/tt_fmath.h) ----

LOG2E, LN2_HI, LN2_LO = F32(1.44269504), F32(0.693145752), F32(1.42860677e-06)
EXP_C = [F32(1 / 720), F32(1 / 120), F32(1 / 24), F32(1 / 6), F32(0.5), F32(1.0), F32(1.0)]
SIN_C = [F32(-1 / 39916800), F32(1 / 362880), F32(-1 / 5040), F32(1 / 120), F32(-1 / 6), F32(1.0)]
HALF_PI = F32(math.pi / 2)


def expf(x: np.ndarray) -> np.ndarray:
    """exp for x <= 0 (softmax): range reduction by ln 2 and a degree-6 polynomial."""
    x = np.maximum(np.asarray(x, F32), F32(-87.0))
    n = np.floor(x * LOG2E + F32(0.5)).astype(F32)
    r = (x - n * LN2_HI) - n * LN2_LO
    p = EXP_C[0]
    for c in EXP_C[1:]:
        p = p * r + c
    scale = (np.left_shift((n.astype(np.int32) + 127), 23)).astype(np.int32).view(F32)
    return (p * scale).astype(F32)


def cosf(x: F32) -> F32:
    """cos on [0, pi]: cos(x) = -sin(x - pi/2), odd polynomial of degree 11."""
    y = F32(F32(x) - HALF_PI)
    y2 = F32(y * y)
    p = SIN_C[0]
    for c in SIN_C[1:]:
        p = F32(p * y2 + c)
    return F32(-(y * p))


@dataclass(frozen=True)
class Schedule:
    """Cosine learning rate with linear warm-up, from the step counter (SPEC 5)."""

    lr: float
    total_steps: int
    warmup_steps: int

    def at(self, step: int) -> F32:
        base = F32(self.lr)
        if step < self.warmup_steps:
            return F32(base * F32(F32(step + 1) / F32(self.warmup_steps)))
        span = max(self.total_steps - self.warmup_steps, 1)
        frac = F32(F32(min(step - self.warmup_steps, span)) / F32(span))
        return F32(F32(base * F32(0.5)) * F32(F32(1.0) + cosf(F32(F32(math.pi) * frac))))


# ---- per-layer constants (computed once; emitted as const data in C) ----

@dataclass(frozen=True, eq=False)
class ConvTrain:
    eff_scale: np.ndarray  # float32 [O] M[o] = s_x s_w[o] / s_y
    inv_sw2: np.ndarray  # float32 [O] 1 / s_w[o]^2, 0 for dead channels


def train_constants(graph: Graph) -> dict[str, object]:
    out: dict[str, object] = {}
    t = graph.tensors
    for op in graph.ops:
        if isinstance(op, Conv):
            sx, sy = quant.f32(t[op.input].scale), quant.f32(t[op.output].scale)
            sw = op.w_scales.astype(np.float64)
            inv = np.where(op.dead, 0.0, 1.0 / (op.w_scales.astype(F32) * op.w_scales.astype(F32)).astype(np.float64))
            out[op.name] = ConvTrain((sx * sw / sy).astype(F32), inv.astype(F32))
        elif isinstance(op, Add):
            sa, sb, sy = (quant.f32(t[n].scale) for n in (*op.inputs, op.output))
            out[op.name] = (F32(sa / sy), F32(sb / sy))
        elif isinstance(op, AvgPool):
            x = t[op.input]
            out[op.name] = F32(1.0 / (x.shape[0] * x.shape[1]))
    return out


def quantise_grad(g: np.ndarray) -> tuple[np.ndarray, F32]:
    """fp32 -> int16 values (as float64 for exact sums) and the scale sigma."""
    amax = F32(np.max(np.abs(g))) if g.size else F32(0)
    if amax == 0:
        return np.zeros(g.shape, np.float64), F32(0)
    inv = F32(F32(GRAD_LEVELS) / amax)
    q = np.clip(np.rint((g * inv).astype(F32)), -GRAD_LEVELS, GRAD_LEVELS)
    return q.astype(np.float64), F32(amax / F32(GRAD_LEVELS))


def clamp_mask(q: np.ndarray) -> np.ndarray:
    return ((q > -128) & (q < 127)).astype(F32)


@dataclass
class StepResult:
    loss: float
    logits: np.ndarray
    lr: float


class Trainer:
    """Mutable training state over an immutable graph: weights of trainable convs, head, PRNGs."""

    def __init__(self, graph: Graph, pool: Pool, budget: int, seed: int, schedule: Schedule):
        self.graph = graph
        self.quant = quant.prepare(graph)
        self.consts = train_constants(graph)
        self.pool, self.budget = pool, budget
        self.sampler = Sampler(pool, budget, seed)
        self.sr = XorShift32(seed, STREAM_ROUNDING)
        self.schedule = schedule
        self.step = 0
        self.weights = {c.name: c.weight.copy() for c in graph.convs}
        self.head_w = graph.head.weight.copy()
        self.head_b = graph.head.bias.copy()
        self.selection: list[int] = []
        self.residuals: dict[tuple[int, int], np.ndarray] = {}  # (conv, channel) -> int32 slice, 1/256 LSB
        self.conv_index = {c.name: i for i, c in enumerate(graph.convs)}
        self.op_index = {op.name: i for i, op in enumerate(graph.ops)}

    # -- state views --
    def current_graph(self) -> Graph:
        convs = {c.name: dataclasses.replace(c, weight=self.weights[c.name]) for c in self.graph.convs}
        ops = tuple(convs.get(op.name, op) if isinstance(op, Conv) else op for op in self.graph.ops)
        head = dataclasses.replace(self.graph.head, weight=self.head_w, bias=self.head_b)
        return dataclasses.replace(self.graph, ops=ops, head=head)

    def epoch_begin(self) -> list[int]:
        """Draw the epoch's selection; fold back the residuals first when the selection may change."""
        changes = self.pool.dynamic or self.sampler.epochs == 0
        if changes:
            self.write_back()
        self.selection = self.sampler.epoch_begin()
        if changes:
            self.residuals = {(int(self.pool.entry_layer[i]), int(self.pool.entry_channel[i])):
                              np.zeros(self._slice_shape(int(self.pool.entry_layer[i])), np.int32)
                              for i in self.selection}
        return self.selection

    def _slice_shape(self, conv_index: int) -> tuple[int, ...]:
        conv = self.graph.convs[conv_index]
        return (1, conv.kernel, conv.kernel) if conv.depthwise else (conv.out_channels, conv.kernel, conv.kernel)

    def _slice_index(self, conv_index: int, c: int) -> tuple:
        return (c, 0) if self.graph.convs[conv_index].depthwise else (slice(None), c)

    def write_back(self) -> None:
        """Fold each selected slice's residual into its int8 weights (stochastic rounding, slice order)."""
        for i in self.selection:
            layer, c = int(self.pool.entry_layer[i]), int(self.pool.entry_channel[i])
            r = self.residuals[(layer, c)]
            w = self.weights[self.graph.convs[layer].name]
            index = self._slice_index(layer, c)
            old = w[index].reshape(r.shape).astype(np.int32)
            u = self.sr.uniforms(r.size).reshape(r.shape)
            step = np.floor((r.astype(F32) * F32(1 / RESIDUAL_ONE) + u).astype(F32)).astype(np.int32)
            w[index] = np.clip(old + step, -127, 127).astype(np.int8).reshape(w[index].shape)
        self.residuals = {}

    def selected_by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in self.selection:
            out.setdefault(int(self.pool.entry_layer[i]), []).append(int(self.pool.entry_channel[i]))
        return out

    def predict(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        g = self.current_graph()
        out = []
        for s in range(0, len(images), batch):
            _, logits = reference.forward(g, images[s:s + batch], self.quant)
            out.append(logits)
        return np.concatenate(out) if out else np.zeros((0, self.head_w.shape[0]), F32)

    # -- one step --
    def train_step(self, image: np.ndarray, label: int) -> StepResult:
        g = self.current_graph()
        vals, logits = reference.forward(g, image[None], self.quant)
        logits = logits[0]
        lr = self.schedule.at(self.step)
        self.step += 1

        # softmax cross-entropy
        m = F32(np.max(logits))
        e = expf((logits - m).astype(F32))
        s = F32(0)
        for v in e:
            s = F32(s + v)
        p = (e / s).astype(F32)
        loss = float(np.log(np.float64(s)) - np.float64(F32(logits[label] - m)))
        grad = p.copy()
        grad[label] = F32(grad[label] - F32(1))

        # head (gradient w.r.t. features first, with the old weights)
        feat_t = g.tensors[g.head.input]
        q_feat = vals[g.head.input].reshape(-1)
        f = ((q_feat.astype(F32) - F32(feat_t.zero)) * F32(quant.f32(feat_t.scale))).astype(F32)
        g_f = np.zeros_like(f)
        for k in range(self.head_w.shape[0]):
            g_f = (g_f + self.head_w[k] * grad[k]).astype(F32)
        self.head_w -= (lr * (grad[:, None] * f[None, :]).astype(F32)).astype(F32)
        self.head_b -= (lr * grad).astype(F32)

        by_layer = self.selected_by_layer()
        if not by_layer:
            return StepResult(loss, logits, float(lr))
        convs = self.graph.convs
        deepest = min(self.op_index[convs[i].name] for i in by_layer)
        producer = {op.output: k for k, op in enumerate(self.graph.ops)}
        producer[self.graph.input] = -1
        grads: dict[str, np.ndarray] = {g.head.input: (g_f * F32(quant.f32(feat_t.scale))).astype(F32)
                                        .reshape(feat_t.shape)}

        def give(name: str, value: np.ndarray) -> None:
            if producer[name] < deepest:
                return
            grads[name] = value if name not in grads else (grads[name] + value).astype(F32)

        for k in range(len(self.graph.ops) - 1, deepest - 1, -1):
            op = self.graph.ops[k]
            gy = grads.pop(op.output)
            y = vals[op.output][0]
            if isinstance(op, AvgPool):
                x = g.tensors[op.input]
                give(op.input, np.broadcast_to(gy * self.consts[op.name], x.shape).astype(F32))
            elif isinstance(op, Add):
                gy = (gy * clamp_mask(y)).astype(F32)
                ra, rb = self.consts[op.name]
                give(op.inputs[0], (gy * ra).astype(F32))
                give(op.inputs[1], (gy * rb).astype(F32))
            elif isinstance(op, Conv):
                ct = self.consts[op.name]
                gp = ((gy * clamp_mask(y)).astype(F32) * ct.eff_scale).astype(F32)
                G, sigma = quantise_grad(gp)
                w = self.weights[op.name]
                if k > deepest:
                    give(op.input, self._input_grad(op, G, sigma, w))
                ci = self.conv_index[op.name]
                if ci in by_layer:
                    self._update(op, ci, by_layer[ci], G, sigma, vals[op.input][0], lr, ct)
        return StepResult(loss, logits, float(lr))

    def _input_grad(self, op: Conv, G: np.ndarray, sigma: F32, w: np.ndarray) -> np.ndarray:
        x = self.graph.tensors[op.input]
        Gt = torch.from_numpy(G).permute(2, 0, 1)[None]  # 1, O, Ho, Wo
        wt = torch.from_numpy(w.astype(np.float64))
        h, wd = x.shape[0], x.shape[1]
        ho, wo = G.shape[0], G.shape[1]
        opad = (h - ((ho - 1) * op.stride - 2 * op.padding + op.kernel),
                wd - ((wo - 1) * op.stride - 2 * op.padding + op.kernel))
        groups = op.out_channels if op.depthwise else 1
        s = torch.nn.functional.conv_transpose2d(Gt, wt, stride=op.stride, padding=op.padding,
                                                 output_padding=opad, groups=groups)
        s = s[0].permute(1, 2, 0).numpy()  # exact integers (|sum| < 2^53)
        return (s.astype(F32) * sigma).astype(F32)

    def _update(self, op: Conv, ci: int, channels: list[int], G: np.ndarray, sigma: F32, a: np.ndarray,
                lr: F32, ct: ConvTrain) -> None:
        zx = self.graph.tensors[op.input].zero
        A = torch.from_numpy(a[:, :, channels].astype(np.float64) - zx).permute(2, 0, 1)[None]
        Gt = torch.from_numpy(G).permute(2, 0, 1)[None]
        w = self.weights[op.name]
        k = op.kernel
        if op.depthwise:
            Gs = Gt[:, channels]
            S = torch.nn.grad.conv2d_weight(A, (len(channels), 1, k, k), Gs, stride=op.stride,
                                            padding=op.padding, groups=len(channels))
            dW = (S.numpy()[:, 0].astype(F32) * sigma).astype(F32)  # [n, K, K]
            for j, c in enumerate(channels):
                self._apply(w, (c, 0), dW[j][None], ct.inv_sw2[c:c + 1], lr, self.residuals[(ci, c)])
        else:
            S = torch.nn.grad.conv2d_weight(A, (op.out_channels, len(channels), k, k), Gt, stride=op.stride,
                                            padding=op.padding)
            dW = (S.numpy().astype(F32) * sigma).astype(F32)  # [O, n, K, K]
            for j, c in enumerate(channels):
                self._apply(w, (slice(None), c), dW[:, j], ct.inv_sw2, lr, self.residuals[(ci, c)])

    def _apply(self, w: np.ndarray, index: tuple, dW: np.ndarray, inv_sw2: np.ndarray, lr: F32,
               residual: np.ndarray) -> None:
        """QAS SGD on the master copy (W, residual) of one slice; draws follow (o, ky, kx) order."""
        t = ((dW * inv_sw2[:, None, None]).astype(F32) * lr).astype(F32)
        x = np.clip((-t * F32(RESIDUAL_ONE)).astype(F32), -STEP_LIMIT, STEP_LIMIT)
        u = self.sr.uniforms(x.size).reshape(x.shape)
        d = np.floor((x + u).astype(F32)).astype(np.int32)
        old = w[index].reshape(dW.shape).astype(np.int32)
        m = old * RESIDUAL_ONE + residual + d
        new = np.clip(np.floor_divide(m + RESIDUAL_ONE // 2, RESIDUAL_ONE), -127, 127)
        residual[...] = np.clip(m - new * RESIDUAL_ONE, -128, 127)
        w[index] = new.astype(np.int8).reshape(w[index].shape)


@dataclass(frozen=True, eq=False)
class TrainSpec:
    """What the compiler decides about training (emitted as constants)."""

    pool: Pool
    budget_units: int
    first_op: int  # the deepest op backward can reach (len(ops) if none)
    sel_capacity: int
    bytes_per_activation_slot: int = 1  # saved input plane A[c], int8
    bytes_per_weight_slot: int = 1  # sub-LSB residual of the master copy, int8 in 1/256 LSB

    @property
    def update_arena_bytes(self) -> int:
        return self.budget_units * max(self.bytes_per_activation_slot, self.bytes_per_weight_slot)


def train_spec(graph: Graph, pool: Pool, budget: int) -> TrainSpec:
    from compiler.sampler import max_selection

    op_index = {op.name: i for i, op in enumerate(graph.ops)}
    convs = graph.convs
    first = min((op_index[convs[i].name] for i in pool.layers), default=len(graph.ops))
    return TrainSpec(pool, budget, first, max_selection(pool, budget))
