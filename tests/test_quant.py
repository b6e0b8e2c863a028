"""Quantisation helpers (compiler/quant.py) against TFLite's definitions, with hand-computed values.

Expectations are written out independently: hand arithmetic in the comments, or an exact
rational-arithmetic model of TFLite's QuantizeMultiplier (fractions.Fraction), never just the
code under test run twice. The vectorised torch versions are then checked against the scalar ones
on many seeded random cases (hypothesis is not installed in .venv, so seeded numpy).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from compiler import quant, reference
from compiler.errors import TradyError
from compiler.ir import Conv, Tensor

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def qm_exact(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier in exact rational arithmetic (the model the tests trust).

    real = q * 2^e with q in [0.5, 1); m = round(q * 2^31) half away from zero; m == 2^31 gives
    (2^30, e + 1); e < -31 gives (0, 0).
    """
    if real == 0:
        return 0, 0
    r = Fraction(real)
    e = r.numerator.bit_length() - r.denominator.bit_length()
    while r / Fraction(2) ** e >= 1:
        e += 1
    while r / Fraction(2) ** e < Fraction(1, 2):
        e -= 1
    m = math.floor(r / Fraction(2) ** e * (1 << 31) + Fraction(1, 2))
    if m == 1 << 31:
        m, e = 1 << 30, e + 1
    if e < -31:
        return 0, 0
    return m, e


# QuantizeMultiplier ---------------------------------------------------------------------------


@pytest.mark.parametrize(("real", "expected"), [
    (0.0, (0, 0)),
    (1.0, (1 << 30, 1)),  # 1.0 = 0.5 * 2^1
    (0.5, (1 << 30, 0)),
    (0.25, (1 << 30, -1)),
    (2.0 ** 29, (1 << 30, 30)),  # the largest power of two a shift of 30 can express
    (2.0 ** -31, (1 << 30, -30)),
    (2.0 ** -32, (1 << 30, -31)),  # the smallest shift kept
    (2.0 ** -33, (0, 0)),  # shift -32 < -31: all bits would be shifted out
    (0.75, (1610612736, 0)),  # 0.75 * 2^31
    (1 / 3, (1431655765, -1)),  # frexp = (2/3, -1); 2/3 * 2^31 = 1431655765.33 -> 1431655765
    (0.1, (1717986918, -3)),  # frexp = (0.8, -3); 0.8 * 2^31 = 1717986918.4
    (1.0 - 2.0 ** -31, (INT32_MAX, 0)),  # q * 2^31 = 2^31 - 1 exactly: no bump
    (1.0 - 2.0 ** -32, (1 << 30, 1)),  # q * 2^31 = 2^31 - 0.5: the tie rounds up to 2^31, halve, shift + 1
    (1.0 - 2.0 ** -33, (1 << 30, 1)),  # q * 2^31 = 2^31 - 0.25 rounds to 2^31: halve and bump
    (0.5 - 2.0 ** -34, (1 << 30, 0)),  # the same bump one octave lower
    (2.0 ** -32 * (1 - 2.0 ** -34), (1 << 30, -31)),  # frexp exponent -32, rounding bumps it back to -31
    (2.0 ** -33 * (1 - 2.0 ** -34), (0, 0)),  # bumped to -32: still too small
    (5e-324, (0, 0)),  # the smallest subnormal double
    (1e-300, (0, 0)),
])
def test_quantize_multiplier_hand_values(real, expected):
    assert quant.quantize_multiplier(real) == expected
    assert qm_exact(real) == expected  # and the exact model agrees, so it is fit to judge random values


@pytest.mark.parametrize("real", [2.0 ** 30, 1e10, 2.0 ** 30 * (1 - 2.0 ** -40), float(2 ** 31 - 1)])
def test_quantize_multiplier_too_large_is_refused(real):
    """A shift above 30 cannot be applied to an int32 accumulator: refused, not wrapped."""
    with pytest.raises(TradyError, match="too large"):
        quant.quantize_multiplier(real)


