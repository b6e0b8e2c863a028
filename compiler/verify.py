"""Verification: the host C build and the reference executor side by side on real images.

`compare_forward` checks every op output bit for bit and the fp32 logits bit for bit (the head
sums in the same order in both), and names the first difference: op, image, (h, w, c), both values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from compiler import host, reference
from compiler.pipeline import Project


@dataclass(frozen=True)
class ForwardResult:
    ok: bool
    ops: int
    images: int
    values: int  # int8 values compared
    message: str  # the first difference, or a one-line summary


def first_difference(a: np.ndarray, b: np.ndarray) -> tuple[int, ...] | None:
    diff = np.flatnonzero(a.ravel() != b.ravel())
    return None if diff.size == 0 else tuple(int(i) for i in np.unravel_index(diff[0], a.shape))


def op_difference(graph, ref: dict[str, np.ndarray], outs: list[np.ndarray], start: int, who: str) -> str | None:
    """Compare every op output (outs[i]: [N, H, W, C]) with the reference; describe the first difference."""
    for i, op in enumerate(graph.ops):
        r = ref[op.output]
        got = outs[i].reshape(r.shape)
        where = first_difference(got, r)
        if where is not None:
            img, hh, ww, cc = where
            return (f"op {i} ({op.name}) image {start + img} at (h={hh}, w={ww}, c={cc}): "
                    f"{who} {int(got[where])} != reference {int(r[where])}")
    return None


def compare_forward(project: Project, exe, images: np.ndarray, batch: int = 32) -> ForwardResult:
    g = project.graph
    op_sizes = [g.tensors[op.output].size for op in g.ops]
    c_outs, c_logits = host.run_forward(exe, images, op_sizes, g.head.classes)
    values = 0
    for start in range(0, len(images), batch):
        ref, ref_logits = reference.forward(g, images[start:start + batch], project.quant)
        values += sum(ref[op.output].size for op in g.ops)
        diff = op_difference(g, ref, [c[start:start + batch] for c in c_outs], start, "C")
        if diff is not None:
            return ForwardResult(False, len(g.ops), len(images), values, diff)
        cl = c_logits[start:start + batch]
        where = first_difference(cl.view(np.int32), ref_logits.view(np.int32))
        if where is not None:
            img, k = where
            return ForwardResult(False, len(g.ops), len(images), values,
                                 f"head logits image {start + img} class {k}: C {cl[where]!r} != reference "
                                 f"{ref_logits[where]!r}")
    return ForwardResult(True, len(g.ops), len(images), values,
                         f"{len(g.ops)} ops x {len(images)} images bit-exact ({values:,} int8 values), "
                         f"fp32 logits bit-identical")


@dataclass(frozen=True)
class TrainResult:
    ok: bool
    steps: int
    message: str


def compare_training(project: Project, exe, images: np.ndarray, labels: np.ndarray, steps: int, seed: int = 0,
                     lr: float = 0.01, loss_rtol: float = 1e-5) -> TrainResult:
    """N training steps in C and in the reference, compared after every step.

    Selections and int8 weights must be identical; head weights, logits are compared bitwise too
    (every fp32 operation has the same order in both); the loss within `loss_rtol` (C uses logf,
    the reference float64 log). Epochs are ceil(N / 2) steps long, so N >= 2 crosses a boundary.
    """
    from compiler import training
    from compiler.emit import c_weight

    g, spec = project.graph, project.spec
    per_epoch = max(1, -(-steps // 2))
    warmup = max(1, steps // 4)
    trainer = training.Trainer.for_spec(g, spec, seed, training.Schedule(lr, steps, warmup))
    raw = host.run_trace(exe, images[:steps], labels[:steps], per_epoch, seed, lr, warmup, steps)
    convs = g.convs
    trainable = sorted(set(spec.pool.layers))
    records = host.parse_trace(raw, steps, {i: convs[i].weight.size for i in trainable}, g.head.classes,
                               g.head.features)
    for s, rec in enumerate(records):
        if s % per_epoch == 0:
            trainer.epoch_begin()
        res = trainer.train_step(images[s], int(labels[s]))
        sel = rec.selection.tolist()
        if sel != trainer.selection:
            return TrainResult(False, s, f"step {s}: selection differs: C {len(sel)} channels {sel[:8]}..., "
                                         f"reference {len(trainer.selection)} channels {trainer.selection[:8]}...")
        for i in trainable:
            conv = convs[i]
            want = c_weight(dataclasses.replace(conv, weight=trainer.weights[conv.name]))
            got = rec.weights[i].reshape(want.shape)
            where = first_difference(got, want)
            if where is not None:
                return TrainResult(False, s, f"step {s}: layer {i} ({conv.name}) weight index {where} "
                                             f"(C layout {conv.kind}): C {int(got[where])} != reference {int(want[where])}")
        for name, got, want in (("head weight", rec.head_weight, trainer.head_w),
                                ("head bias", rec.head_bias, trainer.head_b)):
            where = first_difference(got.view(np.int32), want.view(np.int32))
            if where is not None:
                return TrainResult(False, s, f"step {s}: {name} {where}: C {got[where]!r} != reference {want[where]!r}")
        loss, logits = float(rec.loss), rec.logits
        where = first_difference(logits.view(np.int32), res.logits.view(np.int32))
        if where is not None:
            return TrainResult(False, s, f"step {s}: logit {where}: C {logits[where]!r} != reference {res.logits[where]!r}")
        if abs(loss - res.loss) > loss_rtol * max(1.0, abs(res.loss)):
            return TrainResult(False, s, f"step {s}: loss C {loss!r} != reference {res.loss!r} (rtol {loss_rtol})")
    changed = sum(int((trainer.weights[convs[i].name] != convs[i].weight).sum()) for i in trainable)
    return TrainResult(True, steps, f"{steps} training steps ({-(-steps // per_epoch)} epochs, strategy "
                                    f"{spec.pool.strategy}, {spec.weight_home} weight home, accumulate {spec.accumulate}): identical "
                                    f"selections, int8 weights ({changed:,} changed), "
                                    f"head and logits bit-identical, loss within {loss_rtol:g}")
