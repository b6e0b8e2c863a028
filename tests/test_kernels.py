"""C kernels (runtime_c/) bit-exact against the reference executor (compiler/reference.py).

A small C driver (tests/c/kernel_driver.c) reads one case from a binary file, calls one kernel and
writes its status and output. It is built twice per session: with the host flags of SPEC 9
(-std=c99 -O2 -Wall -Wextra -Werror -ffp-contract=off) and with AddressSanitizer + UBSan (cases
marked `san` run under that build too). Every array the driver hands a kernel is allocated with
exactly its length, so an out-of-bounds read or write fails under the sanitizer build.

Cases are frozen dataclasses with explicit seeds. Each conv case is also checked against a direct
numpy transcription of SPEC 4 (int64 taps over the zero-padded (x - x_zero) map), so the
reference itself is pinned to the contract and not only the C to the reference.
"""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from tt_support import (
    HOST_FLAGS,
    ROOT,
    SAN_FLAGS,
    assert_kernel_ok_in_qemu,
    assert_same,
    build_driver,
    build_dsp_driver,
    first_mismatch,
)
from tt_support import Payload as _Payload

from compiler import quant, reference
from compiler.ir import Conv, Head, Tensor

RUNTIME = ROOT / "runtime_c"
DRIVER_SRC = Path(__file__).resolve().parent / "c" / "kernel_driver.c"
MAGIC = 0x444B5454
OP_CONV, OP_DEPTHWISE, OP_POINTWISE, OP_ADD, OP_AVGPOOL, OP_DEQUANT, OP_FC = 1, 2, 3, 4, 5, 6, 7
OP_REQUANT, OP_SRDHM, OP_RDBPOT = 8, 9, 10
KERNEL_OP = {"conv": OP_CONV, "depthwise": OP_DEPTHWISE, "pointwise": OP_POINTWISE}
TT_OK, TT_ERR_ARG, TT_ERR_RANGE = 0, 1, 2
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ---------------------------------------------------------------------------------------------
# The driver


