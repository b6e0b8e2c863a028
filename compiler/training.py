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
   With a flash weight home (SPEC 8, `weight_home="flash"`) the int8 home cannot change every step:
   each selected slice has an int8 working copy in the update arena instead of the residual, updated
   with stochastic rounding to whole LSBs (W = clamp(W + floor(-lr dW / s_w^2 + u), -127, 127), no
   sub-LSB update lost in expectation), and copied back to flash at the next resampling (no rounding,
   no PRNG draw). The forward and the input gradients use the working copies (the C kernels get them
   as a weight patch), so the numbers below are the same for both homes up to the update rule.
Gradient accumulation over n samples (compile option `accumulate`, SPEC 5): every sample adds its head
gradient and each selected slice's dW (fp32, in sample order) to accumulators; after every n-th sample
(global counter) and before a resampling that changes the selection, the mean (accumulator times
1/pending) is applied with the update rule above, slices in selection order, at the lr of the last
sample; accumulators then restart from zero.
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
GRAD_MIN = F32(1e-30)  # max|g'| below this counts as zero (32767 / max|g'| would overflow near 1e-34)
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
    if not (amax >= GRAD_MIN and amax <= np.finfo(F32).max):  # zero, too small to scale, or not finite
        return np.zeros(g.shape, np.float64), F32(0)
    inv = F32(F32(GRAD_LEVELS) / amax)
    q = np.clip(np.rint((g * inv).astype(F32)), -GRAD_LEVELS, GRAD_LEVELS)
    return q.astype(np.float64), F32(amax / F32(GRAD_LEVELS))


def clamp_mask(q: np.ndarray) -> np.ndarray:
    """1.0 where -128 < q < 127 (the forward output was not clamped), else 0.0 (tt_clamp_mask_s8)."""
    return ((q > -128) & (q < 127)).astype(F32)


# ---- per-kernel reference functions (each the twin of one kernel of runtime_c/tt_train.c) ----

def softmax_xent(logits: np.ndarray, label: int) -> tuple[np.ndarray, float]:
    """dL/dlogits = p - onehot(label) in fp32, and the loss (float64 log of the fp32 sum):
    tt_softmax_xent_f32."""
    m = F32(np.max(logits))
    e = expf((logits - m).astype(F32))
    s = F32(0)
    for v in e:
        s = F32(s + v)
    p = (e / s).astype(F32)
    loss = float(np.log(np.float64(s)) - np.float64(F32(logits[label] - m)))
    grad = p.copy()
    grad[label] = F32(grad[label] - F32(1))
    return grad, loss


def head_grad_features(weight: np.ndarray, grad: np.ndarray, in_scale: F32) -> np.ndarray:
    """dL/dq of the head's input features: (W^T grad, summed over classes in order) * in_scale."""
    g_f = np.zeros(weight.shape[1], F32)
    for k in range(weight.shape[0]):
        g_f = (g_f + weight[k] * grad[k]).astype(F32)
    return (g_f * in_scale).astype(F32)


def head_bwd_update(weight: np.ndarray, bias: np.ndarray, f: np.ndarray, grad: np.ndarray, lr: F32,
                    in_scale: F32) -> np.ndarray:
    """fp32 head backward, then SGD in place on (weight, bias); returns dL/dq of the features
    (g_f = W^T grad with the old weights, summed over classes in order, times in_scale):
    tt_fully_connected_f32_bwd_update."""
    g_f = head_grad_features(weight, grad, in_scale)
    weight -= (lr * (grad[:, None] * f[None, :]).astype(F32)).astype(F32)
    bias -= (lr * grad).astype(F32)
    return g_f


def head_bwd_accumulate(weight: np.ndarray, f: np.ndarray, grad: np.ndarray, in_scale: F32, acc_w: np.ndarray,
                        acc_b: np.ndarray) -> np.ndarray:
    """g_f as head_bwd_update (current weights), then acc_w += grad f^T, acc_b += grad in place:
    tt_fully_connected_f32_bwd_accumulate."""
    g_f = head_grad_features(weight, grad, in_scale)
    acc_w[...] = (acc_w + (grad[:, None] * f[None, :]).astype(F32)).astype(F32)
    acc_b[...] = (acc_b + grad).astype(F32)
    return g_f


