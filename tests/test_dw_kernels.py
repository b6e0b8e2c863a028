"""The DSP depthwise kernel (runtime_c/arm/tt_depthwise_conv2d_s8.c) bit-exact against the reference executor.

The kernel has several paths, and every case here runs through all of them that apply:
- the band (each channel's padded rows as int16 pairs, SMLAD over tap pairs, four pixels a step, then a pair and
  a single pixel for the row's tail), holding the whole plane or a ring of K + 1 rows, unrolled for 3x3, 5x5 and
  7x7 at strides 1 and 2, a loop for other K in [2, 7]; K = 3 stride 1 takes the assembly steps on the cores;
- the window path (interior pixels unrolled, border pixels over their inside taps, four channels a word), taken
  where the band does not fit its stack buffer, for K = 1 and strides above 2; the "window" build shrinks the band
  buffer (TT_DW_BAND_WORDS) so that every case takes it;
- one channel at a time: the channels past the last group of four, and K > TT_DW_MAX_K (7);
- two requantisations: the prepared form of tt_arm_math.h (tt_rq_twice_biased, a multiplier >= 2^30 and a shift
  <= -2, deep shifts included) and tt_requantize_floor (a shift of -1 or above, a multiplier below 2^30): per
  channel in the band, per group of four in the window path;
- weight patches (the flash weight home): working slices replace the home weights of some channels.
The host builds run the kernel with tests/c/acle_host/arm_acle.h under the sanitizers; the QEMU test runs the
same cases compiled for Cortex-M7 and M4 (the real SXTB16/SMLAxy/SMMLAR and the inline assembly) and compares
on the target with the reference outputs computed here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import pytest
from test_kernels import (
    DRIVER_SRC,
    RUNTIME,
    TT_OK,
    ConvCase,
    Driver,
    conv_payload,
    make_conv,
    reference_conv,
)
from tt_support import (
    SAN_FLAGS,
    assert_kernel_ok_in_qemu,
    assert_same,
    build_driver,
    build_dsp_driver,
)

OP_DEPTHWISE_PATCH = 12  # op 2 (depthwise) + 10: with a weight patch
BAND_WORDS = 768  # TT_DW_BAND_WORDS of the kernel
MAX_K = 7  # TT_DW_MAX_K


@dataclass(frozen=True)
class DwCase:
    conv: ConvCase
    patch: tuple[int, ...] = ()  # patched channels (working slices from the case's seed)
    tweak: dict[int, tuple[int, int]] = field(default_factory=dict)  # channel -> (multiplier, shift)

    def __str__(self) -> str:
        return (f"{self.conv}{'-patch' + '.'.join(map(str, self.patch)) if self.patch else ''}"
                f"{'-tweak' + '.'.join(map(str, self.tweak)) if self.tweak else ''}")


def dw(h: int, w: int, c: int, k: int, stride: int, x_zero: int, y_zero: int, seed: int, **kw) -> DwCase:
    extreme = kw.pop("extreme", False)
    return DwCase(ConvCase("depthwise", h, w, c, c, k, stride, x_zero, y_zero, seed, extreme=extreme), **kw)


DEEP = (1518500250, -27)  # a deep shift: the prepared form's largest right shifts
SMALL = (12345, -3)  # a multiplier below 2^30: tt_requantize_floor
HALF = (1518500250, -1)  # a shift of -1: tt_requantize_floor (the prepared form needs a shift <= -2)
CASES = [
    dw(9, 7, 10, 3, 1, -17, 9, 101, patch=(0, 1, 2, 3, 9)),  # a whole group patched, and a tail channel
    dw(9, 11, 7, 3, 2, 127, -128, 102),
    dw(6, 6, 16, 3, 1, 0, 127, 103, tweak={1: DEEP}),
    dw(8, 8, 8, 3, 2, -128, 5, 104, tweak={5: DEEP, 6: DEEP}),
    dw(9, 11, 12, 5, 1, 33, -5, 105, tweak={2: SMALL}),
    dw(11, 9, 6, 5, 2, -60, 17, 106, patch=(1,)),
    dw(13, 11, 8, 7, 1, 2, 2, 107, patch=(4, 5, 6, 7)),
    dw(11, 13, 9, 7, 2, -9, 30, 108),
    dw(4, 4, 8, 7, 1, 40, -40, 109, patch=(0, 6)),  # mostly padding: the window path
    dw(3, 5, 12, 5, 1, -1, 64, 110, tweak={9: HALF}),
    dw(4, 3, 4, 7, 2, 1, -1, 111),
    dw(1, 1, 4, 3, 1, 5, 0, 112),  # every tap but the centre is padding
    dw(2, 3, 5, 3, 2, -100, 100, 113),
    dw(10, 9, 5, 9, 1, 11, -11, 114, patch=(0, 4)),  # K > 7: one channel at a time
    dw(5, 5, 8, 1, 1, 60, -60, 115),
    dw(5, 6, 4, 2, 1, -3, 3, 116),  # even K, no padding: the band's loop for any K
    dw(2, 170, 4, 3, 1, -20, 20, 117, patch=(2,)),  # wider than the band: the window path
    dw(3, 80, 4, 7, 1, 7, -7, 118),
    dw(7, 9, 8, 7, 1, -128, 3, 119, extreme=True),  # x - x_zero and w near their maxima
    dw(6, 6, 20, 7, 1, -128, 0, 120),
    dw(12, 41, 8, 3, 1, 9, -9, 121, patch=(1, 5), tweak={6: SMALL}),  # the ring, K = 3
    dw(11, 61, 4, 3, 2, -128, 12, 122, extreme=True),  # the ring, stride 2
    dw(9, 45, 4, 5, 1, 3, 4, 123, tweak={0: HALF}),
    dw(10, 39, 4, 5, 2, 100, -3, 124),
    dw(13, 33, 4, 7, 2, -5, 6, 125, patch=(3,)),
    dw(6, 35, 4, 7, 1, 55, 1, 133, tweak={2: SMALL}),
    dw(2, 150, 8, 3, 1, 13, -13, 134, tweak={5: HALF, 6: SMALL}),  # too wide for the band: the window path
    dw(5, 8, 4, 3, 1, 8, 1, 126),  # two steps of four, no tail
    dw(6, 9, 8, 3, 1, -2, -2, 127, tweak={3: SMALL, 4: DEEP}),  # steps of four and a single pixel
    dw(7, 10, 4, 5, 2, 20, 2, 128),  # five outputs a row: a step and a single pixel
    dw(8, 9, 4, 4, 2, -30, 7, 129),  # even K, stride 2: the loop for any K
    dw(7, 8, 8, 6, 1, 4, -4, 130, patch=(7,)),
    dw(9, 9, 8, 3, 3, 12, 0, 131),  # stride 3: the window path
    dw(1, 1, 8, 7, 1, 6, 6, 132),  # a 1x1 plane in the band: every tap but the centre is padding
]


def band_kind(c: ConvCase) -> str | None:
    """Which band the kernel takes ("whole" plane or "ring"), or None (its choice in tt_depthwise_conv2d_s8,
    transcribed)."""
    ho, wo = c.out_hw
    span = (max(c.w + 2 * c.pad, c.stride * (wo - 1) + c.k) + 2) // 2
    whole = max(c.h + 2 * c.pad, c.stride * (ho - 1) + c.k)
    if not (2 <= c.k <= MAX_K and c.stride <= 2 and c.c_in >= 4):
        return None
    if 4 * whole * span <= BAND_WORDS:
        return "whole"
    return "ring" if 4 * (c.k + 1) * span <= BAND_WORDS else None


def band_used(c: ConvCase) -> bool:
    return band_kind(c) is not None


def case_data(case: DwCase) -> tuple[dict, np.ndarray, np.ndarray]:
    """The case's data (make_conv, with the tweaks), the patch slices [len(patch), K, K] and the reference
    output (reference.conv_s8 with the working weights of the patched channels)."""
    d = make_conv(case.conv)
    for ch, (m, s) in case.tweak.items():
        d["mult"][ch], d["shift"][ch] = m, s
    k = case.conv.k
    rng = np.random.default_rng(case.conv.seed + 1000)
    slices = rng.integers(-128, 128, (len(case.patch), k, k)).astype(np.int8)
    w = d["w"].copy()
    for j, ch in enumerate(case.patch):
        w[ch, 0] = slices[j]
    return d, slices, reference_conv(case.conv, {**d, "w": w})


def payload(case: DwCase, d: dict, slices: np.ndarray) -> bytes:
    if not case.patch:
        return conv_payload(case.conv, d)
    head = conv_payload(case.conv, d, op=OP_DEPTHWISE_PATCH)
    ch = np.asarray(case.patch, "<i4")
    return (head + struct.pack("<i", ch.size) + ch.tobytes() + struct.pack("<i", slices.size)
            + slices.astype(np.int8).tobytes())


SOURCES = [DRIVER_SRC, *sorted(RUNTIME.glob("*.c"))]
# "window": a band buffer of 16 words, so that every case takes the window path
BUILDS = {"dsp": [], "dsp_window": ["-DTT_DW_BAND_WORDS=16"]}


@pytest.fixture(scope="module", params=list(BUILDS))
def dw_dsp_driver(request, tmp_path_factory) -> Driver:
    tmp = tmp_path_factory.mktemp(f"dw_{request.param}")
    return Driver(build_dsp_driver(tmp, f"kernel_driver_{request.param}", BUILDS[request.param], SOURCES), tmp)


@pytest.fixture(scope="module")
def dw_ref_driver(tmp_path_factory) -> Driver:
    """The reference kernels (runtime_c/), sanitizers on: the patched cases check the reference kernel too."""
    tmp = tmp_path_factory.mktemp("dw_ref")
    return Driver(build_driver(tmp, "kernel_driver_ref", SAN_FLAGS, SOURCES), tmp)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_dsp_depthwise_bit_exact(case: DwCase, dw_dsp_driver):
    d, slices, want = case_data(case)
    ho, wo = case.conv.out_hw
    status, out = dw_dsp_driver.run(payload(case, d, slices), np.int8)
    assert status == TT_OK, f"{case}: status {status}"
    assert_same(out.reshape(ho, wo, case.conv.c_out), want,
                f"{case}: DSP depthwise ({dw_dsp_driver.exe.name}) vs reference", "(h, w, c)")


@pytest.mark.parametrize("case", [c for c in CASES if c.patch], ids=str)
def test_reference_depthwise_with_patch(case: DwCase, dw_ref_driver):
    d, slices, want = case_data(case)
    ho, wo = case.conv.out_hw
    status, out = dw_ref_driver.run(payload(case, d, slices), np.int8)
    assert status == TT_OK, f"{case}: status {status}"
    assert_same(out.reshape(ho, wo, case.conv.c_out), want, f"{case}: reference C depthwise vs reference",
                "(h, w, c)")


def test_dw_cases_cover_the_paths():
    """The case list reaches every path of the kernel (guards against edits that drop one)."""
    convs = [c.conv for c in CASES]
    for k in (3, 5, 7):
        for s in (1, 2):
            for kind in ("whole", "ring"):
                assert any(c.k == k and c.stride == s and band_kind(c) == kind for c in convs), (k, s, kind)
    for s in (1, 2):
        assert any(band_used(c) and c.k % 2 == 0 and c.stride == s for c in convs), ("the loop for any K", s)
        for rem in range(4):  # the row's tail after the steps of four: none, a pair, a single pixel, both
            assert any(band_used(c) and c.stride == s and c.out_hw[1] % 4 == rem for c in convs), (s, rem)
    assert any(c.k == 3 and c.stride == 1 and band_used(c) and c.out_hw[1] >= 4 for c in convs), "the assembly"
    assert any(c.k <= MAX_K and not band_used(c) for c in convs), "the window path"
    assert any(c.stride > 2 for c in convs) and any(c.k == 1 for c in convs)
    assert any(c.k > MAX_K for c in convs) and any(c.c_in % 4 for c in convs) and any(c.w % 2 for c in convs)
    assert any(c.patch and band_used(c.conv) for c in CASES) and any(c.patch and not band_used(c.conv)
                                                                        for c in CASES)
    assert any(c.patch and band_kind(c.conv) == "ring" for c in CASES)
    assert any(c.patch and any(ch >= c.conv.c_in & ~3 for ch in c.patch) for c in CASES), "a patched tail"
    assert any(c.patch and set(range(4)) <= set(c.patch) for c in CASES), "a whole group patched"
    assert all(any(t in c.tweak.values() for c in CASES) for t in (DEEP, SMALL, HALF))
    assert any(band_used(c.conv) and c.tweak for c in CASES) and any(not band_used(c.conv) and c.tweak
                                                                       for c in CASES)
    assert any(c.conv.k == 3 and c.conv.stride == 1 and band_used(c.conv) and SMALL in c.tweak.values()
               for c in CASES), "a floor channel beside the assembly's"


# ---------------------------------------------------------------------------------------------
# The same cases on the Cortex-M cores (QEMU)



def c_array(name: str, ctype: str, a: np.ndarray) -> str:
    vals = ", ".join(str(int(v)) for v in np.asarray(a).ravel())
    return f"static {ctype} {name}[{max(a.size, 1)}] = {{{vals or '0'}}};\n"


def render_cases(cases: list[DwCase]) -> str:
    """conv_cases.h for tests/c/conv_qemu.c: each case's arrays and a conv_case table (see that file)."""
    from test_kernels import c_filter

    text, rows = [], []
    for i, case in enumerate(cases):
        c = case.conv
        d, slices, want = case_data(case)
        filt, fdims = c_filter("depthwise", d["w"])
        ho, wo = c.out_hw
        text += [c_array(f"in{i}", "const int8_t", d["x"]), c_array(f"filter{i}", "const int8_t", filt),
                 c_array(f"bias{i}", "const int32_t", d["bias"]), c_array(f"mult{i}", "const int32_t", d["mult"]),
                 c_array(f"shift{i}", "const int32_t", d["shift"]), c_array(f"want{i}", "const int8_t", want),
                 c_array(f"pch{i}", "const uint16_t", np.asarray(case.patch, np.int64)),
                 c_array(f"pslices{i}", "int8_t", slices),
                 c_array(f"poff{i}", "const uint32_t", np.arange(len(case.patch)) * c.k * c.k)]
        rows.append(f'    {{"{case}", {{1, {c.h}, {c.w}, {c.c_in}}}, {{{", ".join(map(str, fdims))}}}, '
                    f"{{1, {ho}, {wo}, {c.c_out}}}, {-c.x_zero}, {c.y_zero}, {c.stride}, {c.pad}, in{i}, "
                    f"filter{i}, bias{i}, mult{i}, shift{i}, want{i}, {len(case.patch)}, pch{i}, pslices{i}, "
                    f"poff{i}}},\n")
    return "".join(text) + "static const conv_case cases[] = {\n" + "".join(rows) + "};\n"


