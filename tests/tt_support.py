"""Shared helpers for the foundation tests (not a test module itself).

Model and data files are found through `compiler.cli.shared_dir()`; a test that needs one skips
with a reason only when the file is genuinely absent. `tiny_graph()` is a small hand-built graph
with odd sizes, every conv kind, a residual add and asymmetric zero points, used by the IR
verifier tests and the golden-file test of the emitter.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from compiler.cli import main, shared_dir
from compiler.ir import Add, AvgPool, Conv, Graph, Head, Tensor

MODEL_NAMES = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
ROOT = Path(__file__).resolve().parent.parent


def model_path(name: str) -> Path:
    path = shared_dir() / "models" / f"{name}.pkl"
    if not path.is_file():
        pytest.skip(f"model file {path} is absent")
    return path


def data_path() -> Path:
    path = shared_dir() / "data" / "cifar10-subset.npz"
    if not path.is_file():
        pytest.skip(f"data file {path} is absent")
    return path


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def write_model(d: object, path: Path, protocol: int = 2) -> Path:
    """Write `d` as a tiny-training model file: a zip with archive/data.pkl and archive/version."""
    return write_pickle_bytes(pickle.dumps(d, protocol=protocol), path)


def write_pickle_bytes(payload: bytes, path: Path) -> Path:
    """A torch-style zip around `payload`, byte for byte the same on every run (fixed timestamps)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("archive/data.pkl", date_time=(1980, 1, 1, 0, 0, 0)), payload)
        z.writestr(zipfile.ZipInfo("archive/version", date_time=(1980, 1, 1, 0, 0, 0)), "3\n")
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run `trady ARGV` in-process; return (exit code, stdout, stderr). argparse exits count too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def assert_one_line_error(rc: int, err: str, *needles: str) -> str:
    """Exit code 2 and exactly one line on stderr containing every needle; return the line."""
    lines = err.splitlines()
    assert rc == 2, f"exit code {rc}, expected 2; stderr:\n{err}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    for n in needles:
        assert n in lines[0], f"stderr line does not name {n!r}: {lines[0]}"
    return lines[0]


def first_mismatch(got: np.ndarray, want: np.ndarray, what: str, dims: str = "") -> str | None:
    """None if equal; else a message with the first mismatching index and both values."""
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    diff = np.flatnonzero(got.ravel() != want.ravel())
    if diff.size == 0:
        return None
    i = int(diff[0])
    idx = tuple(int(v) for v in np.unravel_index(i, got.shape))
    return (f"{what}: {diff.size} of {got.size} values differ; first at flat index {i}, "
            f"{dims or 'index'} {idx}: got {got.ravel()[i]!r}, expected {want.ravel()[i]!r}")


def assert_same(got: np.ndarray, want: np.ndarray, what: str, dims: str = "") -> None:
    msg = first_mismatch(got, want, what, dims)
    assert msg is None, msg


def _pattern(n: int, mul: int, add: int, lo: int, hi: int) -> np.ndarray:
    """Deterministic values in [lo, hi] without a random generator (stable across numpy versions)."""
    return (np.arange(n, dtype=np.int64) * mul + add) % (hi - lo + 1) + lo