class Driver:
    def __init__(self, exe: Path, workdir: Path):
        self.exe, self.workdir, self.runs = exe, workdir, 0

    def run(self, payload: bytes, out_dtype) -> tuple[int, np.ndarray]:
        self.runs += 1
        case, out = self.workdir / f"case{self.runs}.bin", self.workdir / f"out{self.runs}.bin"
        case.write_bytes(payload)
        r = subprocess.run([str(self.exe), str(case), str(out)], check=False, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"{self.exe.name} exited {r.returncode}:\n{r.stderr[-4000:]}"
        raw = out.read_bytes()
        status, count = struct.unpack("<ii", raw[:8])
        data = np.frombuffer(raw[8:], dtype=out_dtype)
        assert data.size == count
        case.unlink()
        out.unlink()
        return status, data


def _build(tmp: Path, name: str, flags: list[str]) -> Path:
    return build_driver(tmp, name, flags, [DRIVER_SRC, *sorted(RUNTIME.glob("*.c"))])


@pytest.fixture(scope="session")
def driver(tmp_path_factory) -> Driver:
    tmp = tmp_path_factory.mktemp("kernel_driver")
    return Driver(_build(tmp, "kernel_driver", HOST_FLAGS), tmp)


@pytest.fixture(scope="session")
def san_driver(tmp_path_factory) -> Driver:
    tmp = tmp_path_factory.mktemp("kernel_driver_san")
    return Driver(_build(tmp, "kernel_driver_san", SAN_FLAGS), tmp)


# The Cortex-M DSP kernels of runtime_c/arm/ (the runtime files the firmware build swaps in), on the host:
# tests/c/acle_host/arm_acle.h stands in for the ACLE intrinsics. Built with the sanitizers; "short" shrinks the
# dense kernel's stack column and the pointwise kernel's widened buffer so that their long-input paths run too, the
# prepared chunk of the pointwise kernel (more chunk ends) and the first_conv row (wider inputs take the general path).
DSP_BUILDS = {"dsp": [], "dsp_short": ["-DTT_CONV_COLUMN=8", "-DTT_PW_GROUPS=6", "-DTT_PW_CHUNK=2", "-DTT_FC_WIDTH=8"]}


@pytest.fixture(scope="session", params=list(DSP_BUILDS))
def dsp_driver(request, tmp_path_factory) -> Driver:
    tmp = tmp_path_factory.mktemp(f"kernel_driver_{request.param}")
    exe = build_dsp_driver(tmp, f"kernel_driver_{request.param}", DSP_BUILDS[request.param],
                           [DRIVER_SRC, *sorted(RUNTIME.glob("*.c"))])
    return Driver(exe, tmp)


def drivers(request, san: bool) -> list[Driver]:
    """The host build, plus the sanitizer build for cases marked san."""
    return [request.getfixturevalue("driver")] + ([request.getfixturevalue("san_driver")] if san else [])


class Payload(_Payload):
    """A kernel_driver.c case file."""

    magic = MAGIC


# ---------------------------------------------------------------------------------------------
# Convolutions


@dataclass(frozen=True)
class ConvCase:
    kind: str  # conv | depthwise | pointwise
    h: int
    w: int
    c_in: int
    c_out: int
    k: int
    stride: int
    x_zero: int
    y_zero: int
    seed: int
    extreme: bool = False  # x - x_zero and w near their maxima: partial sums beyond 2^24 (float64 path)
    san: bool = False  # also run under the sanitizer build

    def __str__(self) -> str:
        return (f"{self.kind}-k{self.k}s{self.stride}-{self.h}x{self.w}x{self.c_in}to{self.c_out}"
                f"-zx{self.x_zero}zy{self.y_zero}{'-extreme' if self.extreme else ''}-seed{self.seed}")

    @property
    def pad(self) -> int:
        return (self.k - 1) // 2

    @property
    def out_hw(self) -> tuple[int, int]:
        def out(n: int) -> int:
            return (n + 2 * self.pad - self.k) // self.stride + 1

        return out(self.h), out(self.w)


CONV_CASES = [
    ConvCase("conv", 7, 9, 3, 5, 3, 1, -17, 9, seed=1, san=True),
    ConvCase("conv", 7, 9, 4, 6, 3, 2, 127, -128, seed=2, san=True),
    ConvCase("conv", 9, 7, 3, 4, 5, 1, -128, 127, seed=3),
    ConvCase("conv", 9, 7, 2, 3, 5, 2, 33, -5, seed=4, san=True),
    ConvCase("conv", 11, 13, 2, 3, 7, 2, -1, 64, seed=5),
    ConvCase("conv", 2, 3, 3, 2, 7, 1, 5, 0, seed=6, san=True),  # kernel larger than the input
    ConvCase("conv", 1, 1, 5, 4, 3, 2, -60, 17, seed=7),  # every tap but the centre is padding
    ConvCase("conv", 7, 9, 6, 5, 1, 2, 11, -11, seed=8),  # k = 1 through the dense kernel
    ConvCase("conv", 5, 5, 64, 4, 3, 1, -128, 3, seed=9, extreme=True, san=True),
    ConvCase("conv", 8, 8, 3, 16, 3, 2, 0, -128, seed=10),  # the first_conv shape, even size
    # the DSP first_conv path (3x3, stride 2, 3 channels): odd output width and height, an odd C_out over two
    # chunks of 16; an input wider than its row buffer (TT_FC_WIDTH = 128; 8 in the short build) takes the general path
    ConvCase("conv", 11, 9, 3, 19, 3, 2, -128, 127, seed=33),
    ConvCase("conv", 3, 131, 3, 4, 3, 2, 77, -7, seed=34),
    # first_conv's last pixels of a row: an output width of 3 (no 4-pixel step; within the short build's row) and 7
    ConvCase("conv", 6, 5, 3, 7, 3, 2, -3, 100, seed=35),
    ConvCase("conv", 5, 13, 3, 4, 3, 2, 90, -90, seed=36),
    ConvCase("depthwise", 7, 9, 5, 5, 3, 1, -17, 9, seed=11, san=True),
    ConvCase("depthwise", 7, 9, 6, 6, 3, 2, 100, -100, seed=12, san=True),
    ConvCase("depthwise", 9, 7, 4, 4, 5, 1, -128, 127, seed=13),
    ConvCase("depthwise", 9, 11, 3, 3, 5, 2, 127, -128, seed=14),
    ConvCase("depthwise", 13, 11, 7, 7, 7, 1, 2, 2, seed=15),
    ConvCase("depthwise", 11, 9, 5, 5, 7, 2, -9, 30, seed=16, san=True),
    ConvCase("depthwise", 3, 2, 4, 4, 7, 2, 1, -1, seed=17),  # kernel larger than the input
    ConvCase("depthwise", 7, 9, 5, 5, 1, 1, 40, -40, seed=18),
    ConvCase("depthwise", 6, 6, 200, 200, 7, 1, -128, 0, seed=19),
    ConvCase("pointwise", 7, 9, 6, 7, 1, 1, -17, 9, seed=21, san=True),
    ConvCase("pointwise", 7, 9, 5, 3, 1, 2, 127, -128, seed=22, san=True),
    ConvCase("pointwise", 8, 8, 4, 9, 1, 2, -128, 127, seed=23),
    ConvCase("pointwise", 1, 1, 16, 8, 1, 1, 3, -3, seed=24),
    ConvCase("pointwise", 5, 3, 1, 4, 1, 1, -50, 60, seed=25),
    ConvCase("pointwise", 3, 5, 600, 2, 1, 1, -128, 7, seed=26, extreme=True, san=True),
    # the DSP kernel's fixed small inputs (8 and 16 channels), odd pixel counts, strides, odd C_out, and more
    # output channels than one prepared chunk (TT_PW_CHUNK = 160; 2 in the short build)
    ConvCase("pointwise", 5, 7, 8, 33, 1, 1, -17, 9, seed=27),
    ConvCase("pointwise", 9, 9, 8, 6, 1, 2, 127, -128, seed=28),
    ConvCase("pointwise", 5, 5, 16, 9, 1, 2, -128, 5, seed=29),
    ConvCase("pointwise", 3, 3, 12, 170, 1, 1, 20, -20, seed=30),
    # the quads of four pixels: a last quad of two pixels, an odd group count above one (five groups), odd C_out
    ConvCase("pointwise", 2, 3, 20, 5, 1, 1, -128, 127, seed=41, extreme=True),
    ConvCase("pointwise", 3, 6, 24, 7, 1, 1, 5, -6, seed=42),
]


def make_conv(case: ConvCase) -> dict:
    """Deterministic data of a case: int8 HWC input, OIHW weights, bias, multipliers and shifts.

    Ordinary channels get a real scale that maps their accumulator spread onto about +-40 (most
    outputs neither clamped nor zero). The last c_out // 2 channels (at least one) are special,
    in this order: bias INT32_MIN (acc + bias wraps), a single weight 1 with shift +1 (a positive
    shift that is not clamped away), multiplier 2^30 (ties in both roundings), shift +3 on a dense
    channel (the left shift wraps), bias INT32_MAX, multiplier 0, multiplier INT32_MAX, shift -31.
    """
    rng = np.random.default_rng(case.seed)
    fan = 1 if case.kind == "depthwise" else case.c_in
    if case.extreme:  # x - x_zero and w near their maxima: partial sums beyond 2^24
        assert case.x_zero == -128
        x = rng.integers(126, 128, (case.h, case.w, case.c_in)).astype(np.int8)
        w = rng.integers(126, 128, (case.c_out, fan, case.k, case.k)).astype(np.int8)
    else:
        x = rng.integers(-128, 128, (case.h, case.w, case.c_in)).astype(np.int8)
        w = rng.integers(-127, 128, (case.c_out, fan, case.k, case.k)).astype(np.int8)
    special = list(range(case.c_out - 1, case.c_out - 1 - max(1, case.c_out // 2), -1))
    roles = dict(zip(special, ["bias_min", "sparse_pos_shift", "ties", "wrap_shift", "bias_max", "mult_0",
                               "mult_max", "shift_-31"], strict=False))
    for ch, role in roles.items():
        if role == "sparse_pos_shift":
            w[ch] = 0
            w[ch, 0, case.k // 2, case.k // 2] = 1
    acc = spec_accumulator(x, w, case)
    spread = np.maximum(acc.reshape(-1, case.c_out).std(axis=0), 1.0)
    shift = np.round(np.log2(40.0 / spread)).astype(np.int64) + rng.integers(-1, 2, case.c_out)
    shift = np.clip(shift, -31, 30)
    mult = rng.integers(1 << 30, 1 << 31, case.c_out, dtype=np.int64)
    # Centre the ordinary channels' outputs on 0: acc + bias around -y_zero / real.
    real = mult * np.exp2(shift.astype(np.float64) - 31)
    centre = -acc.reshape(-1, case.c_out).mean(axis=0) - case.y_zero / real
    bias = np.round(centre + spread * rng.uniform(-0.5, 0.5, case.c_out))
    bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int64)
    for ch, role in roles.items():
        if role == "bias_min":
            bias[ch] = INT32_MIN
        elif role == "sparse_pos_shift":
            bias[ch], shift[ch] = rng.integers(-20, 20), 1
        elif role == "ties":
            mult[ch] = 1 << 30
        elif role == "wrap_shift":
            shift[ch] = 3
        elif role == "bias_max":
            bias[ch] = INT32_MAX
        elif role == "mult_0":
            mult[ch], shift[ch] = 0, 0
        elif role == "mult_max":
            mult[ch] = INT32_MAX
        elif role == "shift_-31":
            shift[ch] = -31
    return {"x": x, "w": w, "bias": bias.astype(np.int32), "mult": mult.astype(np.int32),
            "shift": shift.astype(np.int32), "acc": acc, "roles": roles}


def spec_accumulator(x: np.ndarray, w: np.ndarray, case: ConvCase) -> np.ndarray:
    """SPEC 4 written out: sum over non-padded taps of w * (x - x_zero), int64, [Ho, Wo, C_out]."""
    p, s, k = case.pad, case.stride, case.k
    ho, wo = case.out_hw
    xp = np.pad(x.astype(np.int64) - case.x_zero, ((p, p), (p, p), (0, 0)))  # padded taps contribute 0
    acc = np.zeros((ho, wo, case.c_out), np.int64)
    for ky in range(k):
        for kx in range(k):
            patch = xp[ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s, :]
            if case.kind == "depthwise":
                acc += patch * w[:, 0, ky, kx].astype(np.int64)
            else:
                acc += patch @ w[:, :, ky, kx].astype(np.int64).T
    return acc


def spec_output(acc: np.ndarray, d: dict, y_zero: int) -> np.ndarray:
    wrapped = quant.wrap32_t(torch.from_numpy(acc + d["bias"].astype(np.int64)))
    m, s = (torch.from_numpy(d[k].astype(np.int64)) for k in ("mult", "shift"))
    y = quant.mbqm_t(wrapped, m, s)
    return (y + y_zero).clamp(-128, 127).numpy().astype(np.int8)


def reference_conv(case: ConvCase, d: dict) -> np.ndarray:
    """compiler.reference.conv_s8 on the case, returned as int8 HWC."""
    op = Conv("case", case.kind, "x", "y", d["w"], d["bias"], np.ones(case.c_out, np.float32), case.stride)
    q = quant.ConvQuant(d["mult"], d["shift"], -case.x_zero, case.y_zero)
    x = torch.from_numpy(d["x"].astype(np.int64)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = reference.conv_s8(x, op, q)
    return y[0].permute(1, 2, 0).numpy().astype(np.int8)


def c_filter(kind: str, w: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """OIHW weights in the kernel's layout, and the filter dims (n, h, w, c) of tt_kernels.h."""
    co, ci, k, _ = w.shape
    if kind == "depthwise":
        return w[:, 0].transpose(1, 2, 0), (1, k, k, co)
    if kind == "pointwise":
        return w[:, :, 0, 0], (co, 1, 1, ci)
    return w.transpose(0, 2, 3, 1), (co, k, k, ci)


def conv_payload(case: ConvCase, d: dict, null_mask: int = 0, **override) -> bytes:
    """Case file for the conv kernels; keyword overrides replace dims / params (for argument tests)."""
    filt, fdims = c_filter(case.kind, d["w"])
    ho, wo = case.out_hw
    f = {"in_dims": (1, case.h, case.w, case.c_in), "filter_dims": fdims, "out_dims": (1, ho, wo, case.c_out),
             "input_offset": -case.x_zero, "output_offset": case.y_zero, "stride": case.stride,
             "padding": case.pad,
             "op": KERNEL_OP[case.kind]}
    f.update(override)
    return (Payload(f["op"], null_mask).ints(*f["in_dims"], *f["filter_dims"], *f["out_dims"])
            .ints(f["input_offset"], f["output_offset"], f["stride"], f["padding"])
            .array(d["x"], np.int8).array(filt, np.int8).array(d["bias"], np.int32)
            .array(d["mult"], np.int32).array(d["shift"], np.int32).ints(ho * wo * case.c_out).bytes())


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_kernel_bit_exact(case: ConvCase, request):
    d = make_conv(case)
    want = spec_output(d["acc"], d, case.y_zero)
    ref = reference_conv(case, d)
    assert_same(ref, want, f"{case}: reference.conv_s8 vs SPEC 4 transcription", "(h, w, c)")
    ordinary = [ch for ch in range(case.c_out) if ch not in d["roles"]]
    inside = np.mean((want[..., ordinary] > -128) & (want[..., ordinary] < 127))
    assert inside > 0.5, f"{case}: only {inside:.0%} of ordinary outputs unclamped: the case tests too little"
    ho, wo = case.out_hw
    for drv in drivers(request, case.san):
        status, out = drv.run(conv_payload(case, d), np.int8)
        assert status == TT_OK, f"{case}: status {status} from {drv.exe.name}"
        assert_same(out.reshape(ho, wo, case.c_out), ref, f"{case}: C ({drv.exe.name}) vs reference",
                    "(h, w, c)")


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_dsp_conv_kernel_bit_exact(case: ConvCase, dsp_driver):
    """The DSP variants (runtime_c/arm/) on the same cases: bit-identical to the reference."""
    d = make_conv(case)
    ho, wo = case.out_hw
    status, out = dsp_driver.run(conv_payload(case, d), np.int8)
    assert status == TT_OK, f"{case}: status {status} from {dsp_driver.exe.name}"
    assert_same(out.reshape(ho, wo, case.c_out), reference_conv(case, d),
                f"{case}: DSP kernel ({dsp_driver.exe.name}) vs reference", "(h, w, c)")


@pytest.mark.arm
@pytest.mark.qemu
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_qemu_dsp_conv_bit_exact(board, tmp_path):
    """The dense DSP kernel (runtime_c/arm/tt_conv2d_s8.c) on the Cortex-M cores, its inline asm included: every
    dense case against the reference (tests/c/conv_qemu.c built for tt_conv2d_s8)."""
    from test_dw_kernels import c_array

    cases = [c for c in CONV_CASES if c.kind == "conv"]
    text, rows = [], []
    for i, case in enumerate(cases):
        d = make_conv(case)
        filt, fdims = c_filter(case.kind, d["w"])
        ho, wo = case.out_hw
        text += [c_array(f"in{i}", "const int8_t", d["x"]), c_array(f"filter{i}", "const int8_t", filt),
                 c_array(f"bias{i}", "const int32_t", d["bias"]), c_array(f"mult{i}", "const int32_t", d["mult"]),
                 c_array(f"shift{i}", "const int32_t", d["shift"]),
                 c_array(f"want{i}", "const int8_t", reference_conv(case, d))]
        rows.append(f'    {{"{case}", {{1, {case.h}, {case.w}, {case.c_in}}}, {{{", ".join(map(str, fdims))}}}, '
                    f"{{1, {ho}, {wo}, {case.c_out}}}, {-case.x_zero}, {case.y_zero}, {case.stride}, {case.pad}, "
                    f"in{i}, filter{i}, bias{i}, mult{i}, shift{i}, want{i}, 0, NULL, NULL, NULL}},\n")
    header = "".join(text) + "static const conv_case cases[] = {\n" + "".join(rows) + "};\n"
    assert_kernel_ok_in_qemu(board, tmp_path, "conv_qemu.c", "tt_conv2d_s8.c", ("conv_cases.h", header),
                             f"kernel: OK {len(cases)} cases", ["-DTT_QEMU_KERNEL=tt_conv2d_s8"])


# Weight patches (tt_weight_patch, the flash weight home): the filter array holds home weights that differ from the
# case's in the patched input channels, whose working slices come separately; the result must be the case's.
PATCH_CASES = [
    (ConvCase("pointwise", 5, 7, 8, 33, 1, 1, -17, 9, seed=27), [0, 5, 7]),
    (ConvCase("pointwise", 5, 5, 16, 9, 1, 2, -128, 5, seed=29), [3]),
    (ConvCase("pointwise", 3, 3, 12, 170, 1, 1, 20, -20, seed=30), [1, 2, 11]),
    (ConvCase("pointwise", 7, 9, 6, 7, 1, 1, -17, 9, seed=21), [0, 5]),
    (ConvCase("pointwise", 2, 3, 20, 5, 1, 1, -128, 127, seed=41, extreme=True), [0, 1, 2, 3, 19]),
    (ConvCase("pointwise", 3, 6, 24, 7, 1, 1, 5, -6, seed=42), [0, 1, 2, 3, 7, 22]),
    # more patched channels than the quads prepare (TT_PW_PATCHES = 16): the corrections per output
    (ConvCase("pointwise", 3, 6, 24, 7, 1, 1, 5, -6, seed=42), [c for c in range(24) if c % 5]),
    (ConvCase("conv", 9, 11, 3, 16, 3, 2, 0, -128, seed=31), [1]),
    (ConvCase("conv", 9, 8, 3, 5, 3, 2, 5, -3, seed=32), [0, 2]),
    (ConvCase("conv", 7, 9, 4, 6, 3, 2, 127, -128, seed=2), [3]),
    (ConvCase("depthwise", 7, 9, 5, 5, 3, 1, -17, 9, seed=11), [0, 4]),
]


def patch_home(case: ConvCase, d: dict, channels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Home weights changed in `channels` and their working slices (the case's weights there), concatenated."""
    rng = np.random.default_rng(case.seed + 1000)
    home = d["w"].copy()
    slices = []
    for c in channels:
        if case.kind == "depthwise":
            slices.append(d["w"][c, 0].reshape(-1))
            home[c, 0] = rng.integers(-127, 128, home[c, 0].shape)
        else:
            slices.append(d["w"][:, c].reshape(-1))
            home[:, c] = rng.integers(-127, 128, home[:, c].shape)
    return home, np.concatenate(slices).astype(np.int8) if slices else np.zeros(0, np.int8)


def patch_payload(case: ConvCase, d: dict, channels: list[int]) -> bytes:
    """The case with a weight patch: home weights changed in `channels`, their working slices appended."""
    home, sl = patch_home(case, d, channels)
    base = conv_payload(case, {**d, "w": home}, op=KERNEL_OP[case.kind] + 10)
    chan = np.asarray(channels, np.int32)
    return base + struct.pack("<i", chan.size) + chan.tobytes() + struct.pack("<i", sl.size) + sl.tobytes()


@pytest.mark.parametrize("case,channels", PATCH_CASES, ids=[f"{c}-patch{len(ch)}" for c, ch in PATCH_CASES])
def test_patched_conv_kernels_bit_exact(case: ConvCase, channels: list[int], driver, dsp_driver):
    """The reference and the DSP kernels with working slices of some input channels: as with the working weights."""
    d = make_conv(case)
    ho, wo = case.out_hw
    want = reference_conv(case, d)
    for drv in (driver, dsp_driver):
        status, out = drv.run(patch_payload(case, d, channels), np.int8)
        assert status == TT_OK, f"{case}: status {status} from {drv.exe.name}"
        assert_same(out.reshape(ho, wo, case.c_out), want, f"{case} patched {channels}: {drv.exe.name} vs reference",
                    "(h, w, c)")


# The DSP pointwise kernel on the Cortex-M cores (QEMU): its inline asm loops run only there. Every pointwise case,
# unpatched and patched, with the kernel's defaults, with chunks of two channels (whose first chunks have only
# channels of the prepared form: the quads' all-asm loop) and with the short knobs (quads up to 12 channels, then
# the pixel pairs' asm for 16 and 24, the C paths for 20 and 600; one prepared patch channel).
PW_QEMU_BUILDS = {"default": [], "chunks": ["-DTT_PW_CHUNK=2"],
                  "short": ["-DTT_PW_GROUPS=6", "-DTT_PW_CHUNK=2", "-DTT_PW_PATCHES=1"]}


def c_array(name: str, ctype: str, a: np.ndarray) -> str:
    vals = ", ".join(str(int(v)) for v in np.asarray(a).ravel())
    return f"static {ctype} {name}[{max(a.size, 1)}] = {{{vals or '0'}}};\n"


def render_pw_cases() -> tuple[str, int]:
    """conv_cases.h for tests/c/conv_qemu.c (its conv_case table) and the number of cases."""
    cases = [(c, []) for c in CONV_CASES if c.kind == "pointwise"]
    cases += [(c, ch) for c, ch in PATCH_CASES if c.kind == "pointwise"]
    text, rows = [], []
    for i, (case, channels) in enumerate(cases):
        d = make_conv(case)
        home, sl = patch_home(case, d, channels)
        filt, fdims = c_filter("pointwise", home)
        ho, wo = case.out_hw
        text += [c_array(f"in{i}", "const int8_t", d["x"]), c_array(f"filter{i}", "const int8_t", filt),
                 c_array(f"bias{i}", "const int32_t", d["bias"]), c_array(f"mult{i}", "const int32_t", d["mult"]),
                 c_array(f"shift{i}", "const int32_t", d["shift"]),
                 c_array(f"want{i}", "const int8_t", reference_conv(case, d)),
                 c_array(f"pch{i}", "const uint16_t", np.asarray(channels, np.int64)),
                 c_array(f"pslices{i}", "int8_t", sl),
                 c_array(f"poff{i}", "const uint32_t", np.arange(len(channels)) * case.c_out)]
        name = f"{case}-patch{len(channels)}" if channels else str(case)
        rows.append(f'    {{"{name}", {{1, {case.h}, {case.w}, {case.c_in}}}, {{{", ".join(map(str, fdims))}}}, '
                    f"{{1, {ho}, {wo}, {case.c_out}}}, {-case.x_zero}, {case.y_zero}, {case.stride}, 0, in{i}, "
                    f"filter{i}, bias{i}, mult{i}, shift{i}, want{i}, {len(channels)}, pch{i}, pslices{i}, "
                    f"poff{i}}},\n")
    return "".join(text) + "static const conv_case cases[] = {\n" + "".join(rows) + "};\n", len(cases)


@pytest.mark.arm
@pytest.mark.qemu
@pytest.mark.parametrize("build", list(PW_QEMU_BUILDS))
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_qemu_dsp_pointwise_bit_exact(board, build, tmp_path):
    header, n = render_pw_cases()
    assert_kernel_ok_in_qemu(board, tmp_path, "conv_qemu.c", "tt_pointwise_conv2d_s8.c", ("conv_cases.h", header),
                             f"kernel: OK {n} cases",
                             ["-DTT_QEMU_KERNEL=tt_pointwise_conv2d_s8", *PW_QEMU_BUILDS[build]])


def test_conv_cases_cover_the_contract():
    """The case list really has what the style guide asks for (guards against edits that drop it)."""
    kinds = {(c.kind, c.k, c.stride) for c in CONV_CASES}
    for k in (1, 3, 5, 7):
        assert ("conv", k, 1) in kinds or ("conv", k, 2) in kinds
    for k in (1, 3, 5, 7):
        assert any(c.kind == "depthwise" and c.k == k for c in CONV_CASES)
    assert ("pointwise", 1, 2) in kinds and ("pointwise", 1, 1) in kinds
    assert any(c.h % 2 and c.w % 2 and c.h != c.w for c in CONV_CASES)
    assert {c.x_zero for c in CONV_CASES} >= {-128, 127, 0} and {c.y_zero for c in CONV_CASES} >= {-128, 127}
    roles = {role for c in CONV_CASES for role in make_conv(c)["roles"].values()}
    assert roles == {"bias_min", "sparse_pos_shift", "ties", "wrap_shift", "bias_max", "mult_0", "mult_max",
                     "shift_-31"}
    # The float64 path of the reference (partial sums beyond 2^24) is exercised.
    assert any(np.abs(make_conv(c)["acc"]).max() >= 1 << 24 for c in CONV_CASES if c.extreme)


def test_sign_convention_input_offset_minus_x_zero_output_offset_plus_y_zero(driver):
    """input_offset = -x_zero, output_offset = +y_zero (tt_types.h), pinned in quant, reference and C.

    A 1x1 conv with weight 1, bias 0 and real scale 1.0 computes y = (x - x_zero) + y_zero; every
    int8 input value is run once. Passing the offsets with the other sign gives a different answer.
    """
    x_zero, y_zero = 5, -3
    assert quant.quantize_multiplier(1.0) == (1 << 30, 1)
    conv = Conv("id", "pointwise", "x", "y", np.ones((1, 1, 1, 1), np.int8), np.zeros(1, np.int32),
                np.ones(1, np.float32), 1)
    q = quant.conv_quant(conv, Tensor("x", (16, 16, 1), 1.0, x_zero), Tensor("y", (16, 16, 1), 1.0, y_zero))
    assert (q.input_offset, q.output_offset) == (-x_zero, +y_zero)
    assert (q.multiplier.tolist(), q.shift.tolist()) == ([1 << 30], [1])
    x = np.arange(-128, 128, dtype=np.int64).astype(np.int8).reshape(16, 16, 1)
    want = np.clip(x.astype(np.int64) - x_zero + y_zero, -128, 127).astype(np.int8)
    case = ConvCase("pointwise", 16, 16, 1, 1, 1, 1, x_zero, y_zero, seed=0)
    d = {"x": x, "w": np.ones((1, 1, 1, 1), np.int8), "bias": np.zeros(1, np.int32), "mult": q.multiplier,
         "shift": q.shift}
    assert_same(reference_conv(case, d), want, "reference with input_offset = -x_zero")
    status, out = driver.run(conv_payload(case, d), np.int8)
    assert status == TT_OK
    assert_same(out.reshape(16, 16, 1), want, "C with input_offset = -x_zero, output_offset = +y_zero")
    status, flipped = driver.run(conv_payload(case, d, input_offset=x_zero, output_offset=-y_zero), np.int8)
    assert status == TT_OK and first_mismatch(flipped.reshape(16, 16, 1), want, "flipped") is not None


# Argument checks -------------------------------------------------------------------------------

CONV_POINTERS = ["conv", "quant", "quant.multiplier", "quant.shift", "in_dims", "in", "filter_dims", "filter",
                 "bias", "out_dims", "out"]
SMALL = {kind: ConvCase(kind, 5, 7, 4 if kind != "pointwise" else 3, 4, 1 if kind == "pointwise" else 3, 2,
                        -3, 4, seed=99) for kind in KERNEL_OP}


@pytest.mark.parametrize("kind", list(KERNEL_OP))
@pytest.mark.parametrize("bit", range(len(CONV_POINTERS)), ids=CONV_POINTERS)
def test_conv_kernels_reject_null_pointers(kind, bit, san_driver):
    case = SMALL[kind]
    status, out = san_driver.run(conv_payload(case, make_conv(case), null_mask=1 << bit), np.int8)
    assert status == TT_ERR_ARG, f"tt_{kind} with NULL {CONV_POINTERS[bit]}: status {status}, not TT_ERR_ARG"
    assert np.all(out.view(np.uint8) == 0x5A), "a kernel that rejects its arguments must not write"


def _bad_dims(kind: str) -> dict[str, dict]:
    c = SMALL[kind]
    ho, wo = c.out_hw
    _, fdims = c_filter(kind, make_conv(c)["w"])
    f = list(fdims)
    bad = {
        "out_h": {"out_dims": (1, ho + 1, wo, c.c_out)},
        "out_w": {"out_dims": (1, ho, wo - 1, c.c_out)},
        "out_c": {"out_dims": (1, ho, wo, c.c_out + 1)},
        "batch_in": {"in_dims": (2, c.h, c.w, c.c_in)},
        "batch_out": {"out_dims": (2, ho, wo, c.c_out)},
        "filter_c": {"filter_dims": (f[0], f[1], f[2], f[3] + 1)},
        "filter_w": {"filter_dims": (f[0], f[1], f[2] + 2, f[3])},
        "stride_0": {"stride": 0},
        "padding_negative": {"padding": -1},
        "padding_k": {"padding": c.k},
        # Negative sizes, consistent with each other (the output size follows the same formula).
        "negative_c": {"in_dims": (1, c.h, c.w, -1), "filter_dims": (f[0], f[1], f[2], -1),
                           "out_dims": (1, ho, wo, -1 if kind == "depthwise" else c.c_out)},
        "negative_h": {"in_dims": (1, -9, c.w, c.c_in),
                       "out_dims": (1, int((-9 + 2 * c.pad - c.k) / c.stride) + 1, wo, c.c_out)},
    }
    if kind == "depthwise":
        bad["depthwise_filter_n"] = {"filter_dims": (2, f[1], f[2], f[3])}
        bad["depthwise_in_c"] = {"in_dims": (1, c.h, c.w, c.c_in + 1)}
    if kind == "pointwise":
        bad["pointwise_filter_h"] = {"filter_dims": (f[0], 3, 3, f[3]), "padding": 1,
                                     "out_dims": (1, ho, wo, c.c_out)}
    if kind == "conv":
        bad["conv_in_c"] = {"in_dims": (1, c.h, c.w, c.c_in + 1)}
    return bad


BAD_DIMS = [(kind, name) for kind in KERNEL_OP for name in _bad_dims(kind)]


@pytest.mark.parametrize(("kind", "what"), BAD_DIMS, ids=[f"{k}-{n}" for k, n in BAD_DIMS])
def test_conv_kernels_reject_inconsistent_dims(kind, what, san_driver):
    case = SMALL[kind]
    status, out = san_driver.run(conv_payload(case, make_conv(case), **_bad_dims(kind)[what]), np.int8)
    bad = _bad_dims(kind)[what]
    assert status == TT_ERR_ARG, f"tt_{kind} with {what} {bad}: status {status}, not TT_ERR_ARG"
    assert np.all(out.view(np.uint8) == 0x5A), "a kernel that rejects its arguments must not write"


@pytest.mark.parametrize("kind", list(KERNEL_OP))
@pytest.mark.parametrize(("field", "value"), [("input_offset", 129), ("input_offset", -128),
                                              ("output_offset", 128),
                                              ("output_offset", -129)])
def test_conv_kernels_reject_offsets_out_of_range(kind, field, value, driver):
    case = SMALL[kind]
    status, _ = driver.run(conv_payload(case, make_conv(case), **{field: value}), np.int8)
    assert status == TT_ERR_RANGE, f"tt_{kind} with {field} = {value}: status {status}, expected TT_ERR_RANGE"


# ---------------------------------------------------------------------------------------------
# Residual add


@dataclass(frozen=True)
class AddCase:
    shape: tuple[int, int, int]
    a: tuple[float, int]  # (scale, zero point)
    b: tuple[float, int]
    y: tuple[float, int]
    seed: int
    in_place: int = 0  # 0: separate output, 1: out = in1, 2: out = in2
    san: bool = False

    def __str__(self) -> str:
        return f"add-{'x'.join(map(str, self.shape))}-inplace{self.in_place}-seed{self.seed}"


ADD_CASES = [
    AddCase((7, 9, 5), (0.05, -3), (0.11, 17), (0.13, -7), seed=1, san=True),
    AddCase((7, 9, 5), (0.11, 17), (0.05, -3), (0.09, 20), seed=2, in_place=1, san=True),
    AddCase((3, 5, 7), (0.02, -128), (0.02, -128), (0.04, -128), seed=3, in_place=2, san=True),
    AddCase((1, 1, 1), (0.3, 127), (0.001, 0), (0.2, 0), seed=4),
    AddCase((11, 3, 2), (0.0575, 0), (0.1065, 12), (0.1065, 12), seed=5),  # the block-2 scales of mcunet
    AddCase((5, 5, 9), (1e-3, 5), (0.9, -5), (0.01, 1), seed=6),  # outputs mostly clamped
]


def make_add(case: AddCase) -> tuple[np.ndarray, np.ndarray, quant.AddQuant]:
    rng = np.random.default_rng(case.seed)
    a = rng.integers(-128, 128, case.shape).astype(np.int8)
    b = rng.integers(-128, 128, case.shape).astype(np.int8)
    ta, tb, ty = (Tensor(n, case.shape, s, z)
                  for n, (s, z) in zip("aby", (case.a, case.b, case.y), strict=True))
    return a, b, quant.add_quant(ta, tb, ty)


def add_payload(q: quant.AddQuant, a: np.ndarray, b: np.ndarray, in_place: int = 0, null_mask: int = 0,
                size: int | None = None, **override) -> bytes:
    keys = ("input1_offset", "input1_multiplier", "input1_shift", "input2_offset", "input2_multiplier",
            "input2_shift", "output_offset", "output_multiplier", "output_shift", "left_shift")
    f = {k: getattr(q, k) for k in keys}
    f.update(override)
    size = a.size if size is None else size
    return (Payload(OP_ADD, null_mask).ints(*f.values(), size, in_place).array(a, np.int8).array(b, np.int8)
            .ints(a.size).bytes())


@pytest.mark.parametrize("case", ADD_CASES, ids=str)
def test_add_kernel_bit_exact(case: AddCase, request):
    a, b, q = make_add(case)
    with torch.no_grad():
        ref = reference.add_s8(torch.from_numpy(a.astype(np.int64)), torch.from_numpy(b.astype(np.int64)), q)
    ref = ref.numpy().astype(np.int8)
    # The TFLite formula element by element with the scalar primitives (SPEC 4, residual add).
    ls = q.left_shift
    flat = []
    for x, z in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
        s = quant.mbqm((x + q.input1_offset) << ls, q.input1_multiplier, q.input1_shift) + \
            quant.mbqm((z + q.input2_offset) << ls, q.input2_multiplier, q.input2_shift)
        flat.append(quant.mbqm(s, q.output_multiplier, q.output_shift) + q.output_offset)
    want = np.clip(flat, -128, 127).astype(np.int8).reshape(case.shape)
    assert_same(ref, want, f"{case}: reference vs scalar")
    # And it means what it should: within one step of the real-valued sum.
    (sa, za), (sb, zb), (sy, zy) = case.a, case.b, case.y
    af, bf = a.astype(np.float64), b.astype(np.float64)
    real = np.clip(np.round((sa * (af - za) + sb * (bf - zb)) / sy + zy), -128, 127)
    assert np.abs(real - ref).max() <= 1, f"{case}: the add is more than one step off the real sum"
    for drv in drivers(request, case.san):
        status, out = drv.run(add_payload(q, a, b, case.in_place), np.int8)
        assert status == TT_OK
        assert_same(out.reshape(case.shape), ref, f"{case}: C ({drv.exe.name}) vs reference", "(h, w, c)")


@pytest.mark.parametrize("case", ADD_CASES, ids=str)
def test_dsp_add_kernel_bit_exact(case: AddCase, dsp_driver):
    """The Cortex-M residual add (runtime_c/arm/tt_add_s8.c): bit-identical to the reference."""
    a, b, q = make_add(case)
    with torch.no_grad():
        ref = reference.add_s8(torch.from_numpy(a.astype(np.int64)), torch.from_numpy(b.astype(np.int64)), q)
    status, out = dsp_driver.run(add_payload(q, a, b, case.in_place), np.int8)
    assert status == TT_OK
    assert_same(out.reshape(case.shape), ref.numpy().astype(np.int8), f"{case}: DSP add vs reference", "(h, w, c)")


# Parameters beside the quantiser's (multiplier in [2^30, 2^31), shift <= -2 for an output scale below 1/4): the
# DSP add's per-element tt_requantize_floor for the output (shift -1 or 0, a multiplier below 2^30 or INT32_MIN, an
# output offset beyond the prepared form's), INT32_MIN input multipliers in its tables, and element counts that end in
# each tail of its 4-element step.
DSP_ADD_OVERRIDES = {
    "quantiser": {},
    # left shift 0 keeps the sums small enough that these outputs are mostly not clamped
    "out_shift_-1": {"output_shift": -1, "left_shift": 0},
    "out_shift_0": {"output_shift": 0, "left_shift": 0},
    "out_shift_-2": {"output_shift": -2, "left_shift": 0},
    "out_shift_-31": {"output_shift": -31},
    "out_multiplier_below_2^30": {"output_multiplier": (1 << 30) - 1},
    "out_multiplier_min": {"output_multiplier": -(1 << 31), "output_shift": -1, "left_shift": 0},
    "in1_multiplier_min": {"input1_multiplier": -(1 << 31)},
    "in2_multiplier_min_shift_-3": {"input2_multiplier": -(1 << 31), "input2_shift": -3},
    "in_shifts_-31": {"input1_shift": -31, "input2_shift": -31, "left_shift": 0},
    "out_offset_big": {"output_offset": 70000},
    "out_offset_big_negative": {"output_offset": -70000},
    "out_offset_2^16": {"output_offset": 1 << 16},
    # all clamped; the prepared form's 1 + 2 * output_offset would overflow here
    "out_offset_2^30-1": {"output_offset": (1 << 30) - 1},
    "out_offset_-2^30+1": {"output_offset": 1 - (1 << 30)},
    "size_1": {"size": 1},
    "size_2": {"size": 2},
    "size_3": {"size": 3},
    "size_6": {"size": 6},
    "size_0": {"size": 0},
}


@pytest.mark.parametrize("override", list(DSP_ADD_OVERRIDES.values()), ids=list(DSP_ADD_OVERRIDES))
@pytest.mark.parametrize("seed", [21, 22])
def test_dsp_add_paths_bit_exact(override, seed, driver, dsp_driver):
    """Every path of the DSP add against the reference C kernel, on 1,023 elements (all 256 values of each input)."""
    rng = np.random.default_rng(seed)
    case = AddCase((11, 31, 3), (0.0575, 0), (0.1065, 12), (0.1065, 12), seed=seed) if seed == 21 else \
        AddCase((11, 31, 3), (0.02, -128), (0.3, 127), (0.5, -3), seed=seed, in_place=1)
    a, b, q = make_add(case)
    a.ravel()[:256] = np.arange(-128, 128, dtype=np.int8)
    b.ravel()[:256] = rng.permutation(np.arange(-128, 128)).astype(np.int8)
    payload = add_payload(q, a, b, case.in_place, **override)
    status, want = driver.run(payload, np.int8)
    assert status == TT_OK
    status, out = dsp_driver.run(payload, np.int8)
    assert status == TT_OK
    assert_same(out, want, f"{case} {override}: DSP add vs reference C", "(i,)")


@pytest.mark.parametrize("bit", range(4), ids=["params", "in1", "in2", "out"])
def test_add_rejects_null_pointers(bit, san_driver):
    a, b, q = make_add(ADD_CASES[0])
    status, out = san_driver.run(add_payload(q, a, b, null_mask=1 << bit), np.int8)
    assert status == TT_ERR_ARG
    assert np.all(out.view(np.uint8) == 0x5A)


@pytest.mark.parametrize(("override", "status"), [
    ({"size": -1}, TT_ERR_ARG),
    ({"input1_shift": 1}, TT_ERR_RANGE),
    ({"input2_shift": 1}, TT_ERR_RANGE),
    ({"output_shift": 2}, TT_ERR_RANGE),
    ({"left_shift": 21}, TT_ERR_RANGE),
    ({"left_shift": -1}, TT_ERR_RANGE),
], ids=["negative_size", "input1_shift", "input2_shift", "output_shift", "left_shift_21",
        "left_shift_negative"])
def test_add_rejects_bad_arguments(override, status, san_driver):
    a, b, q = make_add(ADD_CASES[0])
    got, out = san_driver.run(add_payload(q, a, b, **override), np.int8)
    assert got == status, f"tt_add_s8 with {override}: status {got}, expected {status}"
    assert np.all(out.view(np.uint8) == 0x5A)


# ---------------------------------------------------------------------------------------------
# Global average pool


@dataclass(frozen=True)
class PoolCase:
    shape: tuple[int, int, int]
    seed: int
    fill: str = "random"  # random | ties | min | max
    san: bool = False

    def __str__(self) -> str:
        return f"avgpool-{'x'.join(map(str, self.shape))}-{self.fill}-seed{self.seed}"


POOL_CASES = [
    PoolCase((7, 9, 5), seed=1, san=True),
    PoolCase((4, 4, 6), seed=2, fill="ties", san=True),
    PoolCase((2, 1, 8), seed=3, fill="ties"),
    PoolCase((1, 1, 3), seed=4),
    PoolCase((5, 5, 2), seed=5, fill="min"),
    PoolCase((3, 3, 2), seed=6, fill="max"),
    PoolCase((4, 4, 320), seed=7),  # mbv2-like feature map
]


def make_pool(case: PoolCase) -> np.ndarray:
    rng = np.random.default_rng(case.seed)
    h, w, c = case.shape
    n = h * w
    if case.fill == "min":
        return np.full(case.shape, -128, np.int8)
    if case.fill == "max":
        return np.full(case.shape, 127, np.int8)
    if case.fill == "random":
        return rng.integers(-128, 128, case.shape).astype(np.int8)
    # ties: every channel's sum is an odd multiple of n / 2, so the mean ends in .5 exactly.
    assert n % 2 == 0
    x = rng.integers(-100, 101, (n, c)).astype(np.int64)
    for ch in range(c):
        s = int(x[:, ch].sum())
        delta = (s - s % n + n // 2) - s  # |delta| < n: add +-1 to |delta| of the n values
        x[:abs(delta), ch] += 1 if delta > 0 else -1
        assert int(x[:, ch].sum()) % n == n // 2
    return x.reshape(h, w, c).astype(np.int8)


def pool_spec(x: np.ndarray) -> np.ndarray:
    """Mean over H*W rounded half away from zero, with exact fractions."""
    n = x.shape[0] * x.shape[1]
    out = []
    for s in x.reshape(n, -1).astype(np.int64).sum(axis=0).tolist():
        m = Fraction(s, n)
        r = int(abs(m) + Fraction(1, 2)) * (1 if m >= 0 else -1)
        out.append(max(-128, min(127, r)))
    return np.array(out, np.int8)


def test_avgpool_rounding_hand_values(driver):
    """Per channel over 2x2: [1, 1, 0, 0] -> 0.5 -> 1; [-1, -1, 0, 0] -> -0.5 -> -1;
    [1, 0, 0, 0] -> 0.25 -> 0; [-3, 0, 0, 0] -> -0.75 -> -1."""
    x = np.array([[1, -1, 1, -3], [1, -1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], np.int8).reshape(2, 2, 4)
    want = np.array([1, -1, 0, -1], np.int8)
    with torch.no_grad():
        ref = reference.avgpool_s8(torch.from_numpy(x.astype(np.int64)).permute(2, 0, 1)[None])
    assert_same(ref.numpy().ravel().astype(np.int8), want, "reference.avgpool_s8")
    status, out = driver.run(Payload(OP_AVGPOOL).ints(1, 2, 2, 4).array(x, np.int8).ints(4).bytes(), np.int8)
    assert status == TT_OK
    assert_same(out, want, "tt_avgpool_global_s8")


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool_kernel_bit_exact(case: PoolCase, request):
    x = make_pool(case)
    with torch.no_grad():
        ref = reference.avgpool_s8(torch.from_numpy(x.astype(np.int64)).permute(2, 0, 1)[None])
    ref = ref.numpy().reshape(-1).astype(np.int8)
    assert_same(ref, pool_spec(x), f"{case}: reference vs exact rounding", "(c,)")
    h, w, c = case.shape
    for drv in drivers(request, case.san):
        status, out = drv.run(Payload(OP_AVGPOOL).ints(1, h, w, c).array(x, np.int8).ints(c).bytes(), np.int8)
        assert status == TT_OK
        assert_same(out, ref, f"{case}: C ({drv.exe.name}) vs reference", "(c,)")


@pytest.mark.parametrize(("null_mask", "dims", "status"), [
    (1, (1, 2, 2, 4), TT_ERR_ARG), (2, (1, 2, 2, 4), TT_ERR_ARG), (4, (1, 2, 2, 4), TT_ERR_ARG),
    (0, (2, 2, 2, 4), TT_ERR_ARG), (0, (1, 0, 2, 4), TT_ERR_ARG), (0, (1, 2, 0, 4), TT_ERR_ARG),
    (0, (1, 4096, 4096, 1), TT_ERR_RANGE),
], ids=["null_dims", "null_in", "null_out", "batch_2", "h_0", "w_0", "too_many_taps"])
def test_avgpool_rejects_bad_arguments(null_mask, dims, status, san_driver):
    x = np.zeros((2, 2, 4), np.int8)
    payload = Payload(OP_AVGPOOL, null_mask).ints(*dims).array(x, np.int8).ints(4).bytes()
    got, out = san_driver.run(payload, np.int8)
    assert got == status, f"tt_avgpool_global_s8 dims {dims} null mask {null_mask}: status {got} != {status}"
    assert np.all(out.view(np.uint8) == 0x5A)


# ---------------------------------------------------------------------------------------------
# fp32 head: dequantise + fully connected


@dataclass(frozen=True)
class HeadCase:
    features: int
    classes: int
    zero: int
    scale: float
    seed: int
    batch: int = 3

    def __str__(self) -> str:
        return f"head-{self.features}x{self.classes}-z{self.zero}-seed{self.seed}"


HEAD_CASES = [HeadCase(37, 5, -7, 0.0234, seed=1), HeadCase(320, 10, -128, 0.1065, seed=2),
              HeadCase(1, 2, 127, 1e-3, seed=3), HeadCase(1280, 3, 0, 0.05, seed=4, batch=1)]


@pytest.mark.parametrize("case", HEAD_CASES, ids=str)
def test_head_bit_exact(case: HeadCase, driver, san_driver):
    """tt_dequantize_s8_f32 then tt_fully_connected_f32 give reference.head_f32's logits bit for bit."""
    rng = np.random.default_rng(case.seed)
    pooled = rng.integers(-128, 128, (case.batch, case.features)).astype(np.int8)
    head = Head("pool", rng.normal(0, 0.3, (case.classes, case.features)).astype(np.float32),
                rng.normal(0, 1, case.classes).astype(np.float32))
    scale = np.float32(case.scale)
    want = reference.head_f32(pooled, head, case.scale, case.zero)
    for drv in (driver, san_driver):
        for i in range(case.batch):
            status, feat = drv.run(Payload(OP_DEQUANT).ints(case.features, case.zero,
                                                            int(np.array(scale).view(np.int32)))
                                   .array(pooled[i], np.int8).ints(case.features).bytes(), np.float32)
            assert status == TT_OK
            exact = (pooled[i].astype(np.float32) - np.float32(case.zero)) * scale
            assert_same(feat.view(np.int32), exact.view(np.int32), f"{case}: dequantised features (bits)")
            status, logits = drv.run(Payload(OP_FC).ints(case.features, case.classes).array(feat, np.float32)
                                     .array(head.weight, np.float32).array(head.bias, np.float32)
                                     .ints(case.classes).bytes(), np.float32)
            assert status == TT_OK
            assert_same(logits.view(np.int32), want[i].view(np.int32),
                        f"{case}: image {i} logits (float32 bits) C ({drv.exe.name}) vs reference.head_f32")


@pytest.mark.parametrize(("op", "null_mask", "fields"), [
    (OP_DEQUANT, 1, (4, 0, 0)), (OP_DEQUANT, 2, (4, 0, 0)), (OP_DEQUANT, 0, (-1, 0, 0)),
    (OP_FC, 1, (4, 2)), (OP_FC, 2, (4, 2)), (OP_FC, 4, (4, 2)), (OP_FC, 8, (4, 2)),
    (OP_FC, 0, (0, 2)), (OP_FC, 0, (4, 0)),
], ids=["deq_null_in", "deq_null_out", "deq_negative_size", "fc_null_in", "fc_null_weight", "fc_null_bias",
        "fc_null_out", "fc_no_features", "fc_no_classes"])
def test_head_kernels_reject_bad_arguments(op, null_mask, fields, san_driver):
    p = Payload(op, null_mask).ints(*fields)
    if op == OP_DEQUANT:
        p.array(np.zeros(4, np.int8), np.int8).ints(4)
    else:
        p.array(np.zeros(4), np.float32).array(np.zeros(8), np.float32).array(np.zeros(2), np.float32).ints(2)
    status, out = san_driver.run(p.bytes(), np.float32)
    assert status == TT_ERR_ARG
    assert np.all(out.view(np.uint32) == 0x5A5A5A5A)


# ---------------------------------------------------------------------------------------------
# Requantisation primitives (tt_requant.h) against compiler/quant.py


def _requant_cases(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    edge_x = [INT32_MIN, INT32_MIN + 1, -(1 << 30), -3, -2, -1, 0, 1, 2, 3, 1 << 30, INT32_MAX]
    edge_m = [0, 1 << 30, (1 << 30) + 1, INT32_MAX]
    xs = [x for x in edge_x for _ in edge_m] + \
        rng.integers(INT32_MIN, INT32_MAX, n, endpoint=True).tolist() + rng.integers(-5000, 5000, n).tolist()
    ms = [m for _ in edge_x for m in edge_m] + rng.integers(1 << 30, 1 << 31, 2 * n).tolist()
    ss = rng.integers(-31, 31, len(xs)).tolist()
    return np.array(xs, np.int64), np.array(ms, np.int64), np.array(ss, np.int64)


def _requant_payload(op: int, x, m, s) -> bytes:
    return Payload(op).array(x, np.int32).array(m, np.int32).array(s, np.int32).bytes()


def test_c_requantize_matches_python(driver, san_driver):
    x, m, s = _requant_cases(7, 2000)
    want = np.array([quant.mbqm(int(a), int(b), int(c)) for a, b, c in zip(x, m, s, strict=True)], np.int32)
    for drv in (driver, san_driver):
        status, got = drv.run(_requant_payload(OP_REQUANT, x, m, s), np.int32)
        assert status == TT_OK
        msg = first_mismatch(got, want, "tt_requantize vs quant.mbqm")
        if msg:
            i = int(np.flatnonzero(got != want)[0])
            msg += f" for x={x[i]}, multiplier={m[i]}, shift={s[i]}"
        assert msg is None, msg


def test_c_srdhm_and_rdbpot_match_python(driver, san_driver):
    x, m, _ = _requant_cases(8, 1000)
    x = np.append(x, [INT32_MIN, INT32_MIN, INT32_MAX])
    m = np.append(m, [INT32_MIN, INT32_MAX, INT32_MIN])  # the one saturating product, and its neighbours
    e = np.resize(np.arange(32), x.size)
    for drv in (driver, san_driver):
        status, got = drv.run(_requant_payload(OP_SRDHM, x, m, e), np.int32)
        assert status == TT_OK
        assert_same(got, np.array([quant.srdhm(int(a), int(b)) for a, b in zip(x, m, strict=True)], np.int32),
                    "tt_srdhm vs quant.srdhm")
        status, got = drv.run(_requant_payload(OP_RDBPOT, x, m, e), np.int32)
        assert status == TT_OK
        want = np.array([quant.rdbpot(int(a), int(b)) for a, b in zip(x, e, strict=True)], np.int32)
        assert_same(got, want, "tt_rdbpot vs quant.rdbpot")


# ---------------------------------------------------------------------------------------------
# Status names


def test_status_names(driver):
    """tt_status_name names every enumerator of tt_status, distinctly; anything else is 'unknown'."""
    header = (RUNTIME / "tt_types.h").read_text()
    body = re.search(r"typedef enum \{(.*?)\} tt_status;", header, re.DOTALL).group(1)
    values = {name: int(v) for name, v in re.findall(r"\b(TT_\w+)\s*=\s*(\d+)", body)}
    count = values.pop("TT_STATUS_COUNT")
    assert sorted(values.values()) == list(range(count)), f"status values {values} are not 0..{count - 1}"
    r = subprocess.run([str(driver.exe), "status"], capture_output=True, text=True, check=True)
    names = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    known = [names[str(v)] for v in range(count)]
    assert all(n and n != "unknown status" for n in known), names
    assert len(set(known)) == count, f"status names are not distinct: {known}"
    assert names[str(TT_OK)] == "ok"
    assert names["-1"] == names[str(count)] == "unknown status"
