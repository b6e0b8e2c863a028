"""Verification: the host C build and the reference executor side by side on real images.

`compare_forward` checks every op output bit for bit and the fp32 logits bit for bit (the head
sums in the same order in both), and names the first difference: op, image, (h, w, c), both values.
"""

from __future__ import annotations

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


def compare_forward(project: Project, exe, images: np.ndarray, batch: int = 32) -> ForwardResult:
    g = project.graph
    op_sizes = [g.tensors[op.output].size for op in g.ops]
    c_outs, c_logits = host.run_forward(exe, images, op_sizes, g.head.classes)
    values = 0
    for start in range(0, len(images), batch):
        ref, ref_logits = reference.forward(g, images[start:start + batch], project.quant)
        for i, op in enumerate(g.ops):
            shape = g.tensors[op.output].shape
            r = ref[op.output]
            c = c_outs[i][start:start + batch].reshape((-1, *shape))
            values += r.size
            where = first_difference(c, r)
            if where is not None:
                img, hh, ww, cc = where
                return ForwardResult(False, len(g.ops), len(images), values,
                                     f"op {i} ({op.name}) image {start + img} at (h={hh}, w={ww}, c={cc}): "
                                     f"C {int(c[where])} != reference {int(r[where])}")
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