@pytest.mark.arm
@pytest.mark.qemu
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_qemu_dsp_depthwise_bit_exact(board, tmp_path):
    assert_kernel_ok_in_qemu(board, tmp_path, "conv_qemu.c", "tt_depthwise_conv2d_s8.c",
                             ("conv_cases.h", render_cases(CASES)), f"kernel: OK {len(CASES)} cases",
                             ["-DTT_QEMU_KERNEL=tt_depthwise_conv2d_s8"])


# ---------------------------------------------------------------------------------------------
# The depthwise input gradient (runtime_c/arm/tt_conv_bwd_s8.c): the stride-1 band path, with weight patches

@dataclass(frozen=True)
class DwBwdCase:
    conv: object  # test_backward_kernels.BwdConvCase
    patch: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.conv}{'-patch' + '.'.join(map(str, self.patch)) if self.patch else ''}"


def dwb(h: int, w: int, c: int, k: int, stride: int, seed: int, patch: tuple[int, ...] = (), **kw) -> DwBwdCase:
    from test_backward_kernels import BwdConvCase

    return DwBwdCase(BwdConvCase("depthwise", h, w, c, c, k, stride, 3, seed=seed, **kw), patch)


BWD_CASES = [
    dwb(9, 7, 10, 3, 1, 201, patch=(0, 1, 2, 3, 9)),  # a whole group and a tail channel patched
    dwb(8, 8, 8, 3, 1, 202, accumulate=True),
    dwb(9, 11, 12, 5, 1, 203, patch=(5,), grad="huge"),
    dwb(11, 9, 6, 5, 1, 204, accumulate=True, patch=(4, 5)),  # patched tail only
    dwb(13, 11, 8, 7, 1, 205, patch=(6,), weights="saturated"),
    dwb(8, 8, 9, 7, 1, 206, accumulate=True),  # 8x8 with 7x7: the band still pays
    dwb(4, 4, 8, 7, 1, 207, patch=(1,)),  # mostly padding: the tap lists
    dwb(5, 6, 4, 1, 1, 208, grad="sparse"),  # K = 1: the band's loop for any K
    dwb(9, 7, 8, 3, 2, 209, patch=(2, 3)),  # stride 2: the parity-class band
    dwb(11, 9, 10, 5, 2, 210, patch=(1, 4, 9), accumulate=True),
    dwb(13, 12, 9, 7, 2, 211, grad="sparse"),
    dwb(16, 16, 8, 7, 2, 212, patch=(0, 1, 2, 3)),
    dwb(4, 4, 8, 7, 2, 213),  # mostly padding: the tap lists
]
BWD_BUILDS = {"dsp": [], "dsp_lists": ["-DTT_DWB_BAND_WORDS=16"]}  # "lists": every case takes the tap lists