def test_quantize_multiplier_matches_exact_model_on_random_scales():
    """Random doubles over 70 octaves, and float32 scale products as conv_quant forms them."""
    rng = np.random.default_rng(20240611)
    reals = list(np.exp2(rng.uniform(-40, 29.9, 4000)))
    reals += [float(np.float32(a)) * float(np.float32(b)) / float(np.float32(c))
              for a, b, c in rng.uniform(1e-4, 1.0, (4000, 3))]
    # Values right at the rounding boundary q * 2^31 = n + 1/2 (exactly representable ties).
    reals += [(n + 0.5) / 2.0 ** 31 * 2.0 ** e for n, e in zip(rng.integers(1 << 30, 1 << 31, 500),
                                                               rng.integers(-30, 28, 500), strict=True)]
    for real in reals:
        real = float(real)
        assert quant.quantize_multiplier(real) == qm_exact(real), f"real = {real!r}"


def test_float32_rounded_scales():
    """Scales are float32 as a .tflite stores them; the real multiplier is then formed in double.

    f32(2/255) = 8421505 * 2^-30 (2^31/255 = 8421504.502 rounds up), so its multiplier is
    8421505 * 2^7 = 1077952640 exactly, where the double 2/255 gives round(2^38/255) = 1077952576.
    """
    assert quant.f32(2 / 255) == 8421505 * 2.0 ** -30
    assert quant.quantize_multiplier(quant.f32(2 / 255)) == (1077952640, -6)
    assert quant.quantize_multiplier(2 / 255) == (1077952576, -6)
    assert quant.f32(0.1) == 13421773 * 2.0 ** -27  # 0.100000001490116...
    # conv_quant takes the float32 scales: x_scale 2/255, w_scale 0.01 (float32), y_scale 0.05.
    conv = Conv("c", "pointwise", "x", "y", np.ones((2, 1, 1, 1), np.int8), np.zeros(2, np.int32),
                np.array([0.01, 4e-9], np.float32), 1)
    q = quant.conv_quant(conv, Tensor("x", (1, 1, 1), 2 / 255, 0), Tensor("y", (1, 1, 2), 0.05, -128))
    expect = [qm_exact(quant.f32(2 / 255) * float(np.float32(ws)) / quant.f32(0.05)) for ws in (0.01, 4e-9)]
    assert list(zip(q.multiplier.tolist(), q.shift.tolist(), strict=True)) == expect
    assert expect[0] != qm_exact(2 / 255 * 0.01 / 0.05)  # the float32 rounding is visible
    assert q.multiplier.dtype == np.int32 and q.shift.dtype == np.int32
    assert (q.input_offset, q.output_offset) == (0, -128)


# SaturatingRoundingDoublingHighMul ------------------------------------------------------------


@pytest.mark.parametrize(("a", "b", "expected"), [
    (INT32_MIN, INT32_MIN, INT32_MAX),  # the one product that overflows: saturates
    (INT32_MIN, INT32_MAX, -INT32_MAX),  # -2^31 (2^31 - 1) / 2^31 = -(2^31 - 1) exactly
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),  # (2^31-1)^2 / 2^31 = 2^31 - 2 + 2^-31 -> 2^31 - 2
    (INT32_MIN, 1 << 30, -(1 << 30)),
    (0, INT32_MIN, 0),
    (3, 1 << 30, 2),  # 1.5 -> 2 (tie, positive: away from zero)
    (1, 1 << 30, 1),  # 0.5 -> 1
    (5, 1 << 30, 3),  # 2.5 -> 3
    (-3, 1 << 30, -1),  # -1.5 -> -1: gemmlowp's nudge 1 - 2^30 then truncation sends negative ties up
    (-1, 1 << 30, 0),  # -0.5 -> 0
    (-5, 1 << 30, -2),  # -2.5 -> -2
    (-(1 << 30) - 1, 1 << 30, -(1 << 29)),  # -(2^29 + 0.5) -> -2^29 (negative tie toward zero)
    (100, 1431655765, 67),  # 66.666... -> 67
    (-100, 1431655765, -67),  # -66.666... -> -67 (not a tie: nearest)
    (7, -(1 << 30), -3),  # negative multiplier, product -3.5 -> -3
])
def test_srdhm_hand_values(a, b, expected):
    """round(a * b / 2^31) as gemmlowp / TFLite compute it.

    Ties: positive products round away from zero, negative ones toward zero (the nudge is
    1 - 2^30 and C division truncates: -1.5 * 2^31 + 1 - 2^30 = -2^32 + 1, which truncates to -1).
    This is TFLite's behaviour, which SPEC 4 requires; it is not 'ties away from zero' for
    negative products, whatever a docstring may say.
    """
    assert quant.srdhm(a, b) == expected