def tiny_graph() -> Graph:
    """conv 3x3 -> [pw -> dw 3x3 -> pw] + residual -> dw 5x5/2 -> pw -> pool -> head (3 classes).

    Input 5x7x3. Channel 2 of conv0 is dead (w_scale 4e-9, bias INT32_MIN) as in the real models.
    """
    spec = [  # name, kind, input, c_in, c_out, k, stride, w_scale base, y_scale, y_zero
        ("conv0", "conv", "input", 3, 8, 3, 1, 2.0e-3, 0.07, -128),
        ("b0.pw1", "pointwise", "conv0", 8, 12, 1, 1, 3.0e-3, 0.09, -17),
        ("b0.dw", "depthwise", "b0.pw1", 12, 12, 3, 1, 9.0e-3, 0.11, -128),
        ("b0.pw2", "pointwise", "b0.dw", 12, 8, 1, 1, 2.5e-3, 0.13, 5),
        ("b1.dw", "depthwise", "b0.add", 8, 8, 5, 2, 6.0e-3, 0.12, -100),
        ("b1.pw", "pointwise", "b1.dw", 8, 6, 1, 1, 3.5e-3, 0.15, 9),
    ]
    tensors = {"input": Tensor("input", (5, 7, 3), 2 / 255, -3)}
    ops: list = []
    for i, (name, kind, x, cin, cout, k, stride, ws0, ys, yz) in enumerate(spec):
        xin = tensors[x]
        fan = 1 if kind == "depthwise" else cin
        w = _pattern(cout * fan * k * k, 37 + 2 * i, 11 * i, -127, 127).astype(np.int8)
        w = w.reshape(cout, fan, k, k)
        b = (_pattern(cout, 7919, 3 * i, -6000, 6000)).astype(np.int32)
        ws = (ws0 * (1 + 0.25 * (np.arange(cout) % 5))).astype(np.float32)
        if name == "conv0":
            ws[2], b[2] = 4e-9, np.iinfo(np.int32).min
        pad = (k - 1) // 2
        shape = ((xin.shape[0] + 2 * pad - k) // stride + 1, (xin.shape[1] + 2 * pad - k) // stride + 1, cout)
        tensors[name] = Tensor(name, shape, ys, yz)
        ops.append(Conv(name, kind, x, name, w, b, ws, stride))
        if name == "b0.pw2":
            tensors["b0.add"] = Tensor("b0.add", shape, 0.16, -7)
            ops.append(Add("b0.add", ("conv0", "b0.pw2"), "b0.add"))
    feat = tensors["b1.pw"]
    tensors["pool"] = Tensor("pool", (1, 1, feat.shape[2]), feat.scale, feat.zero)
    ops.append(AvgPool("pool", "b1.pw", "pool"))
    hw = ((_pattern(3 * feat.shape[2], 5, 1, 0, 12) - 6) / 8.0).astype(np.float32).reshape(3, feat.shape[2])
    head = Head("pool", hw, np.array([0.5, -0.25, 0.125], np.float32))
    return Graph(name="tiny", source="tiny.pkl", source_sha256="0" * 64, input="input", tensors=tensors,
                 ops=tuple(ops), head=head)


def tiny_model_dict() -> dict:
    """A tiny model in the tiny-training dictionary format (SPEC 3), for end-to-end compiles.

    Input 9x9x3 (odd); first_conv 3x3 -> block 0 [pw 8->12, dw 3x3, pw 12->8, residual] ->
    block 1 [dw 5x5/2, pw 8->6] -> feature_mix pw 6->10 -> pool -> classifier 10->4. Channel 2 of
    first_conv is dead (w_scale 4e-9, bias INT32_MIN). Deterministic, no random generator.
    """
    def conv(i: int, cin: int, cout: int, k: int, stride: int, dw: bool, x: tuple[float, int],
             y: tuple[float, int], res: int, ws0: float) -> dict:
        fan = 1 if dw else cin
        w = _pattern(cout * fan * k * k, 37 + 2 * i, 11 * i, -127, 127).astype(np.int8)
        w = w.reshape(cout, fan, k, k)
        b = _pattern(cout, 7919, 3 * i, -6000, 6000).astype(np.int32)
        ws = (ws0 * (1 + 0.25 * (np.arange(cout) % 5))).astype(np.float32)
        pad = (k - 1) // 2
        return {"in_channel": cin, "in_shape": res, "out_channel": cout,
                "out_shape": (res + 2 * pad - k) // stride + 1, "kernel_size": (k, k), "stride": stride,
                "groups": cin if dw else 1, "depthwise": dw, "act": None,
                "params": {"weight": w, "bias": b, "x_scale": x[0], "x_zero": x[1], "y_scale": y[0],
                           "y_zero": y[1], "w_scales": ws}}

    q_in, q0, q1, q2, q3 = (2 / 255, 0), (0.07, -128), (0.09, -128), (0.11, -128), (0.13, 5)
    q_add, q4, q5, q6 = (0.16, -7), (0.12, -128), (0.15, 9), (0.2, -128)
    first = conv(0, 3, 8, 3, 1, False, q_in, q0, 9, 2.0e-3)
    first["params"]["w_scales"][2] = np.float32(4e-9)
    first["params"]["bias"][2] = np.iinfo(np.int32).min
    blocks = [
        {"pointwise1": conv(1, 8, 12, 1, 1, False, q0, q1, 9, 3.0e-3),
         "depthwise": conv(2, 12, 12, 3, 1, True, q1, q2, 9, 9.0e-3),
         "pointwise2": conv(3, 12, 8, 1, 1, False, q2, q3, 9, 2.5e-3), "se": None,
         "residual": {"in_channel": 8, "in_shape": 9, "params": {"x_scale": q0[0], "x_zero": q0[1],
                                                                   "y_scale": q_add[0], "y_zero": q_add[1]}}},
        {"pointwise1": None, "depthwise": conv(4, 8, 8, 5, 2, True, q_add, q4, 9, 6.0e-3),
         "pointwise2": conv(5, 8, 6, 1, 1, False, q4, q5, 5, 3.5e-3), "se": None, "residual": None},
    ]
    mix = conv(6, 6, 10, 1, 1, False, q5, q6, 5, 4.0e-3)
    cls = conv(7, 10, 4, 1, 1, False, q6, (0.3, 3), 1, 5.0e-3)
    cls.pop("in_shape")
    return {"first_conv": first, "blocks": blocks, "feature_mix": mix, "classifier": cls}


# ---- C test drivers (tests/c/*_driver.c): build flags, build step, case-file payloads ----

HOST_FLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off"]
SAN_FLAGS = ["-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
             "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def build_dsp_driver(tmp: Path, name: str, flags: list[str], sources: list[Path]) -> Path:
    """build_driver with the sanitizers and the Cortex-M DSP kernels: each runtime_c/ file that has a namesake in
    runtime_c/arm/ is swapped for it (as `trady firmware --kernels dsp` does), and tests/c/acle_host/arm_acle.h
    stands in for the ACLE intrinsics."""
    arm = ROOT / "runtime_c" / "arm"
    swapped = [arm / p.name if p.parent == arm.parent and (arm / p.name).is_file() else p for p in sources]
    acle = ROOT / "tests" / "c" / "acle_host"
    return build_driver(tmp, name, [*SAN_FLAGS, "-D__ARM_FEATURE_DSP=1", f"-I{acle}", *flags], swapped)


def compile_tiny(tmp: Path, *options: str) -> Path:
    """Compile the tiny model (tiny_model_dict) with 10 classes at 300 units into tmp/tiny; returns that folder."""
    model = write_model(tiny_model_dict(), tmp / "tiny.pkl")
    out = tmp / "tiny"
    rc, _, err = run_cli(["compile", str(model), "--budget", "300", "--classes", "10", *options, "--out", str(out)])
    assert rc == 0, err
    return out


def build_driver(tmp: Path, name: str, flags: list[str], sources: list[Path]) -> Path:
    """Compile a test driver with the runtime sources; fail the test with gcc's message."""
    import subprocess

    require_tool("gcc")
    exe = tmp / name
    cmd = ["gcc", *flags, f"-I{ROOT / 'runtime_c'}", "-o", str(exe), *map(str, sources), "-lm"]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return exe


def assert_kernel_ok_in_qemu(board: str, tmp: Path, main: str, kernel: str, header: tuple[str, str], last: str,
                             defines: tuple[str, ...] | list[str] = ()) -> None:
    """Build the bare-metal test tests/c/<main> with runtime_c/arm/<kernel> (startup, semihosting and its output
    channel from runtime_c/boards/) for a QEMU board, with header = (file name, text) of its generated case table,
    run it and check that its last line is `last` (else fail with what it printed: the first differing case)."""
    import subprocess

    from compiler import emulate, firmware

    require_tool(firmware.CC)
    require_tool("qemu-system-arm")
    brd = firmware.BOARDS[board]
    (tmp / header[0]).write_text(header[1])
    runtime, boards = ROOT / "runtime_c", ROOT / "runtime_c" / "boards"
    elf = tmp / f"{Path(main).stem}.elf"
    cmd = [firmware.CC, *brd.cpu, "-O2", *firmware.CFLAGS, *defines, f"-I{tmp}", f"-I{runtime}", f"-I{boards}",
           str(ROOT / "tests" / "c" / main), str(runtime / "arm" / kernel), str(boards / "tt_startup.c"),
           str(boards / "tt_semihost.c"), str(boards / "tt_out_semihost.c"), f"-L{boards}", f"-T{brd.linker_script}",
           "-Wl,--defsym=TT_STACK_SIZE=16384", "-Wl,--defsym=TT_PERSIST_BYTES=0",
           "-Wl,--defsym=TT_PERSIST_ALIGN=2048", *firmware.LDFLAGS, "-o", str(elf)]
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    run = emulate.run(brd, elf, 120)
    assert run.lines and run.lines[-1] == last, "\n".join(run.lines[-20:]) + run.stderr


class Payload:
    """Builds a driver case file: magic, op and null mask as int32, more int32 fields, length-prefixed arrays."""

    magic = 0

    def __init__(self, op: int, null_mask: int = 0):
        import struct

        self.parts = [struct.pack("<iii", self.magic, op, null_mask)]

    def ints(self, *values: int) -> Payload:
        import struct

        self.parts.append(struct.pack(f"<{len(values)}i", *values))
        return self

    def array(self, a: np.ndarray, dtype) -> Payload:
        import struct

        a = np.ascontiguousarray(a, dtype=dtype)
        self.parts.append(struct.pack("<i", a.size) + a.tobytes())
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)
