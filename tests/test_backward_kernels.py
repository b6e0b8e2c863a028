"""Training kernels (runtime_c/tt_train.c, tt_conv_bwd_s8.c) bit-exact against the per-kernel reference functions of
compiler/training.py, and the reference against PyTorch autograd.

A small C driver (tests/c/backward_driver.c) reads one case from a binary file, calls one kernel and
writes its status and outputs. It is built twice per session: with the host flags of SPEC 9
(-std=c99 -O2 -Wall -Wextra -Werror -ffp-contract=off) and with AddressSanitizer + UBSan (cases
marked `san` run under that build too). Every array the driver hands a kernel is allocated with
exactly its length, so an out-of-bounds read or write fails under the sanitizer build.

Comparisons: int8 weights, int8 residuals, int16 gradients and the PRNG state after a call (so the
number of draws matches) must be equal; every fp32 output is compared as int32 bit patterns, signed
zeros included. No signed-zero exception is needed: G holds -0.0 wherever a small negative g' rounds
to 0, but the reference's float64 sums over G (torch) come out +0.0 like the C's exact int64 sums.
The loss alone is compared within 4 ulp: C computes logf(sum) - (l - max) in fp32, the reference in
float64 (it is only reported; no weight depends on it).

Autograd (float64): g' = g * mask * M[o] is quantised as G = rint(g' / sigma) with
sigma = max|g'| / 32767, so each element carries |sigma G - g'| <= sigma / 2, plus at most 0.006 sigma
for the fp32 roundings of 32767 / max|g'|, of g' times it and of sigma itself: <= 0.51 sigma. Both
conv gradients are linear maps L of g', so elementwise |ref - autograd| <= 0.51 sigma (|L| 1), where
|L| 1 is the sum of the absolute coefficients feeding that element (sum |w| over the taps for the
input gradient, sum |A - x_zero| for the weight gradient), plus 2^-22 relative for the two fp32
roundings of sigma * S. The test asserts this bound element by element. Relative to the largest value
of the whole gradient tensor, random-signed rounding errors give about crest / (32767 sqrt(12)) ~ 1e-4
for a crest factor max|g'| / rms(g') <= 10 (rms over the non-zero elements, which alone carry rounding
errors; asserted), so max|ref - autograd| / max|autograd| < 1e-3 holds with a tenfold margin. Cases
with one huge value (crest ~ 1e5) get the elementwise bound only. One scale serves the whole tensor,
so a single depthwise slice whose M[c] is 100x below the largest is only good to ~1e-3 of its own
maximum (1.3e-3 measured): the 1e-3 is a property of the tensor, not of each slice.
The head gradient (softmax cross-entropy) is not quantised: tt_expf's relative error < 2e-7 and a few
fp32 roundings keep it within 1e-5 of autograd.

Two tests fail on purpose; they pin down bugs shared by the reference and the C
(test_grad_quantize_edge_cases[...tiny_max...] and
test_dead_channel_unchanged_when_the_weight_gradient_overflows; see their docstrings).
"""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from tt_support import (
    HOST_FLAGS,
    ROOT,
    SAN_FLAGS,
    assert_kernel_ok_in_qemu,
    build_driver,
    build_dsp_driver,
    first_mismatch,
)
from tt_support import Payload as _Payload

from compiler import training
from compiler.prng import STREAM_ROUNDING, XorShift32

F32 = np.float32
RUNTIME = ROOT / "runtime_c"
DRIVER_SRC = Path(__file__).resolve().parent / "c" / "backward_driver.c"
SOURCES = [DRIVER_SRC, RUNTIME / "tt_train.c", RUNTIME / "tt_conv_bwd_s8.c", RUNTIME / "tt_sampler.c"]
MAGIC = 0x42545454
(OP_MASK, OP_GRADQ, OP_CONV_BWD_IN, OP_DW_BWD_IN, OP_CONV_UPDATE, OP_DW_UPDATE, OP_WRITEBACK, OP_POOL_BWD,
 OP_ADD_BWD, OP_XENT, OP_FC_BWD) = range(1, 12)
TT_OK, TT_ERR_ARG, TT_ERR_RANGE = 0, 1, 2
QUANT_ERROR = 0.51  # |sigma G - g'| / sigma, see the module docstring


# ---------------------------------------------------------------------------------------------
# The driver