# RoundingDivideByPOT ---------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "exponent", "expected"), [
    (5, 0, 5), (-5, 0, -5), (INT32_MIN, 0, INT32_MIN), (INT32_MAX, 0, INT32_MAX),  # exponent 0: identity
    (3, 1, 2), (-3, 1, -2),  # +-1.5 -> +-2: ties away from zero, both signs
    (1, 1, 1), (-1, 1, -1),  # +-0.5 -> +-1
    (-5, 2, -1), (-6, 2, -2), (-7, 2, -2), (5, 2, 1), (6, 2, 2),  # -1.25, -1.5, -1.75, 1.25, 1.5
    (-10, 2, -3), (10, 2, 3),  # +-2.5 -> +-3
    (INT32_MIN, 31, -1), (INT32_MAX, 31, 1),  # exponent 31: -1.0 and 0.99999...
    (1 << 30, 31, 1), (-(1 << 30), 31, -1),  # +-0.5 at exponent 31
    ((1 << 30) - 1, 31, 0), (-(1 << 30) + 1, 31, 0),  # just below the ties
    (INT32_MIN, 30, -2), (INT32_MAX, 30, 2),
])
def test_rdbpot_hand_values(x, exponent, expected):
    assert quant.rdbpot(x, exponent) == expected


# MultiplyByQuantizedMultiplier ----------------------------------------------------------------


@pytest.mark.parametrize(("x", "m", "s", "expected"), [
    (100, 1431655765, -1, 34),  # srdhm -> 67 (66.67), then 67 / 2 = 33.5 -> 34; single rounding gives 33
    (-100, 1431655765, -1, -34),  # srdhm -> -67, then -33.5 -> -34
    (12345, 1 << 30, 1, 12345),  # real 1.0 is the identity
    (-12345, 1 << 30, 1, -12345),
    (3, 1 << 30, 2, 6),  # real 2.0: 3 << 2 = 12, srdhm(12, 2^30) = 6
    (1 << 29, 1 << 30, 1, 1 << 29),
    (1 << 30, 1 << 30, 1, -(1 << 30)),  # 2^30 << 1 wraps to -2^31 (TFLite's int32 multiply), * 0.5
    ((1 << 30) + 5, 1 << 30, 2, 10),  # (2^30 + 5) * 4 = 2^32 + 20 wraps to 20; 20 * 0.5 = 10
    (INT32_MAX, INT32_MAX, 0, INT32_MAX - 1),
    (INT32_MIN, 1 << 30, -31, -1),  # srdhm = -2^30 exactly; -2^30 / 2^31 = -0.5 -> -1 (away from zero)
    (1000, 0, 0, 0),  # multiplier 0 (QuantizeMultiplier of a tiny scale)
    (7, 1 << 30, -1, 2),  # srdhm(7, 2^30) = 3.5 -> 4; 4 / 2 = 2
    (-7, 1 << 30, -1, -2),  # srdhm(-7, 2^30) = -3.5 -> -3 (negative tie goes up); -3 / 2 = -1.5 -> -2
])
def test_mbqm_hand_values(x, m, s, expected):
    assert quant.mbqm(x, m, s) == expected


def test_mbqm_is_double_rounding_not_single():
    """SPEC 4: never the single-rounding variant. Over x in [-300, 300] with real = 1/3 the two differ
    somewhere, and mbqm always gives the double-rounded value."""
    m, s = 1431655765, -1  # real = m * 2^(s - 31)
    diffs = 0
    for x in range(-300, 301):
        exact = Fraction(x * m, 1 << (31 - s))
        single = int(math.copysign(math.floor(abs(exact) + Fraction(1, 2)), x))
        double_ = quant.rdbpot(quant.srdhm(x, m), -s)
        assert quant.mbqm(x, m, s) == double_
        diffs += double_ != single
    assert diffs > 0


# Vectorised versions ------------------------------------------------------------------------