@pytest.fixture(scope="module", params=list(BWD_BUILDS))
def dwb_dsp_driver(request, tmp_path_factory):
    from test_backward_kernels import SOURCES as BWD_SOURCES
    from test_backward_kernels import Driver as BwdDriver

    tmp = tmp_path_factory.mktemp(f"dwb_{request.param}")
    exe = build_dsp_driver(tmp, f"backward_driver_{request.param}", BWD_BUILDS[request.param], BWD_SOURCES)
    return BwdDriver(exe, tmp)


@pytest.fixture(scope="module")
def dwb_ref_driver(tmp_path_factory):
    from test_backward_kernels import SOURCES as BWD_SOURCES
    from test_backward_kernels import Driver as BwdDriver

    tmp = tmp_path_factory.mktemp("dwb_ref")
    return BwdDriver(build_driver(tmp, "backward_driver_ref", SAN_FLAGS, BWD_SOURCES), tmp)


def dw_bwd_data(case: DwBwdCase) -> tuple[np.ndarray, dict, np.ndarray]:
    """The g_in a case must produce (fp32), make_bwd's data and the patch's working slices [n, K, K]."""
    from test_backward_kernels import F32, make_bwd

    from compiler import training

    c = case.conv
    d = make_bwd(c)
    k = c.k
    rng = np.random.default_rng(c.seed + 1000)
    slices = rng.integers(-128, 128, (len(case.patch), k, k)).astype(np.int8)
    w = d["w"].copy()
    for j, ch in enumerate(case.patch):
        w[ch, 0] = slices[j]
    want = training.conv_bwd_input(d["G"], d["sigma"], w, c.stride, c.pad, True, (c.h, c.w))
    if c.accumulate:
        want = training.accumulate_grad(d["g_in0"], want)
    return np.asarray(want, F32), d, slices