def head_apply(weight: np.ndarray, bias: np.ndarray, acc_w: np.ndarray, acc_b: np.ndarray, lr: F32,
               scale: F32) -> None:
    """W -= lr (acc_w scale), b -= lr (acc_b scale) in place: tt_fully_connected_f32_apply."""
    weight -= (lr * (acc_w * scale).astype(F32)).astype(F32)
    bias -= (lr * (acc_b * scale).astype(F32)).astype(F32)


def accumulate_grad(old: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    """A tensor's gradient from one more consumer: value, or old + value (the kernels' `accumulate`)."""
    return value if old is None else (old + value).astype(F32)


def avgpool_bwd(gy: np.ndarray, inv_hw: F32, in_shape: tuple[int, ...]) -> np.ndarray:
    """g_x[h, w, c] = g_y[c] * (1 / (H W)): tt_avgpool_global_bwd_f32."""
    return np.broadcast_to(gy * inv_hw, in_shape).astype(F32)


def add_bwd(gy: np.ndarray, mask: np.ndarray, ratio_a: F32, ratio_b: F32) -> tuple[np.ndarray, np.ndarray]:
    """g = g_y * mask; (g * s_a / s_y, g * s_b / s_y): tt_add_bwd_f32."""
    g = (gy * mask).astype(F32)
    return (g * ratio_a).astype(F32), (g * ratio_b).astype(F32)


def scaled_grad(gy: np.ndarray, mask: np.ndarray, eff_scale: np.ndarray) -> np.ndarray:
    """g' = g_y * mask * M[o] in fp32 ([..., O], the values tt_grad_quantize_s16 quantises)."""
    return ((gy * mask).astype(F32) * eff_scale).astype(F32)


def conv_bwd_input(G: np.ndarray, sigma: F32, weight_oihw: np.ndarray, stride: int, padding: int,
                   depthwise: bool, in_hw: tuple[int, int]) -> np.ndarray:
    """Input gradient g_x = sigma * (transposed conv of the int16 G [Ho, Wo, O] with the int8 weights),
    fp32 [H, W, C]: tt_conv2d_s8_bwd_input / tt_depthwise_conv2d_s8_bwd_input."""
    Gt = torch.from_numpy(G).permute(2, 0, 1)[None]  # 1, O, Ho, Wo
    wt = torch.from_numpy(weight_oihw.astype(np.float64))
    h, wd = in_hw
    ho, wo = G.shape[0], G.shape[1]
    kernel = weight_oihw.shape[2]
    opad = (h - ((ho - 1) * stride - 2 * padding + kernel),
            wd - ((wo - 1) * stride - 2 * padding + kernel))
    groups = weight_oihw.shape[0] if depthwise else 1
    s = torch.nn.functional.conv_transpose2d(Gt, wt, stride=stride, padding=padding,
                                             output_padding=opad, groups=groups)
    s = s[0].permute(1, 2, 0).numpy()  # exact integers (|sum| < 2^53)
    return (s.astype(F32) * sigma).astype(F32)


def conv_weight_grad(a_minus_zero: np.ndarray, G: np.ndarray, sigma: F32, stride: int, padding: int,
                     kernel: int, depthwise: bool, channels: list[int]) -> np.ndarray:
    """dW of the slices of input channels `channels`, fp32 [n, O (1 if depthwise), K, K]:
    dW[j][o, ky, kx] = sigma * sum over (oy, ox) of a[iy, ix, j] * G[oy, ox, o] (depthwise: o = channels[j]).
    a_minus_zero [H, W, n] holds A[c] - x_zero of the channels (float64, exact). The sums are exact
    integers, so this equals tt_conv2d_s8_bwd_weight_update's int64 sums before the update."""
    A = torch.from_numpy(a_minus_zero).permute(2, 0, 1)[None]
    Gt = torch.from_numpy(G).permute(2, 0, 1)[None]
    n = len(channels)
    if depthwise:
        S = torch.nn.grad.conv2d_weight(A, (n, 1, kernel, kernel), Gt[:, channels], stride=stride,
                                        padding=padding, groups=n)
        return (S.numpy().astype(F32) * sigma).astype(F32)  # [n, 1, K, K]
    S = torch.nn.grad.conv2d_weight(A, (G.shape[2], n, kernel, kernel), Gt, stride=stride, padding=padding)
    return (S.numpy().transpose(1, 0, 2, 3).astype(F32) * sigma).astype(F32)  # [n, O, K, K]


def sgd_master_step(w: np.ndarray, residual: np.ndarray, dW: np.ndarray, inv_sw2: np.ndarray, lr: F32,
                    rng: XorShift32) -> tuple[np.ndarray, np.ndarray]:
    """QAS SGD on the master copy (w + residual/256) of one slice [O, K, K]: returns the new int8 weights
    and residuals (as int32); the PRNG draws follow (o, ky, kx) order. The update of
    tt_conv2d_s8_bwd_weight_update / tt_depthwise_conv2d_s8_bwd_weight_update (inv_sw2: [O])."""
    t = ((dW * inv_sw2[:, None, None]).astype(F32) * lr).astype(F32)
    x = (-t * F32(RESIDUAL_ONE)).astype(F32)
    x = np.clip(np.where(np.isnan(x), F32(0), x), -STEP_LIMIT, STEP_LIMIT)  # NaN: inf dW x dead channel's 0
    u = rng.uniforms(x.size).reshape(x.shape)
    d = np.floor((x + u).astype(F32)).astype(np.int32)
    m = w.astype(np.int32) * RESIDUAL_ONE + residual + d
    new = np.clip(np.floor_divide(m + RESIDUAL_ONE // 2, RESIDUAL_ONE), -127, 127)
    return new, np.clip(m - new * RESIDUAL_ONE, -128, 127)


def sgd_round_step(w: np.ndarray, dW: np.ndarray, inv_sw2: np.ndarray, lr: F32, rng: XorShift32) -> np.ndarray:
    """QAS SGD with stochastic rounding to whole LSBs on one working slice [O, K, K] (flash weight home):
    clamp(w + floor(-lr dW inv_sw2 + u), -127, 127), draws in (o, ky, kx) order. The update of
    tt_conv2d_s8_bwd_weight_update_sr / tt_depthwise_conv2d_s8_bwd_weight_update_sr."""
    t = ((dW * inv_sw2[:, None, None]).astype(F32) * lr).astype(F32)
    x = np.clip(np.where(np.isnan(t), F32(0), -t), -STEP_LIMIT, STEP_LIMIT)
    u = rng.uniforms(x.size).reshape(x.shape)
    return np.clip(w.astype(np.int32) + np.floor((x + u).astype(F32)).astype(np.int32), -127, 127)


def residual_writeback(w: np.ndarray, residual: np.ndarray, rng: XorShift32) -> np.ndarray:
    """w + floor(r / 256 + u), clamped to [-127, 127], draws in slice order: tt_residual_writeback_s8."""
    old = w.astype(np.int32)
    u = rng.uniforms(residual.size).reshape(residual.shape)
    step = np.floor((residual.astype(F32) * F32(1 / RESIDUAL_ONE) + u).astype(F32)).astype(np.int32)
    return np.clip(old + step, -127, 127)


@dataclass
class StepResult:
    loss: float
    logits: np.ndarray
    lr: float


class Trainer:
    """Mutable training state over an immutable graph: weights of trainable convs, head, PRNGs."""

    def __init__(self, graph: Graph, pool: Pool, budget: int, seed: int, schedule: Schedule,
                 weight_home: str = "ram", accumulate: int = 1):
        self.graph = graph
        self.accumulate = accumulate
        self.pending, self.last_lr = 0, F32(0)
        self.grad_acc: dict[tuple[int, int], np.ndarray] = {}  # (conv, channel) -> fp32 slice [O, K, K]
        self.head_acc_w = np.zeros_like(graph.head.weight)
        self.head_acc_b = np.zeros_like(graph.head.bias)
        self.master = weight_home == "ram"  # RAM home: master copy with residuals; flash: working copies
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
        self.producer = graph.producer_indices()

    @classmethod
    def for_spec(cls, graph: Graph, spec: TrainSpec, seed: int, schedule: Schedule) -> Trainer:
        """The reference trainer of a compiled project (its pool, budget, weight home and accumulation)."""
        return cls(graph, spec.pool, spec.budget_units, seed, schedule, spec.weight_home, spec.accumulate)

    # -- state views --
    def current_graph(self) -> Graph:
        convs = {c.name: dataclasses.replace(c, weight=self.weights[c.name]) for c in self.graph.convs}
        ops = tuple(convs.get(op.name, op) if isinstance(op, Conv) else op for op in self.graph.ops)
        head = dataclasses.replace(self.graph.head, weight=self.head_w, bias=self.head_b)
        return dataclasses.replace(self.graph, ops=ops, head=head)

    def epoch_begin(self) -> list[int]:
        """Draw the epoch's selection; fold back the residuals first when the selection may change."""
        changes = self.pool.dynamic or self.sampler.epochs == 0
        if changes and self.pending:
            self._apply_accumulated(self.last_lr)
        if changes and self.master:
            self.write_back()
        self.selection = self.sampler.epoch_begin()
        if changes and self.master:
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
            new = residual_writeback(w[index].reshape(r.shape), r, self.sr)
            w[index] = new.astype(np.int8).reshape(w[index].shape)
        self.residuals = {}

    def selected_by_layer(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in self.selection:
            out.setdefault(int(self.pool.entry_layer[i]), []).append(int(self.pool.entry_channel[i]))
        return out

    # -- one step --
    def train_step(self, image: np.ndarray, label: int) -> StepResult:
        g = self.current_graph()
        vals, logits = reference.forward(g, image[None], self.quant)
        logits = logits[0]
        lr = self.schedule.at(self.step)
        self.step += 1

        grad, loss = softmax_xent(logits, label)

        # head (gradient w.r.t. features first, with the old weights)
        feat_t = g.tensors[g.head.input]
        q_feat = vals[g.head.input].reshape(-1)
        f = ((q_feat.astype(F32) - F32(feat_t.zero)) * F32(quant.f32(feat_t.scale))).astype(F32)
        in_scale = F32(quant.f32(feat_t.scale))
        if self.accumulate > 1:
            g_feat = head_bwd_accumulate(self.head_w, f, grad, in_scale, self.head_acc_w, self.head_acc_b)
        else:
            g_feat = head_bwd_update(self.head_w, self.head_b, f, grad, lr, in_scale)
        self._backward(g, vals, g_feat.reshape(feat_t.shape), lr)
        if self.accumulate > 1:
            self.pending, self.last_lr = self.pending + 1, lr
            if self.step % self.accumulate == 0:
                self._apply_accumulated(lr)
        return StepResult(loss, logits, float(lr))

    def _apply_accumulated(self, lr: F32) -> None:
        """Apply the mean of the accumulated gradients (head, then slices in selection order); reset them."""
        scale = F32(F32(1) / F32(self.pending))
        head_apply(self.head_w, self.head_b, self.head_acc_w, self.head_acc_b, lr, scale)
        self.head_acc_w[...] = 0
        self.head_acc_b[...] = 0
        for i in self.selection:
            ci, c = int(self.pool.entry_layer[i]), int(self.pool.entry_channel[i])
            acc = self.grad_acc.pop((ci, c))  # every selected slice got a dW on every pending sample
            op = self.graph.convs[ci]
            inv = self.consts[op.name].inv_sw2
            self._apply(self.weights[op.name], self._slice_index(ci, c), (acc * scale).astype(F32),
                        inv[c:c + 1] if op.depthwise else inv, lr, self.residuals.get((ci, c)))
        self.pending = 0

    def _backward(self, g: Graph, vals: dict, g_feat: np.ndarray, lr: F32) -> None:
        by_layer = self.selected_by_layer()
        if not by_layer:
            return
        feat_t = g.tensors[g.head.input]
        convs = self.graph.convs
        deepest = min(self.op_index[convs[i].name] for i in by_layer)
        producer = self.producer
        grads: dict[str, np.ndarray] = {g.head.input: g_feat.reshape(feat_t.shape)}

        def give(name: str, value: np.ndarray) -> None:
            if producer[name] < deepest:
                return
            grads[name] = accumulate_grad(grads.get(name), value)

        for k in range(len(self.graph.ops) - 1, deepest - 1, -1):
            op = self.graph.ops[k]
            gy = grads.pop(op.output)
            y = vals[op.output][0]
            if isinstance(op, AvgPool):
                give(op.input, avgpool_bwd(gy, self.consts[op.name], g.tensors[op.input].shape))
            elif isinstance(op, Add):
                ga, gb = add_bwd(gy, clamp_mask(y), *self.consts[op.name])
                give(op.inputs[0], ga)
                give(op.inputs[1], gb)
            elif isinstance(op, Conv):
                ct = self.consts[op.name]
                G, sigma = quantise_grad(scaled_grad(gy, clamp_mask(y), ct.eff_scale))
                w = self.weights[op.name]
                if k > deepest:
                    x = self.graph.tensors[op.input]
                    give(op.input, conv_bwd_input(G, sigma, w, op.stride, op.padding, op.depthwise,
                                                  (x.shape[0], x.shape[1])))
                ci = self.conv_index[op.name]
                if ci in by_layer:
                    self._update(op, ci, by_layer[ci], G, sigma, vals[op.input][0], lr, ct)

    def _update(self, op: Conv, ci: int, channels: list[int], G: np.ndarray, sigma: F32, a: np.ndarray,
                lr: F32, ct: ConvTrain) -> None:
        zx = self.graph.tensors[op.input].zero
        dW = conv_weight_grad(a[:, :, channels].astype(np.float64) - zx, G, sigma, op.stride, op.padding,
                              op.kernel, op.depthwise, channels)
        w = self.weights[op.name]
        for j, c in enumerate(channels):
            if self.accumulate > 1:
                old = self.grad_acc.get((ci, c))
                self.grad_acc[(ci, c)] = dW[j] if old is None else (old + dW[j]).astype(F32)
                continue
            inv = ct.inv_sw2[c:c + 1] if op.depthwise else ct.inv_sw2
            self._apply(w, self._slice_index(ci, c), dW[j], inv, lr, self.residuals.get((ci, c)))

    def _apply(self, w: np.ndarray, index: tuple, dW: np.ndarray, inv_sw2: np.ndarray, lr: F32,
               residual: np.ndarray | None) -> None:
        """QAS SGD on one slice in place: on the master copy (W, residual) with a RAM home, else on the working
        copy with stochastic rounding to whole LSBs; draws follow (o, ky, kx) order."""
        if residual is None:
            new = sgd_round_step(w[index].reshape(dW.shape), dW, inv_sw2, lr, self.sr)
        else:
            new, residual[...] = sgd_master_step(w[index].reshape(dW.shape), residual, dW, inv_sw2, lr, self.sr)
        w[index] = new.astype(np.int8).reshape(w[index].shape)


@dataclass(frozen=True, eq=False)
class TrainSpec:
    """What the compiler decides about training (emitted as constants)."""

    pool: Pool
    budget_units: int
    first_op: int  # the deepest op backward can reach (len(ops) if none)
    sel_capacity: int
    bytes_per_activation_slot: int = 1  # saved input plane A[c], int8
    bytes_per_weight_slot: int = 1  # RAM home: residual in 1/256 LSB; flash home: the int8 working copy
    weight_home: str = "ram"  # where trainable weights live: "ram" (updated in place) or "flash" (SPEC 8)
    accumulate: int = 1  # gradient accumulation over this many samples (1: an update every sample)
    flash_page: int = 2048  # flash page (erase unit) of the write-back page buffer, flash home only

    @property
    def update_arena_bytes(self) -> int:
        return self.budget_units * max(self.bytes_per_activation_slot, self.bytes_per_weight_slot)

    def flash_layout(self, graph: Graph) -> tuple[dict[int, int], int]:
        """Flash home: byte offset of each trainable conv's weights in one region, and the region's size
        (padded to whole pages, so that a write-back never touches a page outside it)."""
        offsets, pos = {}, 0
        for i in self.pool.layers:
            offsets[i] = pos
            pos += graph.convs[i].weight.size
        return offsets, -(-pos // self.flash_page) * self.flash_page


def train_spec(graph: Graph, pool: Pool, budget: int, weight_home: str = "ram", flash_page: int = 2048,
               accumulate: int = 1) -> TrainSpec:
    from compiler.sampler import max_selection

    op_index = {op.name: i for i, op in enumerate(graph.ops)}
    convs = graph.convs
    first = min((op_index[convs[i].name] for i in pool.layers), default=len(graph.ops))
    return TrainSpec(pool, budget, first, max_selection(pool, budget), weight_home=weight_home,
                     flash_page=flash_page, accumulate=accumulate)
