"""Stage 5, memory planning: buffer requests with lifetimes -> offsets in one static arena.

A request lives from the step that writes it to the last step that reads it (inclusive); two
requests may share bytes only when their lifetimes do not intersect. Placement is greedy like
TFLite Micro's GreedyMemoryPlanner: largest first, each at the lowest aligned offset that clears
every already placed buffer it is live with. A request may name `alias_of` to be computed in
place over another buffer (an elementwise op overwriting an input it reads last): the pair gets
one offset and the union of the two lifetimes.

The steps are any schedule (the forward ops now; forward + backward + update later), so the
planner does not know what an op is.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.ir import Add, Graph


@dataclass(frozen=True)
class BufferRequest:
    name: str
    size: int  # bytes
    first: int  # step that writes it
    last: int  # last step that reads it
    alias_of: str | None = None


@dataclass(frozen=True)
class Placement:
    name: str
    offset: int
    size: int
    first: int
    last: int


@dataclass(frozen=True)
class Plan:
    placements: tuple[Placement, ...]
    arena_size: int

    def offset(self, name: str) -> int:
        return self.by_name()[name].offset

    def by_name(self) -> dict[str, Placement]:
        return {p.name: p for p in self.placements}


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def plan(requests: list[BufferRequest], align: int = 4) -> Plan:
    """Place every request; aliased requests share their target's offset."""
    by_name = {r.name: r for r in requests}
    if len(by_name) != len(requests):
        raise ValueError("duplicate buffer names in plan requests")
    root = {}
    for r in requests:
        target = r
        while target.alias_of is not None:
            if target.alias_of not in by_name:
                raise ValueError(f"buffer {r.name} aliases unknown buffer {target.alias_of}")
            target = by_name[target.alias_of]
        root[r.name] = target.name
    groups: dict[str, list[BufferRequest]] = {}
    for r in requests:
        groups.setdefault(root[r.name], []).append(r)
    merged = [(name, max(r.size for r in g), min(r.first for r in g), max(r.last for r in g))
              for name, g in groups.items()]
    merged.sort(key=lambda m: (-m[1], m[2], m[0]))
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    offsets: dict[str, int] = {}
    for name, size, first, last in merged:
        live = sorted((o, s) for o, s, f, la in placed if f <= last and first <= la)
        offset = 0
        for o, s in live:
            if offset + size <= o:
                break
            offset = max(offset, _align(o + s, align))
        offsets[name] = offset
        placed.append((offset, size, first, last))
    arena = max((o + s for o, s, _, _ in placed), default=0)
    placements = tuple(Placement(r.name, offsets[root[r.name]], r.size, r.first, r.last) for r in requests)
    return Plan(placements, _align(arena, align))


def forward_requests(graph: Graph) -> list[BufferRequest]:
    """One request per activation tensor over the forward schedule (step i = op i).

    The input is written before step 0; the head reads the pooled features after the last op.
    A residual add runs in place over an input it reads for the last time.
    """
    n = len(graph.ops)
    first = {graph.input: 0}
    last: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        first[op.output] = i
        for name in op.inputs if isinstance(op, Add) else (op.input,):
            last[name] = i
    last[graph.head.input] = n
    alias: dict[str, str] = {}
    for i, op in enumerate(graph.ops):
        if isinstance(op, Add):
            for name in op.inputs:
                if last[name] == i and name not in alias.values():
                    alias[op.output] = name
                    break
    return [BufferRequest(name, t.size, first[name], last.get(name, first[name]), alias.get(name))
            for name, t in graph.tensors.items()]


def _consumers(graph: Graph) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        for name in op.inputs if isinstance(op, Add) else (op.input,):
            out.setdefault(name, []).append(i)
    return out


def grad_tensors(graph: Graph, first_op: int) -> list[str]:
    """Tensors that carry a gradient when backward may reach op `first_op`: produced at or after it."""
    producer = graph.producer_indices()
    return [name for name in graph.tensors if producer[name] >= first_op]


def training_requests(graph: Graph, first_op: int) -> list[BufferRequest]:
    """Forward requests plus the backward's fp32 gradients and int16 quantised conv gradients.

    Schedule: forward op i at step i, the head (forward and backward) at step n, the backward of
    op k at step 2n - k. Backward buffers therefore reuse the bytes of forward activations,
    which are all dead by step n (saved inputs and masks live outside this arena).
    """
    from compiler.ir import Conv

    n = len(graph.ops)
    reqs = forward_requests(graph)
    if first_op >= n:
        return reqs
    producer = graph.producer_indices()
    consumers = _consumers(graph)
    for name in grad_tensors(graph, first_op):
        first = n if name == graph.head.input else 2 * n - max(consumers[name])
        reqs.append(BufferRequest(f"grad:{name}", 4 * graph.tensors[name].size, first, 2 * n - producer[name]))
    for k, op in enumerate(graph.ops):
        if k >= first_op and isinstance(op, Conv):
            reqs.append(BufferRequest(f"gradq:{op.name}", 2 * graph.tensors[op.output].size, 2 * n - k, 2 * n - k))
    return reqs