def check_dw_bwd_input(case: DwBwdCase, drv) -> None:
    from test_backward_kernels import F32, OP_DW_BWD_IN, Payload, assert_f32_bits, c_filter

    c = case.conv
    want, d, slices = dw_bwd_data(case)
    filt, fdims = c_filter("depthwise", d["w"])  # the home filter: the patch carries the working weights
    ho, wo = c.out_hw
    grad_q = d["G"].astype(np.int16)
    p = (Payload(OP_DW_BWD_IN if not case.patch else 12).ints(c.stride, c.pad, *fdims, 1, ho, wo, c.c_out,
                                                               1, c.h, c.w, c.c_in)
         .floats(d["sigma"]).ints(int(c.accumulate)).array(filt, np.int8).array(grad_q, np.int16)
         .array(d["g_in0"], F32))
    if case.patch:
        p = p.array(np.asarray(case.patch), np.int32).array(slices, np.int8)
    status, (g_in,) = drv.run(p.bytes(), F32)
    assert status == TT_OK, f"{case}: status {status}"
    assert_f32_bits(g_in.reshape(want.shape), want, f"{case} ({drv.exe.name}): input gradient", "(iy, ix, c)")


@pytest.mark.parametrize("case", BWD_CASES, ids=str)
def test_dsp_depthwise_bwd_input_bit_exact(case: DwBwdCase, dwb_dsp_driver):
    check_dw_bwd_input(case, dwb_dsp_driver)