class Driver:
    def __init__(self, exe: Path, workdir: Path):
        self.exe, self.workdir, self.runs = exe, workdir, 0

    def run(self, payload: bytes, *dtypes) -> tuple[int, list[np.ndarray]]:
        """Run one case; return the status and the outputs, decoded with `dtypes` in order."""
        self.runs += 1
        case, out = self.workdir / f"case{self.runs}.bin", self.workdir / f"out{self.runs}.bin"
        case.write_bytes(payload)
        r = subprocess.run([str(self.exe), str(case), str(out)], check=False, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"{self.exe.name} exited {r.returncode}:\n{r.stderr[-4000:]}"
        raw = out.read_bytes()
        status, n = struct.unpack_from("<ii", raw)
        assert n == len(dtypes), f"{n} outputs, expected {len(dtypes)}"
        pos, outs = 8, []
        for dtype in dtypes:
            elem, count = struct.unpack_from("<ii", raw, pos)
            assert elem == np.dtype(dtype).itemsize
            outs.append(np.frombuffer(raw, dtype, count, pos + 8).copy())
            pos += 8 + elem * count
        assert pos == len(raw)
        case.unlink()
        out.unlink()
        return status, outs


def _build(tmp: Path, name: str, flags: list[str]) -> Path:
    return build_driver(tmp, name, flags, SOURCES)


@pytest.fixture(scope="session")
def bwd_driver(tmp_path_factory) -> Driver:
    tmp = tmp_path_factory.mktemp("backward_driver")
    return Driver(_build(tmp, "backward_driver", HOST_FLAGS), tmp)


@pytest.fixture(scope="session")
def bwd_san_driver(tmp_path_factory) -> Driver:
    tmp = tmp_path_factory.mktemp("backward_driver_san")
    return Driver(_build(tmp, "backward_driver_san", SAN_FLAGS), tmp)


def drivers(request, san: bool) -> list[Driver]:
    """The host build, plus the sanitizer build for cases marked san."""
    san_build = [request.getfixturevalue("bwd_san_driver")] if san else []
    return [request.getfixturevalue("bwd_driver"), *san_build]


def bits(x) -> int:
    """The int32 bit pattern of x as float32 (fp32 scalars travel as bits)."""
    return int(np.asarray(x, F32).view(np.int32))


class Payload(_Payload):
    """A backward_driver.c case file."""

    magic = MAGIC

    def floats(self, *values) -> Payload:
        return self.ints(*(bits(v) for v in values))

    def state(self, rng: XorShift32) -> Payload:
        self.parts.append(struct.pack("<I", rng.state))
        return self


def assert_equal(got: np.ndarray, want: np.ndarray, what: str, dims: str = "") -> None:
    msg = first_mismatch(got, want, what, dims)
    assert msg is None, msg


def assert_f32_bits(got: np.ndarray, want: np.ndarray, what: str, dims: str = "") -> None:
    """fp32 equal as int32 bit patterns (so -0.0 != +0.0 and NaN == NaN); the first mismatch is shown."""
    got, want = np.asarray(got, F32), np.asarray(want, F32)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    diff = np.flatnonzero(got.view(np.int32).ravel() != want.view(np.int32).ravel())
    if diff.size:
        i = int(diff[0])
        idx = tuple(int(v) for v in np.unravel_index(i, got.shape))
        g, w = got.ravel()[i], want.ravel()[i]
        raise AssertionError(f"{what}: {diff.size} of {got.size} values differ; first at flat index {i}, "
                             f"{dims or 'index'} {idx}: got {g!r} ({float(g).hex()}), "
                             f"expected {w!r} ({float(w).hex()})")


def packed_mask(q: np.ndarray) -> np.ndarray:
    """training.clamp_mask packed as tt_clamp_mask_s8 stores it (bit i of byte i / 8, LSB first)."""
    return np.packbits(training.clamp_mask(q.ravel()).astype(np.uint8), bitorder="little")


# ---------------------------------------------------------------------------------------------
# Conv backward: mask, int16 quantisation, input gradient, weight update, write-back


@dataclass(frozen=True)
class BwdConvCase:
    kind: str  # conv | depthwise | pointwise
    h: int
    w: int
    c_in: int
    c_out: int
    k: int
    stride: int
    x_zero: int
    seed: int
    grad: str = "random"  # random | zeros | huge (one value 1e6 x the rest) | sparse | clamped (mask all 0)
    accumulate: bool = False  # the input gradient adds to what g_in holds
    weights: str = "random"  # random | saturated (every weight +-127)
    residuals: str = "random"  # random | edge (-128, -127, 126, 127 and 0)
    dead: tuple[int, ...] = ()  # output channels (depthwise: channels) with inv_sw2 = 0
    steps: tuple[float, float] = (-2.0, 4.0)  # log10 range of the typical |update| in 1/256 LSB, per channel
    lr: float = 0.05
    san: bool = False

    def __str__(self) -> str:
        extra = "".join(f"-{v}" for v in (self.grad, self.weights, self.residuals) if v != "random")
        extra += "-acc" if self.accumulate else ""
        extra += f"-dead{'.'.join(map(str, self.dead))}" if self.dead else ""
        extra += f"-steps{self.steps[0]:g}..{self.steps[1]:g}" if self.steps != (-2.0, 4.0) else ""
        return (f"{self.kind}-k{self.k}s{self.stride}-{self.h}x{self.w}x{self.c_in}to{self.c_out}"
                f"-zx{self.x_zero}{extra}-seed{self.seed}")

    @property
    def pad(self) -> int:
        return (self.k - 1) // 2

    @property
    def out_hw(self) -> tuple[int, int]:
        def out(n: int) -> int:
            return (n + 2 * self.pad - self.k) // self.stride + 1

        return out(self.h), out(self.w)

    @property
    def depthwise(self) -> bool:
        return self.kind == "depthwise"


CONV_CASES = [
    BwdConvCase("conv", 7, 9, 3, 5, 3, 1, -17, seed=1, dead=(4,), san=True),
    BwdConvCase("conv", 7, 9, 4, 6, 3, 2, 127, seed=2, accumulate=True, san=True),
    BwdConvCase("conv", 8, 8, 3, 6, 3, 2, 0, seed=3, residuals="edge"),  # even input, stride 2
    BwdConvCase("conv", 9, 7, 3, 4, 5, 1, -128, seed=4, weights="saturated", steps=(1.0, 4.5)),
    BwdConvCase("conv", 9, 7, 2, 3, 5, 2, 33, seed=5, grad="huge", dead=(0,), san=True),
    BwdConvCase("conv", 11, 13, 2, 3, 7, 2, -1, seed=6, accumulate=True),
    BwdConvCase("conv", 10, 12, 2, 4, 7, 2, 5, seed=7, grad="sparse"),  # even input, stride 2, k 7
    BwdConvCase("conv", 2, 3, 3, 2, 7, 1, 5, seed=8, san=True),  # kernel larger than the input
    BwdConvCase("conv", 7, 9, 6, 5, 1, 2, 11, seed=9),  # k = 1 through the dense kernel
    BwdConvCase("conv", 7, 9, 3, 5, 3, 1, 64, seed=10, grad="zeros", residuals="edge", san=True),
    BwdConvCase("conv", 7, 9, 3, 5, 3, 1, -90, seed=11, grad="clamped", accumulate=True),
    BwdConvCase("conv", 9, 9, 3, 4, 3, 1, 100, seed=12, weights="saturated", residuals="edge", dead=(1, 3),
                steps=(3.0, 10.5), san=True),  # beyond TT_STEP_LIMIT and beyond int32
    BwdConvCase("conv", 9, 11, 3, 32, 7, 1, -77, seed=13, steps=(5.0, 6.0)),  # many large steps: fp32 order
    BwdConvCase("depthwise", 7, 9, 5, 5, 3, 1, -17, seed=21, dead=(2,), san=True),
    BwdConvCase("depthwise", 7, 9, 6, 6, 3, 2, 100, seed=22, accumulate=True, residuals="edge", san=True),
    BwdConvCase("depthwise", 8, 10, 4, 4, 3, 2, -5, seed=23),  # even input, stride 2
    BwdConvCase("depthwise", 9, 7, 4, 4, 5, 1, -128, seed=24, weights="saturated", steps=(1.0, 4.5)),
    BwdConvCase("depthwise", 9, 11, 3, 3, 5, 2, 127, seed=25, grad="huge"),
    BwdConvCase("depthwise", 13, 11, 7, 7, 7, 1, 2, seed=26, grad="sparse", dead=(0, 6)),
    BwdConvCase("depthwise", 12, 12, 5, 5, 7, 2, -9, seed=27, accumulate=True, san=True),
    BwdConvCase("depthwise", 3, 2, 4, 4, 7, 2, 1, seed=28),  # kernel larger than the input
    BwdConvCase("depthwise", 7, 9, 5, 5, 1, 1, 40, seed=29, grad="zeros"),
    BwdConvCase("depthwise", 7, 9, 5, 5, 3, 1, 3, seed=30, residuals="edge", dead=(1,), steps=(3.0, 10.5)),
    BwdConvCase("pointwise", 7, 9, 6, 7, 1, 1, -17, seed=41, dead=(6,), san=True),
    BwdConvCase("pointwise", 7, 9, 5, 3, 1, 2, 127, seed=42, accumulate=True, residuals="edge", san=True),
    BwdConvCase("pointwise", 8, 8, 4, 9, 1, 2, -128, seed=43, weights="saturated"),  # even input, stride 2
    BwdConvCase("pointwise", 1, 1, 16, 8, 1, 1, 3, seed=44, grad="huge"),
    BwdConvCase("pointwise", 5, 3, 1, 4, 1, 1, -50, seed=45, grad="clamped"),
    BwdConvCase("pointwise", 2, 3, 3, 601, 1, 1, 9, seed=46),  # odd C_out > 512: int64 over int32 chunks
    # the DSP kernel's int32 sums (C_out <= 512) at their longest, and the first length past them
    BwdConvCase("pointwise", 3, 3, 5, 512, 1, 1, -128, seed=47, weights="saturated", accumulate=True),
    BwdConvCase("pointwise", 1, 3, 4, 513, 1, 1, 127, seed=48, weights="saturated"),
    # the 1x1 weight-gradient sums over more than one chunk of 256 pixels, an odd pixel count, 4 + 2 outputs
    BwdConvCase("pointwise", 17, 17, 2, 6, 1, 1, -3, seed=49),
]


def c_filter(kind: str, w: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """OIHW weights in the kernel's layout, and the filter dims (n, h, w, c) of tt_train.h."""
    co, ci, k, _ = w.shape
    if kind == "depthwise":
        return w[:, 0].transpose(1, 2, 0), (1, k, k, co)
    return w.transpose(0, 2, 3, 1), (co, k, k, ci)  # pointwise: [C_out, C_in] = OHWI with K = 1


def oihw_from_c(kind: str, filt: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
    co, ci, k, _ = w_shape
    if kind == "depthwise":
        return filt.reshape(k, k, co).transpose(2, 0, 1)[:, None]
    return filt.reshape(co, k, k, ci).transpose(0, 3, 1, 2)


def make_bwd(case: BwdConvCase) -> dict:
    """Deterministic data of a case: input x, forward output y, g_y, M, weights, selection, residuals.

    The selected input channels are the first three plus the dead ones (depthwise); inv_sw2 is set
    per output channel so that the typical |update| of a weight is 10^u units of 1/256 LSB with u
    uniform in `steps` (sub-1/256 LSB steps, sub-LSB steps and steps of many LSB all occur).
    """
    rng = np.random.default_rng(case.seed)
    ho, wo = case.out_hw
    fan = 1 if case.depthwise else case.c_in
    x = rng.integers(-128, 128, (case.h, case.w, case.c_in)).astype(np.int8)
    if case.weights == "saturated":
        w = (127 * rng.choice([-1, 1], (case.c_out, fan, case.k, case.k))).astype(np.int8)
    else:
        w = rng.integers(-127, 128, (case.c_out, fan, case.k, case.k)).astype(np.int8)
    y = rng.integers(-128, 128, (ho, wo, case.c_out))
    y = np.where(rng.random(y.shape) < 0.15, -128, np.where(rng.random(y.shape) < 0.1, 127, y))
    y = y.astype(np.int8)
    if case.grad == "clamped":
        y = rng.choice(np.array([-128, 127], np.int8), y.shape)
    gy = (rng.normal(0, 1e-4, y.shape)).astype(F32)
    if case.grad == "zeros":
        gy[...] = 0
    elif case.grad == "sparse":
        gy[rng.random(gy.shape) < 0.9] = 0
    elif case.grad == "huge":
        gy.ravel()[rng.integers(gy.size)] = F32(-1e2)
    eff = (10 ** rng.uniform(-3, -1, case.c_out)).astype(F32)
    mask = training.clamp_mask(y)
    G, sigma = training.quantise_grad(training.scaled_grad(gy, mask, eff))
    channels = sorted(set(range(min(3, case.c_in))) | (set(case.dead) if case.depthwise else set()))
    a = x[:, :, channels].astype(np.float64) - case.x_zero
    dW = training.conv_weight_grad(a, G, sigma, case.stride, case.pad, case.k, case.depthwise, channels)
    if case.depthwise:
        rms = np.zeros(case.c_out)
        rms[channels] = np.sqrt(np.mean(dW.astype(np.float64) ** 2, axis=(1, 2, 3)))
    else:
        rms = np.sqrt(np.mean(dW.astype(np.float64) ** 2, axis=(0, 2, 3)))
    target = 10 ** rng.uniform(*case.steps, case.c_out)
    inv = np.where(rms > 0, target / (case.lr * training.RESIDUAL_ONE * np.maximum(rms, 1e-30)), 1e5)
    inv[list(case.dead)] = 0
    r_shape = (1 if case.depthwise else case.c_out, case.k, case.k)
    if case.residuals == "edge":
        res = {c: rng.choice(np.array([-128, -127, 126, 127, 0], np.int8), r_shape) for c in channels}
    else:
        res = {c: rng.integers(-128, 128, r_shape).astype(np.int8) for c in channels}
    g_in0 = rng.normal(0, 1e-3, (case.h, case.w, case.c_in)).astype(F32)
    return {"x": x, "w": w, "y": y, "gy": gy, "eff": eff, "inv": inv.astype(F32), "channels": channels,
            "residuals": res, "g_in0": g_in0, "G": G, "sigma": sigma, "dW": dW}


def slice_of(case: BwdConvCase, w: np.ndarray, c: int) -> np.ndarray:
    """The weight slice of input channel c, [O, K, K] (depthwise [1, K, K]), as a copy."""
    return (w[c, 0][None] if case.depthwise else w[:, c]).copy()


def conv_case_checks(case: BwdConvCase, d: dict, drv: Driver) -> None:
    """Every training kernel of one conv on one case, C vs reference (see the module docstring)."""
    ho, wo = case.out_hw
    out_dims, in_dims = (1, ho, wo, case.c_out), (1, case.h, case.w, case.c_in)
    size = ho * wo * case.c_out
    where = f"{case} ({drv.exe.name})"

    # 1. clamp mask of the forward output
    want_mask = packed_mask(d["y"])
    status, (mask,) = drv.run(Payload(OP_MASK).ints(size).array(d["y"], np.int8).ints(want_mask.size).bytes(),
                              np.uint8)
    assert status == TT_OK
    assert_equal(mask, want_mask, f"{where}: tt_clamp_mask_s8 vs clamp_mask (packed bytes)")

    # 2. g' = g * mask * M quantised to int16
    payload = (Payload(OP_GRADQ).ints(*out_dims).array(d["gy"], F32).array(mask, np.uint8)
               .array(d["eff"], F32).ints(size).bytes())
    status, (grad_q, sigma) = drv.run(payload, np.int16, F32)
    assert status == TT_OK
    assert_equal(grad_q.reshape(ho, wo, case.c_out).astype(np.float64), d["G"],
                 f"{where}: tt_grad_quantize_s16 G vs quantise_grad", "(oy, ox, o)")
    assert_f32_bits(sigma, np.array([d["sigma"]], F32), f"{where}: sigma")

    # 3. input gradient (transposed conv), written or accumulated
    want = training.conv_bwd_input(d["G"], d["sigma"], d["w"], case.stride, case.pad, case.depthwise,
                                   (case.h, case.w))
    if case.accumulate:
        want = training.accumulate_grad(d["g_in0"], want)
    filt, fdims = c_filter(case.kind, d["w"])
    op = OP_DW_BWD_IN if case.depthwise else OP_CONV_BWD_IN
    payload = (Payload(op).ints(case.stride, case.pad, *fdims, *out_dims, *in_dims).floats(d["sigma"])
               .ints(int(case.accumulate)).array(filt, np.int8).array(grad_q, np.int16).array(d["g_in0"], F32)
               .bytes())
    status, (g_in,) = drv.run(payload, F32)
    assert status == TT_OK
    assert_f32_bits(g_in.reshape(want.shape), want, f"{where}: input gradient", "(iy, ix, c)")

    # 4. weight gradient + QAS SGD step of each selected slice, in selection order (one PRNG stream)
    rng_py, rng_c = XorShift32(case.seed, STREAM_ROUNDING), XorShift32(case.seed, STREAM_ROUNDING)
    w_ref, filt = d["w"].copy(), filt.copy()
    residuals = {c: r.copy() for c, r in d["residuals"].items()}
    lr = F32(case.lr)
    for j, c in enumerate(d["channels"]):
        inv = d["inv"][c:c + 1] if case.depthwise else d["inv"]
        new_w, new_r = training.sgd_master_step(slice_of(case, w_ref, c), d["residuals"][c].astype(np.int32),
                                                d["dW"][j], inv, lr, rng_py)
        if case.depthwise:
            w_ref[c, 0] = new_w[0]
        else:
            w_ref[:, c] = new_w
        op = OP_DW_UPDATE if case.depthwise else OP_CONV_UPDATE
        payload = (Payload(op).ints(-case.x_zero, case.stride, case.pad, *in_dims, *out_dims, *fdims, c)
                   .floats(lr, d["sigma"]).state(rng_c).array(d["x"][:, :, c], np.int8)
                   .array(grad_q, np.int16).array(d["inv"], F32).array(filt, np.int8)
                   .array(residuals[c], np.int8).bytes())
        status, (filt, res_c, state) = drv.run(payload, np.int8, np.int8, np.uint32)
        assert status == TT_OK
        rng_c.state = int(state[0])
        residuals[c] = res_c.reshape(new_r.shape)
        assert_equal(oihw_from_c(case.kind, filt, d["w"].shape), w_ref,
                     f"{where}: int8 weights after the update of input channel {c}", "(o, i, ky, kx)")
        assert_equal(residuals[c].astype(np.int32), new_r, f"{where}: residual of channel {c}", "(o, ky, kx)")
        assert rng_c.state == rng_py.state, \
            f"{where}: PRNG state after channel {c}: C {rng_c.state:#010x} != reference {rng_py.state:#010x}"
    for o in case.dead:
        was, now = d["w"][o], oihw_from_c(case.kind, filt, d["w"].shape)[o]
        assert_equal(now, was, f"{where}: dead output channel {o} (inv_sw2 = 0) changed", "(i, ky, kx)")

    # 5. write-back of each slice's residual into the int8 weights
    for c in d["channels"]:
        want_w = training.residual_writeback(slice_of(case, w_ref, c), residuals[c], rng_py)
        if case.depthwise:
            w_ref[c, 0] = want_w[0]
        else:
            w_ref[:, c] = want_w
        payload = (Payload(OP_WRITEBACK).ints(*fdims, int(case.depthwise), c).state(rng_c)
                   .array(residuals[c], np.int8).array(filt, np.int8).bytes())
        status, (filt, state) = drv.run(payload, np.int8, np.uint32)
        assert status == TT_OK
        rng_c.state = int(state[0])
        assert_equal(oihw_from_c(case.kind, filt, d["w"].shape), w_ref,
                     f"{where}: int8 weights after the write-back of channel {c}", "(o, i, ky, kx)")
        assert rng_c.state == rng_py.state, f"{where}: PRNG state after the write-back of channel {c}"


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_backward_kernels_bit_exact(case: BwdConvCase, request):
    d = make_bwd(case)
    if case.grad in ("random", "huge", "sparse"):
        assert d["sigma"] > 0 and np.count_nonzero(d["G"]) > 0, f"{case}: the gradient quantised to zero"
    for drv in drivers(request, case.san):
        conv_case_checks(case, d, drv)


# The Cortex-M DSP input-gradient kernels (runtime_c/arm/tt_conv_bwd_s8.c) on the host: tests/c/acle_host/arm_acle.h
# stands in for the ACLE intrinsics. Built with the sanitizers; "short" shrinks the stack column and the tap list so
# that the kernels' fallbacks for long columns and large depthwise kernels run too.
DSP_BUILDS = {"dsp": [], "dsp_short": ["-DTT_BWD_COLUMN=4", "-DTT_DW_TAPS=4", "-DTT_DWB_BAND_WORDS=16"]}


@pytest.fixture(scope="session", params=list(DSP_BUILDS))
def bwd_dsp_driver(request, tmp_path_factory) -> Driver:
    tmp = tmp_path_factory.mktemp(f"backward_driver_{request.param}")
    return Driver(build_dsp_driver(tmp, f"backward_driver_{request.param}", DSP_BUILDS[request.param], SOURCES), tmp)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_dsp_backward_kernels_bit_exact(case: BwdConvCase, bwd_dsp_driver):
    """The same checks with the DSP variants of the input-gradient kernels: bit-identical to the reference."""
    conv_case_checks(case, make_bwd(case), bwd_dsp_driver)


# The pointwise DSP input gradient with weight patches, and every path of its column-gather and assembly loops
# (pointwise4: four-quad steps, single quads, a C output pair, odd C_out, short and patched groups, int64 chunks
# past 512 outputs; past its 4-channel column the 2-channel `pointwise`). The assembly runs in QEMU (below).


@dataclass(frozen=True)
class PwBwdCase:
    conv: BwdConvCase
    patch: tuple[int, ...] = ()  # input channels with a working slice
    unaligned: bool = False  # QEMU only: G at an odd halfword address

    def __str__(self) -> str:
        return (f"{self.conv}{'-patch' + '.'.join(map(str, self.patch)) if self.patch else ''}"
                f"{'-unaligned' if self.unaligned else ''}")


def pwb(h: int, w: int, c_in: int, c_out: int, seed: int, patch: tuple[int, ...] = (), unaligned: bool = False,
        **kw) -> PwBwdCase:
    return PwBwdCase(BwdConvCase("pointwise", h, w, c_in, c_out, 1, 1, 5, seed=seed, **kw), patch, unaligned)


PW_BWD_CASES = [
    pwb(4, 4, 8, 16, 301, patch=(1,)),  # C_out % 16 == 0: four-quad steps only; a patched group
    pwb(3, 5, 12, 20, 302, accumulate=True),  # four-quad steps and a single quad
    pwb(2, 3, 6, 12, 303, patch=(4, 5)),  # single quads only; a short last group, patched
    pwb(3, 3, 8, 4, 304, accumulate=True, patch=(0, 1, 2, 3)),  # one quad; a whole group patched
    pwb(2, 2, 4, 18, 305),  # C_out % 4 == 2: the quads, then one pair in C
    pwb(3, 1, 7, 35, 306, accumulate=True, patch=(6,)),  # odd C_out: every other row of G unaligned
    pwb(2, 3, 8, 48, 307, unaligned=True),  # every row unaligned (QEMU; on the host an aligned copy)
    pwb(2, 2, 8, 576, 308, weights="saturated"),  # int64 over two int32 chunks, the longest 4-channel column
    pwb(1, 3, 5, 577, 309, patch=(2,)),  # past the 4-channel column: two channels at a time
    pwb(2, 2, 4, 512, 310, weights="saturated", accumulate=True),  # the longest int32 sums
]


def pw_bwd_data(case: PwBwdCase) -> tuple[bytes, np.ndarray, dict, np.ndarray]:
    """The backward_driver payload of a case, the g_in it must produce, make_bwd's data and the patch slices."""
    c = case.conv
    d = make_bwd(c)
    slices = np.random.default_rng(c.seed + 1000).integers(-128, 128, (len(case.patch), c.c_out)).astype(np.int8)
    w = d["w"].copy()
    for j, ch in enumerate(case.patch):
        w[:, ch, 0, 0] = slices[j]
    want = training.conv_bwd_input(d["G"], d["sigma"], w, 1, 0, False, (c.h, c.w))
    if c.accumulate:
        want = training.accumulate_grad(d["g_in0"], want)
    filt, fdims = c_filter("pointwise", d["w"])  # the home filter: the patch carries the working weights
    p = (Payload(13 if case.patch else OP_CONV_BWD_IN).ints(1, 0, *fdims, 1, c.h, c.w, c.c_out, 1, c.h, c.w, c.c_in)
         .floats(d["sigma"]).ints(int(c.accumulate)).array(filt, np.int8).array(d["G"].astype(np.int16), np.int16)
         .array(d["g_in0"], F32))
    if case.patch:
        p = p.array(np.asarray(case.patch), np.int32).array(slices, np.int8)
    return p.bytes(), np.asarray(want, F32), d, slices


def check_pw_bwd_input(case: PwBwdCase, drv: Driver) -> None:
    payload, want, _, _ = pw_bwd_data(case)
    status, (g_in,) = drv.run(payload, F32)
    assert status == TT_OK, f"{case}: status {status}"
    assert_f32_bits(g_in.reshape(want.shape), want, f"{case} ({drv.exe.name}): input gradient", "(iy, ix, c)")


@pytest.mark.parametrize("case", PW_BWD_CASES, ids=str)
def test_dsp_pointwise_bwd_input_bit_exact(case: PwBwdCase, bwd_dsp_driver):
    check_pw_bwd_input(case, bwd_dsp_driver)


@pytest.mark.parametrize("case", [c for c in PW_BWD_CASES if c.patch], ids=str)
def test_reference_pointwise_bwd_input_with_patch(case: PwBwdCase, bwd_san_driver):
    check_pw_bwd_input(case, bwd_san_driver)




def render_bwd_cases() -> tuple[str, int]:
    """bwd_cases.h for tests/c/bwd_qemu.c (each case's arrays and a bwd_case table, see that file): PW_BWD_CASES and
    test_dw_kernels.BWD_CASES (the depthwise bands and tap lists); and the number of cases."""
    from test_dw_kernels import BWD_CASES, dw_bwd_data

    def arr(name: str, ctype: str, a: np.ndarray) -> str:
        vals = ", ".join(str(int(v)) for v in np.asarray(a).ravel())
        return f"static {ctype} {name}[{max(a.size, 1)}] = {{{vals or '0'}}};\n"

    entries = []
    for case in PW_BWD_CASES:
        _, want, d, slices = pw_bwd_data(case)
        entries.append((case, case.conv, want, d, slices, case.unaligned))
    for case in BWD_CASES:
        want, d, slices = dw_bwd_data(case)
        entries.append((case, case.conv, want, d, slices, False))
    text, rows = [], []
    for i, (case, c, want, d, slices, unaligned) in enumerate(entries):
        filt, fdims = c_filter(c.kind, d["w"])
        ho, wo = c.out_hw
        per_slice = int(np.prod(slices.shape[1:]))
        text += [arr(f"filter{i}", "const int8_t", filt), arr(f"grad{i}", "const int16_t", d["G"].astype(np.int16)),
                 arr(f"gin{i}", "const uint32_t", d["g_in0"].view(np.uint32)),
                 arr(f"want{i}", "const uint32_t", want.view(np.uint32)),
                 arr(f"pch{i}", "const uint16_t", np.asarray(case.patch, np.int64)),
                 arr(f"pslices{i}", "int8_t", slices),
                 arr(f"poff{i}", "const uint32_t", np.arange(len(case.patch)) * per_slice)]
        rows.append(f'    {{"{case}", {int(c.depthwise)}, {c.stride}, {c.pad}, {{{", ".join(map(str, fdims))}}}, '
                    f"{{1, {ho}, {wo}, {c.c_out}}}, {{1, {c.h}, {c.w}, {c.c_in}}}, {float(d['sigma'])!r}f, "
                    f"{int(c.accumulate)}, {int(unaligned)}, filter{i}, grad{i}, gin{i}, want{i}, {len(case.patch)}, "
                    f"pch{i}, pslices{i}, poff{i}}},\n")
    return "".join(text) + "static const bwd_case cases[] = {\n" + "".join(rows) + "};\n", len(entries)


@pytest.mark.arm
@pytest.mark.qemu
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_qemu_dsp_bwd_input_bit_exact(board, tmp_path):
    """The DSP input gradients on the Cortex-M cores, where their assembly runs: pointwise and depthwise cases."""
    header, n = render_bwd_cases()
    assert_kernel_ok_in_qemu(board, tmp_path, "bwd_qemu.c", "tt_conv_bwd_s8.c", ("bwd_cases.h", header),
                             f"bwd: OK {n} cases")


def test_conv_weight_grad_batched_equals_per_channel():
    """Trainer computes the slices of all selected channels of a layer at once: same values."""
    for case in (CONV_CASES[0], next(c for c in CONV_CASES if c.depthwise),
                 next(c for c in CONV_CASES if c.kind == "pointwise")):
        d = make_bwd(case)
        for j, c in enumerate(d["channels"]):
            a = d["x"][:, :, [c]].astype(np.float64) - case.x_zero
            one = training.conv_weight_grad(a, d["G"], d["sigma"], case.stride, case.pad, case.k,
                                            case.depthwise, [c])
            assert_f32_bits(one[0], d["dW"][j], f"{case}: dW of channel {c}, alone vs batched")


def test_conv_cases_cover_the_contract():
    """The case list really has what the brief asks for (guards against edits that drop it)."""
    for kind in ("conv", "depthwise"):
        assert {c.k for c in CONV_CASES if c.kind == kind} >= {1, 3, 5, 7}, kind
        assert {c.stride for c in CONV_CASES if c.kind == kind} == {1, 2}, kind
        assert any(c.kind == kind and c.stride == 2 and c.h % 2 == 0 and c.w % 2 == 0 for c in CONV_CASES)
        assert any(c.kind == kind and c.dead for c in CONV_CASES)
    assert {c.stride for c in CONV_CASES if c.kind == "pointwise"} == {1, 2}
    assert any(c.h % 2 and c.w % 2 and c.h != c.w for c in CONV_CASES)
    assert {c.grad for c in CONV_CASES} == {"random", "zeros", "huge", "sparse", "clamped"}
    assert {c.accumulate for c in CONV_CASES} == {False, True}
    assert {c.weights for c in CONV_CASES} == {"random", "saturated"}
    assert {c.residuals for c in CONV_CASES} == {"random", "edge"}
    assert any(c.steps[1] > np.log10(float(training.STEP_LIMIT)) for c in CONV_CASES)
    assert len({c.x_zero for c in CONV_CASES}) > 10 and {-128, 127} <= {c.x_zero for c in CONV_CASES}
    assert sum(c.san for c in CONV_CASES) >= 8


def test_dead_channel_and_saturation_are_exercised():
    """The saturated case really pushes weights against +-127 and the edge residuals really wrap."""
    case = next(c for c in CONV_CASES if c.weights == "saturated" and c.dead)
    d = make_bwd(case)
    rng = XorShift32(case.seed, STREAM_ROUNDING)
    moved, pinned = 0, 0
    for j, c in enumerate(d["channels"]):
        w0 = d["w"][:, c].astype(np.int32)
        new, _ = training.sgd_master_step(w0, d["residuals"][c].astype(np.int32), d["dW"][j], d["inv"],
                                          F32(case.lr), rng)
        live = np.setdiff1d(np.arange(case.c_out), case.dead)
        moved += np.count_nonzero(new[live] != w0[live])
        pinned += np.count_nonzero(np.abs(new[live]) == 127)
        assert np.array_equal(new[list(case.dead)], w0[list(case.dead)])
    assert moved > 0 and pinned > 0


# ---------------------------------------------------------------------------------------------
# Reference conv gradients vs autograd (float64)


def autograd_conv(case: BwdConvCase, d: dict, gp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d/dx and d/dw of sum(conv2d(x - x_zero, w) * g'), float64, [H, W, C] and OIHW."""
    xt = torch.tensor(d["x"].astype(np.float64) - case.x_zero).permute(2, 0, 1)[None].requires_grad_()
    wt = torch.tensor(d["w"].astype(np.float64), requires_grad=True)
    y = torch.nn.functional.conv2d(xt, wt, stride=case.stride, padding=case.pad,
                                   groups=case.c_out if case.depthwise else 1)
    y.backward(torch.tensor(gp.astype(np.float64)).permute(2, 0, 1)[None])
    return xt.grad[0].permute(1, 2, 0).numpy(), wt.grad.numpy()


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c.grad in ("random", "sparse", "huge")], ids=str)
def test_reference_conv_gradients_vs_autograd(case: BwdConvCase):
    """conv_bwd_input and conv_weight_grad equal autograd on g' (before the int16 quantisation) within
    the quantisation bound, elementwise, and within 1e-3 relative to the largest value of the whole
    gradient tensor (module docstring). One scale serves the whole tensor, so the slice of a channel whose
    M[o] is 100x below the largest (as here) is only good to ~1e-3 of its own largest value."""
    d = make_bwd(case)
    gp = training.scaled_grad(d["gy"], training.clamp_mask(d["y"]), d["eff"])
    nonzero = gp[gp != 0].astype(np.float64)  # exact zeros quantise without error
    crest = np.abs(nonzero).max() / np.sqrt(np.mean(nonzero ** 2))
    ag_x, ag_w = autograd_conv(case, d, gp)
    sigma = float(d["sigma"])
    # |L| 1: the same linear maps on |w| (|x - x_zero|) and an all-ones g'
    ones = np.ones_like(gp, dtype=np.float64)
    abs_x, _ = autograd_conv(case, {"x": d["x"], "w": np.abs(d["w"].astype(np.int16))}, ones)
    ax = torch.tensor(np.abs(d["x"].astype(np.float64) - case.x_zero)).permute(2, 0, 1)[None]
    abs_w = torch.nn.grad.conv2d_weight(ax, d["w"].shape, torch.tensor(ones).permute(2, 0, 1)[None],
                                        stride=case.stride, padding=case.pad,
                                        groups=case.c_out if case.depthwise else 1).numpy()
    ref_x = training.conv_bwd_input(d["G"], d["sigma"], d["w"], case.stride, case.pad, case.depthwise,
                                    (case.h, case.w)).astype(np.float64)
    # the whole weight gradient (every input channel's slice), [C_in, O (1 if depthwise), K, K]
    every = list(range(case.c_in))
    ref_w = training.conv_weight_grad(d["x"].astype(np.float64) - case.x_zero, d["G"], d["sigma"],
                                      case.stride, case.pad, case.k, case.depthwise, every).astype(np.float64)
    if not case.depthwise:
        ag_w, abs_w = ag_w.transpose(1, 0, 2, 3), abs_w.transpose(1, 0, 2, 3)
    checks = [("input gradient", ref_x, ag_x, abs_x, "(iy, ix, c)"),
              ("weight gradient", ref_w, ag_w, abs_w, "(c, o, ky, kx)")]
    for what, ref, ag, l1, dims in checks:
        err = np.abs(ref - ag)
        limit = QUANT_ERROR * sigma * l1 + 2.0 ** -22 * np.abs(ag)
        bad = np.flatnonzero(err.ravel() > limit.ravel())
        if bad.size:
            i = int(bad[0])
            idx = tuple(int(v) for v in np.unravel_index(i, err.shape))
            raise AssertionError(f"{case}: {what} at {dims} {idx}: reference {ref.ravel()[i]!r}, "
                                 f"autograd {ag.ravel()[i]!r}: error {err.ravel()[i]:.3e} > bound "
                                 f"{limit.ravel()[i]:.3e}")
        scale = np.abs(ag).max()
        if case.grad != "huge" and scale > 0:
            assert crest <= 10, f"{case}: crest factor {crest:.1f}: the relative bound does not apply"
            rel = err.max() / scale
            assert rel < 1e-3, f"{case}: {what}: max relative error {rel:.2e} >= 1e-3 (crest {crest:.1f})"


# ---------------------------------------------------------------------------------------------
# Pool and residual-add backward


@dataclass(frozen=True)
class PoolBwdCase:
    shape: tuple[int, int, int]
    seed: int
    accumulate: bool = False
    san: bool = False

    def __str__(self) -> str:
        acc = "-acc" if self.accumulate else ""
        return f"avgpool_bwd-{'x'.join(map(str, self.shape))}{acc}-seed{self.seed}"


POOL_CASES = [PoolBwdCase((7, 9, 5), 1, san=True), PoolBwdCase((7, 9, 5), 2, accumulate=True, san=True),
              PoolBwdCase((1, 1, 3), 3), PoolBwdCase((4, 4, 320), 4, accumulate=True),
              PoolBwdCase((3, 5, 1), 5)]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool_backward_bit_exact(case: PoolBwdCase, request):
    rng = np.random.default_rng(case.seed)
    h, w, c = case.shape
    gy = rng.normal(0, 1e-2, c).astype(F32)
    gy[0] = F32(-0.0)
    g_in0 = rng.normal(0, 1e-2, case.shape).astype(F32)
    inv_hw = F32(1.0 / (h * w))  # as train_constants computes it
    want = training.accumulate_grad(g_in0 if case.accumulate else None,
                                    training.avgpool_bwd(gy, inv_hw, case.shape))
    for drv in drivers(request, case.san):
        payload = (Payload(OP_POOL_BWD).ints(1, h, w, c).floats(inv_hw).ints(int(case.accumulate))
                   .array(gy, F32).array(g_in0, F32).bytes())
        status, (g_in,) = drv.run(payload, F32)
        assert status == TT_OK
        assert_f32_bits(g_in.reshape(case.shape), want, f"{case}: C ({drv.exe.name}) vs avgpool_bwd",
                        "(h, w, c)")


@dataclass(frozen=True)
class AddBwdCase:
    size: int
    seed: int
    accumulate: tuple[bool, bool] = (False, False)
    use: tuple[bool, bool] = (True, True)  # False: that input gets no gradient (NULL)
    san: bool = False

    def __str__(self) -> str:
        acc = "".join("a" if a else "w" for a in self.accumulate)
        use = "".join("1" if u else "0" for u in self.use)
        return f"add_bwd-{self.size}-{acc}-use{use}-seed{self.seed}"


ADD_CASES = [AddBwdCase(315, 1, san=True), AddBwdCase(315, 2, (True, False), san=True),
             AddBwdCase(63, 3, (False, True), (False, True), san=True),
             AddBwdCase(9, 4, (True, True), (True, False)), AddBwdCase(1, 5, (True, True)),
             AddBwdCase(4097, 6, (False, True))]


@pytest.mark.parametrize("case", ADD_CASES, ids=str)
def test_add_backward_bit_exact(case: AddBwdCase, request):
    rng = np.random.default_rng(case.seed)
    y = rng.integers(-128, 128, case.size)
    y = np.where(rng.random(case.size) < 0.2, rng.choice([-128, 127], case.size), y).astype(np.int8)
    gy = rng.normal(0, 1e-2, case.size).astype(F32)
    g1, g2 = rng.normal(0, 1e-2, (2, case.size)).astype(F32)
    ra, rb = F32(0.0575 / 0.1065), F32(rng.uniform(0.2, 3))
    ga, gb = training.add_bwd(gy, training.clamp_mask(y), ra, rb)
    want = [training.accumulate_grad(g if acc else None, v) if use else g
            for g, v, acc, use in zip((g1, g2), (ga, gb), case.accumulate, case.use, strict=True)]
    for drv in drivers(request, case.san):
        payload = (Payload(OP_ADD_BWD).ints(case.size).floats(ra, rb).ints(*map(int, case.accumulate))
                   .ints(*map(int, case.use)).array(gy, F32).array(packed_mask(y), np.uint8).array(g1, F32)
                   .array(g2, F32).bytes())
        status, outs = drv.run(payload, F32, F32)
        assert status == TT_OK
        for i in range(2):
            assert_f32_bits(outs[i], want[i], f"{case}: C ({drv.exe.name}) g_{i + 1} vs add_bwd")


@pytest.mark.parametrize("size", [1, 7, 8, 9, 63, 1000])
def test_clamp_mask_bit_exact(size: int, bwd_driver, bwd_san_driver):
    rng = np.random.default_rng(size)
    q = rng.choice(np.array([-128, -127, -1, 0, 1, 126, 127], np.int8), size)
    want = packed_mask(q)
    assert want.size == (size + 7) // 8
    for drv in (bwd_driver, bwd_san_driver):
        payload = Payload(OP_MASK).ints(size).array(q, np.int8).ints(want.size).bytes()
        status, (mask,) = drv.run(payload, np.uint8)
        assert status == TT_OK
        assert_equal(mask, want, f"tt_clamp_mask_s8 size {size} ({drv.exe.name}) vs clamp_mask (packed)")


# ---------------------------------------------------------------------------------------------
# int16 quantisation edge cases


@dataclass(frozen=True)
class GradQCase:
    shape: tuple[int, int, int]
    fill: str  # ties | negative_max | huge | small_max | tiny_max
    seed: int

    def __str__(self) -> str:
        return f"gradq-{'x'.join(map(str, self.shape))}-{self.fill}-seed{self.seed}"


GRADQ_CASES = [GradQCase((3, 5, 4), "ties", 1), GradQCase((5, 3, 3), "negative_max", 2),
               GradQCase((7, 9, 5), "huge", 3), GradQCase((3, 3, 4), "small_max", 4),
               GradQCase((3, 3, 4), "tiny_max", 5)]
INV_OVERFLOW = 32767 / float(np.finfo(F32).max)  # max|g'| below this: 32767 / max|g'| is inf in fp32


def make_gradq(case: GradQCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """g_y, mask (with zeros) and M of a case."""
    rng = np.random.default_rng(case.seed)
    n = int(np.prod(case.shape))
    mask = np.ones(case.shape, F32)
    mask.ravel()[::5] = 0
    eff = np.ones(case.shape[2], F32)
    if case.fill == "ties":  # max 32767, so 32767 / max = 1 and the k + 0.5 values tie (half to even)
        g = (rng.integers(-3000, 3000, n) + 0.5).astype(F32)
        g[1] = F32(32767)
    elif case.fill == "negative_max":
        g = rng.normal(0, 1, n).astype(F32)
        g[n // 2 + 1] = F32(-50)
    elif case.fill == "huge":
        g = rng.normal(0, 1e-3, n).astype(F32)
        g[n - 1] = F32(3e30)
        eff = rng.uniform(0.5, 2, case.shape[2]).astype(F32)
    else:  # a layer whose gradient is tiny (a very confident sample): max|g'| 10x above / below INV_OVERFLOW
        g = (rng.normal(0, 1, n) * INV_OVERFLOW * (10 if case.fill == "small_max" else 0.03)).astype(F32)
        g[rng.random(n) < 0.3] = 0
    return g.reshape(case.shape), mask, eff


@pytest.mark.parametrize("case", GRADQ_CASES, ids=str)
def test_grad_quantize_edge_cases(case: GradQCase, bwd_driver, bwd_san_driver):
    """Reference and C hold the contract G = rint(g' * 32767 / max|g'|) within the derived 0.51 (module
    docstring), or G = 0 when max|g'| < GRAD_MIN (1e-30: 32767 / max|g'| would overflow near 1e-34),
    and agree bit for bit."""
    g, mask, eff = make_gradq(case)
    gp = training.scaled_grad(g, mask, eff)
    amax = np.abs(gp.astype(np.float64)).max()
    spec = gp.astype(np.float64) * (training.GRAD_LEVELS / amax) if amax >= training.GRAD_MIN else 0 * gp
    G, sigma = training.quantise_grad(gp)
    packed = np.packbits(mask.ravel().astype(np.uint8), bitorder="little")
    problems = []

    def contract(name: str, q: np.ndarray) -> None:
        bad = np.flatnonzero(~(np.abs(q - spec) <= QUANT_ERROR).ravel())
        if bad.size:
            i = int(bad[0])
            problems.append(f"{name}: {bad.size} of {q.size} values off the contract; first at {i}: g' = "
                            f"{gp.ravel()[i]!r}, G = {q.ravel()[i]!r}, expected rint({spec.ravel()[i]:.4f})")

    contract("reference quantise_grad", G)
    for drv in (bwd_driver, bwd_san_driver):
        payload = (Payload(OP_GRADQ).ints(1, *case.shape).array(g, F32).array(packed, np.uint8)
                   .array(eff, F32).ints(g.size).bytes())
        status, (grad_q, got_sigma) = drv.run(payload, np.int16, F32)
        assert status == TT_OK
        q = grad_q.reshape(case.shape).astype(np.float64)
        contract(f"C tt_grad_quantize_s16 ({drv.exe.name})", q)
        for msg in (first_mismatch(q, G, f"C ({drv.exe.name}) G vs quantise_grad", "(oy, ox, o)"),
                    first_mismatch(got_sigma.view(np.int32), np.array([sigma], F32).view(np.int32),
                                   f"C ({drv.exe.name}) sigma bits vs quantise_grad")):
            if msg:
                problems.append(msg)
    assert not problems, f"{case} (max|g'| = {np.abs(gp).max():.3e}):\n" + "\n".join(problems)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_dead_channel_unchanged_when_the_weight_gradient_overflows(bwd_driver, bwd_san_driver):
    """inv_sw2 = 0 must leave a dead channel's weights unchanged whatever dW is. With sigma * sum beyond
    FLT_MAX (a diverged gradient, max|g'| around 1e35), dW = -inf and dW * inv_sw2 = -inf * 0 = NaN:
    the reference casts floor(NaN) to int32 (INT32_MIN) and rewrites the dead slice; the C does the same
    through undefined behaviour (float-to-int of NaN, then signed overflow in m = 256 w + r + d, which
    UBSan reports). A live channel is fine: -inf * inv_sw2 * lr is clamped to the step limit."""
    h, w, k, co, zx = 5, 5, 3, 2, -5
    rng = np.random.default_rng(99)
    x = rng.integers(-128, 128, (h, w, 1)).astype(np.int8)
    weight = rng.integers(-120, 121, (co, 1, k, k)).astype(np.int8)
    G = np.full((h, w, co), float(training.GRAD_LEVELS))
    sigma, lr = F32(1e34), F32(0.01)
    inv = np.array([0.0, 1e4], F32)  # channel 0 dead
    dW = training.conv_weight_grad(x.astype(np.float64) - zx, G, sigma, 1, 1, k, False, [0])
    problems = [] if np.all(np.isinf(dW)) else ["the case does not overflow dW"]
    with np.errstate(invalid="ignore", over="ignore"):
        new, _ = training.sgd_master_step(weight[:, 0].copy(), np.zeros((co, k, k), np.int32), dW[0], inv, lr,
                                          XorShift32(1, STREAM_ROUNDING))
    msg = first_mismatch(new[0], weight[0, 0].astype(np.int32), "reference sgd_master_step: dead channel 0",
                         "(ky, kx)")
    problems += [msg] if msg else []
    filt, fdims = c_filter("conv", weight)
    payload = (Payload(OP_CONV_UPDATE).ints(-zx, 1, 1, 1, h, w, 1, 1, h, w, co, *fdims, 0).floats(lr, sigma)
               .state(XorShift32(1, STREAM_ROUNDING)).array(x[:, :, 0], np.int8).array(G, np.int16)
               .array(inv, F32).array(filt, np.int8).array(np.zeros(co * k * k), np.int8).bytes())
    for drv in (bwd_driver, bwd_san_driver):
        try:
            status, (got, _, _) = drv.run(payload, np.int8, np.int8, np.uint32)
        except AssertionError as e:  # the sanitizer build aborts
            lines = str(e).splitlines()
            problems.append(f"C ({drv.exe.name}) " +
                            next((x for x in lines if "runtime error" in x), lines[0]))
            continue
        if status != TT_OK:
            problems.append(f"C ({drv.exe.name}) status {status}")
        msg = first_mismatch(oihw_from_c("conv", got, weight.shape)[0, 0], weight[0, 0],
                             f"C ({drv.exe.name}) tt_conv2d_s8_bwd_weight_update: dead channel 0", "(ky, kx)")
        problems += [msg] if msg else []
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# Softmax cross-entropy and the fp32 head


@dataclass(frozen=True)
class HeadBwdCase:
    features: int
    classes: int
    label: int  # -1: the class with the smallest logit
    spread: float  # logit standard deviation
    seed: int
    san: bool = False

    def __str__(self) -> str:
        return (f"head_bwd-{self.features}x{self.classes}-label{self.label}-spread{self.spread:g}"
                f"-seed{self.seed}")


HEAD_CASES = [HeadBwdCase(37, 5, 2, 1.0, 1, san=True), HeadBwdCase(320, 10, 0, 3.0, 2),
              HeadBwdCase(1, 2, 1, 0.0, 3, san=True),  # equal logits
              HeadBwdCase(64, 10, 9, 40.0, 4),  # exp underflows: tt_expf clamps at -87
              HeadBwdCase(64, 10, -1, 40.0, 7),  # the label's logit is the smallest: p underflows
              HeadBwdCase(5, 1, 0, 1.0, 5), HeadBwdCase(1280, 3, 1, 0.5, 6)]


def make_head(case: HeadBwdCase) -> dict:
    rng = np.random.default_rng(case.seed)
    scale = F32(0.1065)
    f = (rng.integers(-128, 128, case.features).astype(F32) * scale).astype(F32)
    weight = rng.normal(0, 0.3, (case.classes, case.features)).astype(F32)
    # the bias puts the logits W f + b near N(0, spread^2)
    bias = (rng.normal(0, 1, case.classes) * case.spread - weight.astype(np.float64) @ f).astype(F32)
    logits = (weight.astype(np.float64) @ f + bias).astype(F32)
    label = int(np.argmin(logits)) if case.label < 0 else case.label
    return {"logits": logits, "label": label, "f": f, "weight": weight, "bias": bias, "lr": F32(0.0123),
            "scale": scale}


@pytest.mark.parametrize("case", HEAD_CASES, ids=str)
def test_softmax_xent_and_head_bit_exact(case: HeadBwdCase, request):
    d = make_head(case)
    grad, loss = training.softmax_xent(d["logits"], d["label"])
    weight, bias = d["weight"].copy(), d["bias"].copy()
    g_in = training.head_bwd_update(weight, bias, d["f"], grad, d["lr"], d["scale"])
    for drv in drivers(request, case.san):
        payload = Payload(OP_XENT).ints(case.classes, d["label"]).array(d["logits"], F32).ints(case.classes)
        status, (got_grad, got_loss) = drv.run(payload.bytes(), F32, F32)
        assert status == TT_OK
        assert_f32_bits(got_grad, grad, f"{case}: C ({drv.exe.name}) dL/dlogits vs softmax_xent", "(k,)")
        # The loss is reported only: C computes logf(sum) - (l - max) in fp32, the reference in float64.
        assert abs(float(got_loss[0]) - loss) <= 2.0 ** -21 * max(1.0, abs(loss)), \
            f"{case}: loss {got_loss[0]!r} vs reference {loss!r}: more than 4 fp32 ulp apart"
        payload = (Payload(OP_FC_BWD).ints(case.features, case.classes).floats(d["lr"], d["scale"])
                   .array(d["f"], F32).array(grad, F32).array(d["weight"], F32).array(d["bias"], F32)
                   .ints(case.features).bytes())
        status, (got_w, got_b, got_g) = drv.run(payload, F32, F32, F32)
        assert status == TT_OK
        assert_f32_bits(got_g, g_in, f"{case}: C ({drv.exe.name}) feature gradient vs head_bwd_update",
                        "(i,)")
        assert_f32_bits(got_w.reshape(weight.shape), weight, f"{case}: head weight after SGD", "(k, i)")
        assert_f32_bits(got_b, bias, f"{case}: head bias after SGD", "(k,)")


@pytest.mark.parametrize("case", HEAD_CASES, ids=str)
def test_reference_head_gradient_vs_autograd(case: HeadBwdCase):
    """softmax_xent and head_bwd_update against torch autograd in float64, within 1e-5."""
    d = make_head(case)
    d["lr"] = F32(1.0)  # the steps themselves are the gradients (a small lr would cancel digits in W - W')
    grad, loss = training.softmax_xent(d["logits"], d["label"])
    weight, bias = d["weight"].copy(), d["bias"].copy()
    g_in = training.head_bwd_update(weight, bias, d["f"], grad, d["lr"], d["scale"])
    logits = torch.tensor(d["logits"].astype(np.float64), requires_grad=True)
    want_loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([d["label"]]))
    want_loss.backward()
    ag = logits.grad.numpy()
    assert np.abs(grad - ag).max() <= 1e-5, f"{case}: dL/dlogits {grad} vs autograd {ag}"
    assert abs(loss - want_loss.item()) <= 1e-5 * max(1.0, abs(want_loss.item()))
    # the head on q (features f = (q - z) * scale): logits = W f + b
    q = torch.tensor(d["f"].astype(np.float64) / float(d["scale"]), requires_grad=True)
    w = torch.tensor(d["weight"].astype(np.float64), requires_grad=True)
    b = torch.tensor(d["bias"].astype(np.float64), requires_grad=True)
    out = w @ (q * float(d["scale"])) + b
    torch.nn.functional.cross_entropy(out[None], torch.tensor([d["label"]])).backward()
    err = np.abs(g_in - q.grad.numpy()).max() / max(np.abs(q.grad.numpy()).max(), 1e-30)
    assert err <= 1e-5, f"{case}: dL/dq of the features: relative error {err:.2e} > 1e-5"
    # SGD with lr = 1: the step is the gradient, up to 1e-5 of the largest and the fp32 rounding of the
    # stored weights themselves (a step far below half an ulp of a weight is absorbed)
    for what, old, new, want in (("weight", d["weight"], weight, w.grad.numpy()),
                                 ("bias", d["bias"], bias, b.grad.numpy())):
        err = np.abs((old.astype(np.float64) - new) - want)
        limit = 1e-5 * np.abs(want).max() + np.spacing(np.maximum(np.abs(old), np.abs(new)))
        assert np.all(err <= limit), f"{case}: {what} step vs autograd: error {err.max():.2e}"


# ---------------------------------------------------------------------------------------------
# Bad arguments


def _bad_payloads() -> list[tuple[str, bytes, tuple, int]]:
    """(name, payload, output dtypes, expected status) for argument checks of each kernel."""
    case = CONV_CASES[0]
    d = make_bwd(case)
    ho, wo = case.out_hw
    filt, fdims = c_filter(case.kind, d["w"])
    out_dims, in_dims = (1, ho, wo, case.c_out), (1, case.h, case.w, case.c_in)
    grad_q = d["G"].astype(np.int16)
    rng = XorShift32(1, STREAM_ROUNDING)

    def bwd_in(null_mask: int = 0, stride: int = case.stride, fd=fdims, od=out_dims) -> bytes:
        return (Payload(OP_CONV_BWD_IN, null_mask).ints(stride, case.pad, *fd, *od, *in_dims)
                .floats(d["sigma"]).ints(0).array(filt, np.int8).array(grad_q, np.int16)
                .array(d["g_in0"], F32).bytes())

    def update(null_mask: int = 0, c: int = 0, op: int = OP_CONV_UPDATE) -> bytes:
        return (Payload(op, null_mask).ints(-case.x_zero, case.stride, case.pad, *in_dims, *out_dims, *fdims)
                .ints(c).floats(0.05, d["sigma"]).state(rng).array(d["x"][:, :, 0], np.int8)
                .array(grad_q, np.int16).array(d["inv"], F32).array(filt, np.int8)
                .array(d["residuals"][0], np.int8).bytes())

    upd = (np.int8, np.int8, np.uint32)
    out = [(f"bwd_input_null_{i}", bwd_in(1 << i), (F32,), TT_ERR_ARG) for i in range(7)]
    out += [("bwd_input_stride_0", bwd_in(stride=0), (F32,), TT_ERR_ARG),
            ("bwd_input_filter_c_mismatch", bwd_in(fd=(fdims[0], fdims[1], fdims[2], fdims[3] + 1)), (F32,),
             TT_ERR_ARG),
            ("bwd_input_out_c_mismatch", bwd_in(od=(1, ho, wo, case.c_out + 1)), (F32,), TT_ERR_ARG)]
    out += [(f"update_null_{i}", update(1 << i), upd, TT_ERR_ARG) for i in range(11)]
    out += [("update_channel_negative", update(c=-1), upd, TT_ERR_ARG),
            ("update_channel_past_end", update(c=case.c_in), upd, TT_ERR_ARG)]
    out += [(f"xent_null_{i}", Payload(OP_XENT, 1 << i).ints(3, 0).array(np.zeros(3), F32).ints(3).bytes(),
             (F32, F32), TT_ERR_ARG) for i in range(3)]
    out += [(f"xent_label_{label}", Payload(OP_XENT).ints(3, label).array(np.zeros(3), F32).ints(3).bytes(),
             (F32, F32), TT_ERR_RANGE) for label in (-1, 3)]
    out += [("xent_no_classes", Payload(OP_XENT).ints(0, 0).array(np.zeros(1), F32).ints(1).bytes(),
             (F32, F32), TT_ERR_ARG)]
    out += [(f"fc_bwd_null_{i}", Payload(OP_FC_BWD, 1 << i).ints(4, 2).floats(0.1, 1.0).array(np.ones(4), F32)
             .array(np.ones(2), F32).array(np.ones(8), F32).array(np.ones(2), F32).ints(4).bytes(),
             (F32, F32, F32), TT_ERR_ARG) for i in range(5)]
    out += [("writeback_channel_past_end", Payload(OP_WRITEBACK).ints(*fdims, 0, case.c_in).state(rng)
             .array(d["residuals"][0], np.int8).array(filt, np.int8).bytes(), (np.int8, np.uint32),
             TT_ERR_ARG)]
    out += [(f"gradq_null_{i}", Payload(OP_GRADQ, 1 << i).ints(*out_dims).array(d["gy"], F32)
             .array(packed_mask(d["y"]), np.uint8).array(d["eff"], F32).ints(d["gy"].size).bytes(),
             (np.int16, F32), TT_ERR_ARG) for i in range(6)]
    return out


BAD = _bad_payloads()


@pytest.mark.parametrize(("name", "payload", "dtypes", "status"), BAD, ids=[b[0] for b in BAD])
def test_training_kernels_reject_bad_arguments(name, payload, dtypes, status, bwd_san_driver):
    got, _ = bwd_san_driver.run(payload, *dtypes)
    assert got == status, f"{name}: status {got}, expected {status}"
