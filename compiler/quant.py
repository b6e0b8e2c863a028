"""Stage 3, quantisation helpers: real scales -> (multiplier, shift), and the integer primitives.

Copied in behaviour (not code) from TensorFlow Lite: `QuantizeMultiplier`,
`SaturatingRoundingDoublingHighMul`, `RoundingDivideByPOT` and the double-rounding
`MultiplyByQuantizedMultiplier` (SPEC 4). Scalar versions work on Python ints and are the
readable definition; the `*_t` versions are the same arithmetic on int64 torch tensors, used by
the reference executor. Scales are float32 as in a .tflite file; products are taken in double.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from compiler.errors import TradyError
from compiler.ir import Conv, Tensor

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
ADD_LEFT_SHIFT = 20  # TFLite int8 ADD


def f32(x: float) -> float:
    """A scale as a .tflite flatbuffer stores it (float32), back in double."""
    return float(np.float32(x))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: real = m * 2^(shift - 31), m in [2^30, 2^31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))  # std::round
    assert abs(q_fixed) <= 1 << 31
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise TradyError(f"requantisation multiplier {real} is too large for int32 arithmetic")
    return q_fixed, shift


def wrap32(x: int) -> int:
    """Two's complement wrap to int32 (what int32 arithmetic in TFLite/CMSIS does)."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def srdhm(a: int, b: int) -> int:
    """SaturatingRoundingDoublingHighMul: (a * b + nudge) / 2^31 truncated, saturating (gemmlowp).

    Positive ties round up; negative exact ties round toward zero (the nudge is 1 - 2^30).
    """
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    q = abs(v) >> 31  # C integer division truncates toward zero
    return q if v >= 0 else -q


def rdbpot(x: int, exponent: int) -> int:
    """RoundingDivideByPOT: x / 2^exponent rounded half away from zero."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier, double rounding; the left shift wraps in int32 as in C."""
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot(srdhm(wrap32(x << left), multiplier), right)


def wrap32_t(x: torch.Tensor) -> torch.Tensor:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def mbqm_t(x: torch.Tensor, multiplier: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """`mbqm` on int64 tensors holding int32 values; multiplier/shift broadcast against x."""
    left = shift.clamp(min=0)
    right = (-shift).clamp(min=0)
    xs = wrap32_t(torch.bitwise_left_shift(x, left))
    ab = xs * multiplier
    nudge = torch.where(ab >= 0, torch.tensor(1 << 30), torch.tensor(1 - (1 << 30)))
    high = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")
    high = torch.where((xs == INT32_MIN) & (multiplier == INT32_MIN), torch.tensor(INT32_MAX), high)
    mask = torch.bitwise_left_shift(torch.ones_like(right), right) - 1
    remainder = high & mask
    threshold = torch.bitwise_right_shift(mask, 1) + (high < 0).long()
    return torch.bitwise_right_shift(high, right) + (remainder > threshold).long()


@dataclass(frozen=True, eq=False)
class ConvQuant:
    """Per-output-channel requantisation of a conv (TFLM PopulateConvolutionQuantizationParams)."""

    multiplier: np.ndarray  # int32 [O]
    shift: np.ndarray  # int32 [O], positive = left shift
    input_offset: int  # = -x_zero
    output_offset: int  # = +y_zero


def conv_quant(conv: Conv, x: Tensor, y: Tensor) -> ConvQuant:
    xs, ys = f32(x.scale), f32(y.scale)
    pairs = [quantize_multiplier(xs * float(ws) / ys) for ws in conv.w_scales]
    return ConvQuant(np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32),
                     -x.zero, y.zero)


@dataclass(frozen=True, eq=False)
class AddQuant:
    """TFLite int8 ADD parameters (add.cc CalculateOpData)."""

    input1_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_offset: int
    input2_multiplier: int
    input2_shift: int
    output_offset: int
    output_multiplier: int
    output_shift: int
    left_shift: int = ADD_LEFT_SHIFT


def add_quant(a: Tensor, b: Tensor, y: Tensor) -> AddQuant:
    sa, sb, sy = f32(a.scale), f32(b.scale), f32(y.scale)
    twice_max = 2 * max(sa, sb)
    m1, s1 = quantize_multiplier(sa / twice_max)
    m2, s2 = quantize_multiplier(sb / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * sy))
    for s, what in ((s1, "input1"), (s2, "input2"), (so, "output")):
        if s > 0:
            raise TradyError(f"add of {a.name} and {b.name}: {what} multiplier must be < 1 "
                             "(TFLite QuantizeMultiplierSmallerThanOneExp)")
    return AddQuant(-a.zero, m1, s1, -b.zero, m2, s2, y.zero, mo, so)


def prepare(graph) -> dict[str, ConvQuant | AddQuant]:
    """Everything knowable before running: the requantisation parameters of every op, by op name."""
    from compiler.ir import Add  # local: ir imports nothing from here

    t = graph.tensors
    out: dict[str, ConvQuant | AddQuant] = {}
    for op in graph.ops:
        if isinstance(op, Conv):
            out[op.name] = conv_quant(op, t[op.input], t[op.output])
        elif isinstance(op, Add):
            out[op.name] = add_quant(t[op.inputs[0]], t[op.inputs[1]], t[op.output])
    return out
