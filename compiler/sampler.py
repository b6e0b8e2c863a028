"""Stage 4b, selection: graph + strategy + TopK -> the sampling pool, and the TraDy sampler (SPEC 7).

The pool is the list of (conv index, input channel) pairs that may be updated, in forward order
of layers and ascending channel order. Left out: input channels that are constant because the
producer's channel is dead, and (depthwise) channels that are dead themselves; dead output rows
of a dense slice are never written (their QAS factor is 0). Each epoch the sampler draws pool
entries uniformly without replacement (a bitset marks drawn entries, rejected redraws do not
count), accepts an entry if its cost C_W + C_A fits the remaining budget, and stops when the
pool is exhausted or the remaining budget is below the cheapest entry. The selection is the
accepted entries in pool order. The C twin is runtime_c/tt_sampler.c; both use compiler/prng.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.costs import LayerCost, layer_costs
from compiler.errors import TradyError
from compiler.ir import Graph
from compiler.prng import STREAM_SAMPLER, XorShift32

STRATEGIES = ("trady", "static-topk", "dynamic-full", "static-full", "su", "head-only")

# SPEC 7.1: tiny-training's sparse-update schemes: name -> (n_bias, conv indices, ratios).
SU_SCHEMES: dict[str, dict[str, tuple[int, tuple[int, ...], tuple[float, ...]]]] = {
    "mcunet-5fps": {
        "49kb": (20, (23, 24, 27, 30, 33, 39), (0, .25, .5, .5, 0, 0)),
        "74kb": (21, (21, 23, 24, 26, 27, 30), (1, 0, 1, 0, .5, 1)),
        "99kb": (22, (21, 24, 27, 30, 36, 39), (1, 1, 1, 1, .125, .25)),
        "124kb": (24, (21, 24, 27, 30, 33, 39), (.25, 1, 1, 1, .5, .5)),
        "148kb": (23, (21, 24, 27, 30, 36, 39), (1, 1, 1, 1, 1, .5)),
    },
    "mbv2-w0.35": {
        "49kb": (16, (36, 39, 40, 41, 42, 45, 48, 49), (1, 1, 0, .25, .125, .125, .125, .125)),
        "73kb": (20, (32, 33, 36, 39, 41, 42, 45, 48), (.125, .5, .5, 1, .25, .125, .125, 1)),
        "99kb": (25, (27, 30, 33, 36, 39, 42, 45, 48), (1, 1, 1, 1, 1, .125, .5, 1)),
        "123kb": (31, (27, 30, 33, 36, 39, 42, 45, 48), (1, 1, 1, 1, 1, .5, 1, 1)),
        "138kb": (34, (27, 30, 33, 36, 39, 42, 45, 48), (1, 1, 1, 1, 1, 1, 1, 1)),
    },
    "proxyless-w0.3": {
        "49kb": (21, (39, 42, 44, 45, 50, 51, 54, 57), (.25, 1, 0, 1, 0, .125, .25, .25)),
        "74kb": (28, (33, 36, 39, 42, 45, 51, 54, 57), (.5, .25, 1, 1, 1, .5, .25, .5)),
        "98kb": (25, (36, 39, 42, 45, 48, 51, 54, 57), (1, .5, 1, 1, .25, .5, 1, 1)),
        "120kb": (32, (36, 39, 42, 45, 48, 51, 54, 57), (1, 1, 1, 1, .5, 1, 1, 1)),
        "148kb": (45, (36, 39, 42, 45, 48, 51, 54, 57), (1, 1, 1, 1, 1, 1, 1, 1)),
    },
}


@dataclass(frozen=True, eq=False)
class Pool:
    strategy: str
    layers: tuple[int, ...]  # conv indices whose channels are in the pool, ascending
    entry_layer: np.ndarray  # uint16 [P] conv index of each entry
    entry_channel: np.ndarray  # uint16 [P] input channel of each entry
    layer_cost: tuple[int, ...]  # C_W + C_A per conv index (all convs)
    fixed: tuple[int, ...] | None = None  # su: the fixed selection (pool indices)
    note: str = ""

    @property
    def size(self) -> int:
        return int(self.entry_layer.size)

    @property
    def dynamic(self) -> bool:
        return self.strategy in ("trady", "dynamic-full")

    def cost(self, i: int) -> int:
        return self.layer_cost[int(self.entry_layer[i])]

    def min_cost(self) -> int:
        return min((self.layer_cost[i] for i in self.layers), default=0)


def read_topk(path: Path, graph: Graph) -> list[str]:
    """Layer names of the top-K layers from a TopK file ({"k": K, "ranking": [...]}, SPEC 6)."""
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise TradyError(f"{path}: unreadable TopK file ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("ranking"), list):
        raise TradyError(f"{path}: expected a JSON object with a 'ranking' list")
    names = [r["layer"] if isinstance(r, dict) and "layer" in r else r for r in meta["ranking"]]
    k = meta.get("k", len(names))
    if not isinstance(k, int) or not 0 <= k <= len(names):
        raise TradyError(f"{path}: field k = {k!r}: expected an integer in 0..{len(names)}")
    known = {c.name for c in graph.convs}
    for n in names[:k]:
        if not isinstance(n, str) or n not in known:
            raise TradyError(f"{path}: ranking names layer {n!r}, which {graph.name} does not have")
    return names[:k]


def _eligible(graph: Graph, cost: LayerCost) -> list[int]:
    conv = graph.convs[cost.index]
    skip = set(cost.dead_in_channels)
    if conv.depthwise:
        skip |= {int(c) for c in np.flatnonzero(conv.dead)}
    return [c for c in range(cost.in_channels) if c not in skip]


def su_scheme(model: str, budget: int, costs: list[LayerCost]) -> tuple[str, tuple[int, ...], tuple[float, ...]]:
    schemes = SU_SCHEMES.get(model)
    if schemes is None:
        raise TradyError(f"--strategy su: no tiny-training scheme for model {model!r} "
                         f"(have {', '.join(SU_SCHEMES)})")

    def units(layers: tuple[int, ...], ratios: tuple[float, ...]) -> int:
        return sum(int(r * costs[i].in_channels) * (costs[i].c_w + costs[i].c_a) for i, r in zip(layers, ratios))

    sized = [(units(ly, ra), name, ly, ra) for name, (_, ly, ra) in schemes.items()]
    exact = [s for s in sized if s[0] == budget]
    fitting = sorted(s for s in sized if s[0] <= budget)
    if not exact and not fitting:
        raise TradyError(f"--strategy su --budget {budget}: the smallest {model} scheme needs "
                         f"{min(sized)[0]:,} units")
    _, name, ly, ra = (exact or fitting)[-1]
    return name, ly, ra


def build_pool(graph: Graph, strategy: str, topk: list[str] | None, budget: int) -> Pool:
    if strategy not in STRATEGIES:
        raise TradyError(f"--strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    costs = layer_costs(graph)
    layer_cost = tuple(c.c_w + c.c_a for c in costs)
    by_name = {c.name: c.index for c in costs}
    note = ""
    if strategy == "head-only":
        layers: list[int] = []
    elif strategy in ("trady", "static-topk") and topk is not None:
        layers = sorted(by_name[n] for n in topk)
    else:
        layers = [c.index for c in costs]
    fixed_pairs: list[tuple[int, int]] | None = None
    if strategy == "su":
        name, ly, ra = su_scheme(graph.name, budget, costs)
        fixed_pairs = []
        for i, r in zip(ly, ra):
            conv = graph.convs[i]
            w = conv.weight.astype(np.float64) * conv.w_scales.astype(np.float64)[:, None, None, None]
            norms = np.sqrt((w ** 2).sum(axis=(0, 2, 3)))
            ok = _eligible(graph, costs[i])
            n = int(r * costs[i].in_channels)
            best = sorted(ok, key=lambda c: (-norms[c], c))[:n]
            fixed_pairs += [(i, c) for c in sorted(best)]
        layers = sorted({i for i, _ in fixed_pairs})
        note = f"su scheme {name!r} ({sum(layer_cost[i] for i, _ in fixed_pairs):,} units)"
    ent_l, ent_c = [], []
    for i in layers:
        for c in _eligible(graph, costs[i]):
            ent_l.append(i)
            ent_c.append(c)
    entry_layer = np.array(ent_l, np.uint16)
    entry_channel = np.array(ent_c, np.uint16)
    fixed = None
    if fixed_pairs is not None:
        index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(entry_layer, entry_channel))}
        fixed = tuple(sorted(index[p] for p in fixed_pairs))
    return Pool(strategy, tuple(layers), entry_layer, entry_channel, layer_cost, fixed, note)


def select(pool: Pool, budget: int, rng: XorShift32) -> list[int]:
    """One epoch's draw (pool indices, ascending). Mirrors tt_sampler_select()."""
    p = pool.size
    drawn = np.zeros(p, bool)
    chosen = np.zeros(p, bool)
    remaining, n_drawn, cheapest = budget, 0, pool.min_cost()
    while n_drawn < p and remaining >= cheapest:
        r = rng.bounded(p)
        if drawn[r]:
            continue
        drawn[r] = True
        n_drawn += 1
        c = pool.cost(r)
        if c <= remaining:
            chosen[r] = True
            remaining -= c
    return [int(i) for i in np.flatnonzero(chosen)]


def max_selection(pool: Pool, budget: int) -> int:
    """Largest possible selection length (sizes the C selection list)."""
    if pool.fixed is not None:
        return len(pool.fixed)
    costs = sorted(pool.cost(i) for i in range(pool.size))
    n, total = 0, 0
    for c in costs:
        if total + c > budget:
            break
        total += c
        n += 1
    return n


class Sampler:
    """Per-epoch selection for every strategy (the Python twin of the generated epoch_begin)."""

    def __init__(self, pool: Pool, budget: int, seed: int):
        self.pool, self.budget = pool, budget
        self.rng = XorShift32(seed, STREAM_SAMPLER)
        self.selection: list[int] = []
        self.epochs = 0

    def epoch_begin(self) -> list[int]:
        if self.pool.fixed is not None:
            self.selection = list(self.pool.fixed)
        elif self.pool.size and (self.pool.dynamic or self.epochs == 0):
            self.selection = select(self.pool, self.budget, self.rng)
        self.epochs += 1
        return self.selection