@pytest.mark.parametrize("case", [c for c in BWD_CASES if c.patch], ids=str)
def test_reference_depthwise_bwd_input_with_patch(case: DwBwdCase, dwb_ref_driver):
    check_dw_bwd_input(case, dwb_ref_driver)


def test_dw_bwd_cases_cover_the_paths():
    """The backward case list reaches both bands (stride 1: 1x1, 3x3, 5x5, 7x7; stride 2: 3x3, 5x5, 7x7) and the
    tap lists."""
    def band(c) -> bool:  # dwb_fits, transcribed
        pf = c.k - 1 - c.pad
        ho, wo = c.out_hw

        def inside(n: int, out: int) -> int:
            return sum(min(i - pf + c.k, out) - max(i - pf, 0) for i in range(n))

        return (c.stride == 1 and c.k <= MAX_K and c.c_in >= 4 and (c.k + 1) * (wo + 2 * pf) * 2 <= BAND_WORDS
                and 14 * inside(c.w, wo) * inside(c.h, ho) >= 6 * c.w * c.k * c.h * c.k)

    def band2(c) -> bool:  # dwb2_fits, transcribed
        ho, wo = c.out_hw

        def taps(n: int, out: int) -> tuple[int, int]:
            pairs = [((i + c.pad) >> 1) - j for i in range(n) for j in range(c.k) if 2 * j + ((i + c.pad) & 1) < c.k]
            return len(pairs), sum(0 <= o < out for o in pairs)

        (ax, ix), (ay, iy) = taps(c.w, wo), taps(c.h, ho)
        pl, pr = (MAX_K + 1) // 2, MAX_K // 2 + 2
        return (c.stride == 2 and c.k <= MAX_K and c.c_in >= 4 and (c.k + 1) * (wo + pl + pr) * 2 <= BAND_WORDS
                and 13 * ix * iy >= 8 * ax * ay)

    convs = [c.conv for c in BWD_CASES]
    for k in (1, 3, 5, 7):
        assert any(band(c) and c.k == k for c in convs), k
    for k in (3, 5, 7):
        assert any(band2(c) and c.k == k for c in convs), k
    assert any(not band(c) and c.stride == 1 for c in convs) and any(not band2(c) and c.stride == 2 for c in convs)
    for path in (band, band2):
        assert any(c.patch and path(c.conv) for c in BWD_CASES), path.__name__
    assert any(c.conv.c_in % 4 for c in BWD_CASES)