def _random_cases(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    edge_x = np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30), -7, -3, -1, 0, 1, 3, 7, 1 << 30, INT32_MAX])
    edge_m = np.array([0, 1 << 30, (1 << 30) + 1, INT32_MAX])
    ex, em = np.meshgrid(edge_x, edge_m)
    x = np.concatenate([ex.ravel(), rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True),
                        rng.integers(-70000, 70000, n), rng.integers(-64, 64, n)])
    m = np.concatenate([em.ravel(), rng.integers(1 << 30, 1 << 31, 3 * n)])
    m[-n // 2:] = 1 << 30  # tie-heavy
    s = rng.integers(-31, 31, x.size)
    s[: ex.size] = np.resize(np.array([-31, -1, 0, 1, 30]), ex.size)
    return x.astype(np.int64), m.astype(np.int64), s.astype(np.int64)


@pytest.mark.parametrize("seed", range(4))
def test_mbqm_t_equals_scalar(seed):
    x, m, s = _random_cases(seed, 3000)
    got = quant.mbqm_t(torch.from_numpy(x), torch.from_numpy(m), torch.from_numpy(s)).numpy()
    want = np.array([quant.mbqm(int(a), int(b), int(c)) for a, b, c in zip(x, m, s, strict=True)])
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} differ; first x={x[bad[0]]}, m={m[bad[0]]}, s={s[bad[0]]}: "
                           f"mbqm_t {got[bad[0]]}, mbqm {want[bad[0]]}")
    assert np.all((want >= INT32_MIN) & (want <= INT32_MAX))


def test_mbqm_t_srdhm_saturation_and_broadcast():
    """shift 0 makes mbqm = srdhm: the INT32_MIN * INT32_MIN case saturates in the vector form too;
    per-channel multiplier/shift broadcast over an NCHW accumulator as the reference uses them."""
    x = torch.tensor([INT32_MIN, INT32_MIN, INT32_MAX, -3], dtype=torch.int64)
    m = torch.tensor([INT32_MIN, INT32_MAX, INT32_MIN, 1 << 30], dtype=torch.int64)
    got = quant.mbqm_t(x, m, torch.zeros(4, dtype=torch.int64)).tolist()
    assert got == [INT32_MAX, -INT32_MAX, -INT32_MAX, -1]
    rng = np.random.default_rng(5)
    acc = rng.integers(-(1 << 24), 1 << 24, (2, 3, 4, 5))
    mult = rng.integers(1 << 30, 1 << 31, 3)
    shift = np.array([-9, 0, 2])
    got = quant.mbqm_t(torch.from_numpy(acc), torch.from_numpy(mult).view(1, 3, 1, 1),
                       torch.from_numpy(shift).view(1, 3, 1, 1)).numpy()
    want = np.vectorize(quant.mbqm)(acc, mult.reshape(1, 3, 1, 1), shift.reshape(1, 3, 1, 1))
    assert np.array_equal(got, want)


def test_wrap32():
    assert quant.wrap32(1 << 31) == INT32_MIN
    assert quant.wrap32(INT32_MIN - 1) == INT32_MAX
    assert quant.wrap32(-1) == -1 and quant.wrap32((1 << 32) + 5) == 5
    t = torch.tensor([1 << 31, INT32_MIN - 1, -1, (1 << 32) + 5, INT32_MIN + INT32_MIN], dtype=torch.int64)
    assert quant.wrap32_t(t).tolist() == [INT32_MIN, INT32_MAX, -1, 5, 0]


# TFLite ADD parameters -----------------------------------------------------------------------


def test_add_quant_tflite_parameters():
    """add.cc: twice_max = 2 max(s1, s2); inputs s_i / twice_max; output twice_max / (2^20 s_out)."""
    a, b, y = Tensor("a", (1, 1, 1), 0.5, 3), Tensor("b", (1, 1, 1), 0.25, -4), Tensor("y", (1, 1, 1), 1.0, 7)
    q = quant.add_quant(a, b, y)
    assert (q.input1_offset, q.input2_offset, q.output_offset, q.left_shift) == (-3, 4, 7, 20)
    assert (q.input1_multiplier, q.input1_shift) == (1 << 30, 0)  # 0.5 / 1.0
    assert (q.input2_multiplier, q.input2_shift) == (1 << 30, -1)  # 0.25 / 1.0
    assert (q.output_multiplier, q.output_shift) == (1 << 30, -19)  # 1.0 / 2^20 = 0.5 * 2^-19
    # 3 * 0.5 + 2 * 0.25 = 2.0 in real terms -> q = 2 + 7
    one = torch.ones((), dtype=torch.int64)
    out = reference.add_s8(one * (3 + 3), one * (2 - 4), q)
    assert int(out) == 9


def test_add_quant_refuses_an_output_multiplier_above_one():
    a, b = Tensor("a", (1, 1, 1), 1.0, 0), Tensor("b", (1, 1, 1), 1.0, 0)
    with pytest.raises(TradyError, match="output"):
        quant.add_quant(a, b, Tensor("y", (1, 1, 1), 1e-7, 0))
