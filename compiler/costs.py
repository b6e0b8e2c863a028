"""Stage 4, costs: `ir.Graph` -> per-layer shapes, MACs and TraDy update costs (SPEC 6).

For input channel c of a conv: C_W = C_out * K * K (dense) or K * K (depthwise) weight slots,
C_A = H * W slots of the layer's input map. Updating a channel costs C_W + C_A units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compiler.ir import Conv, Graph


@dataclass(frozen=True)
class LayerCost:
    index: int  # conv index in forward order, classifier excluded (as SPEC 7.1 counts)
    name: str
    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int
    stride: int
    macs: int
    c_w: int  # weight slots per input channel
    c_a: int  # activation slots per input channel
    in_channels: int
    dead_in_channels: tuple[int, ...]  # input channels fed by a dead channel of the producer

    @property
    def units(self) -> int:
        """C_W + C_A summed over all input channels."""
        return (self.c_w + self.c_a) * self.in_channels

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "kind": self.kind, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape), "kernel": self.kernel, "stride": self.stride,
                "macs": self.macs, "C_W": self.c_w, "C_A": self.c_a, "in_channels": self.in_channels,
                "units": self.units, "dead_in_channels": list(self.dead_in_channels)}


def macs(conv: Conv, out_shape: tuple[int, int, int]) -> int:
    ho, wo, co = out_shape
    per_out = conv.kernel * conv.kernel * (1 if conv.depthwise else conv.in_channels)
    return ho * wo * co * per_out


def dead_inputs(graph: Graph, conv: Conv) -> tuple[int, ...]:
    """Input channels of `conv` whose producer channel is dead (a residual add revives them)."""
    prod = graph.producer(conv.input)
    if isinstance(prod, Conv):
        return tuple(int(i) for i in np.flatnonzero(prod.dead))
    return ()


def layer_costs(graph: Graph) -> list[LayerCost]:
    out = []
    for i, conv in enumerate(graph.convs):
        x, y = graph.tensors[conv.input], graph.tensors[conv.output]
        c_w = conv.kernel * conv.kernel * (1 if conv.depthwise else conv.out_channels)
        out.append(LayerCost(i, conv.name, conv.kind, x.shape, y.shape, conv.kernel, conv.stride, macs(conv, y.shape),
                             c_w, x.shape[0] * x.shape[1], conv.in_channels, dead_inputs(graph, conv)))
    return out


def total_units(graph: Graph) -> int:
    return sum(c.units for c in layer_costs(graph))
