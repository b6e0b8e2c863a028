"""Host simulator driver: build a compiled project with gcc (its Makefile) and run `host_sim`.

Outputs are parsed back into numpy arrays in the layout the reference executor returns, so
`verify` can compare them element by element.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler.errors import TradyError


def build(folder: Path, sanitize: bool = False) -> Path:
    target = "host_sim_san" if sanitize else "host_sim"
    r = subprocess.run(["make", "-s", "-C", str(folder), target], check=False, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise TradyError(f"{folder}: C build failed:\n{r.stdout}{r.stderr}".rstrip())
    return Path(folder) / target


def run_forward(exe: Path, images: np.ndarray, op_sizes: list[int], classes: int,
                options: tuple[str, ...] = ()) -> tuple[list[np.ndarray], np.ndarray]:
    """Run `host_sim forward`; return per-op int8 outputs ([N, size] each) and logits [N, classes]."""
    n = len(images)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "images.bin", Path(tmp) / "out.bin"
        np.ascontiguousarray(images, np.int8).tofile(src)
        r = subprocess.run([str(exe), "forward", str(src), str(n), str(dst), *options], check=False,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise TradyError(f"{exe.name} forward failed (exit {r.returncode}): {r.stderr.strip()}")
        raw = np.fromfile(dst, np.uint8)
    per_image = sum(op_sizes) + 4 * classes
    if raw.size != n * per_image:
        raise TradyError(f"{exe.name}: wrote {raw.size} bytes, expected {n} x {per_image}")
    raw = raw.reshape(n, per_image)
    outs, pos = [], 0
    for size in op_sizes:
        outs.append(raw[:, pos:pos + size].view(np.int8))
        pos += size
    logits = np.ascontiguousarray(raw[:, pos:]).view(np.float32)
    return outs, logits


def run_bench(exe: Path, images: np.ndarray) -> float:
    """Forward time per image in seconds (best of three passes over the images)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "images.bin"
        np.ascontiguousarray(images, np.int8).tofile(src)
        r = subprocess.run([str(exe), "bench", str(src), str(len(images))], check=False,
                           capture_output=True, text=True)
    if r.returncode != 0:
        raise TradyError(f"{exe.name} bench failed: {r.stderr.strip()}")
    return float(r.stdout.split()[-1]) * 1e-6


def run_trace(exe: Path, images: np.ndarray, labels: np.ndarray, per_epoch: int, seed: int, lr: float,
              warmup: int, total: int, options: tuple[str, ...] = ()) -> bytes:
    """Run `host_sim trace`; return the raw per-step state records (parsed by verify)."""
    return run_trace_text(exe, images, labels, per_epoch, seed, lr, warmup, total, options)[0]


def run_trace_text(exe: Path, images: np.ndarray, labels: np.ndarray, per_epoch: int, seed: int, lr: float,
                   warmup: int, total: int, options: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """run_trace, and what `host_sim trace` printed (its stdout)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, lab, dst = Path(tmp) / "images.bin", Path(tmp) / "labels.bin", Path(tmp) / "trace.bin"
        np.ascontiguousarray(images, np.int8).tofile(src)
        np.ascontiguousarray(labels, np.int32).tofile(lab)
        args = [str(exe), "trace", str(src), str(lab), str(len(images)), str(per_epoch), str(seed), repr(float(lr)),
                str(warmup), str(total), str(dst), *options]
        r = subprocess.run(args, check=False, capture_output=True, text=True)
        if r.returncode != 0:
            raise TradyError(f"{exe.name} {' '.join(('trace', *options))} failed (exit {r.returncode}): {r.stderr.strip()}")
        return dst.read_bytes(), r.stdout


@dataclass(frozen=True, eq=False)
class TraceStep:
    """One training step's record of `host_sim trace` (host_main.c write_state, then loss and logits)."""

    selection: np.ndarray  # uint16 pool indices
    weights: dict[int, np.ndarray]  # trainable conv index -> int8 weights as trained, emitted C layout (flat)
    head_weight: np.ndarray  # float32 [classes, features]
    head_bias: np.ndarray  # float32 [classes]
    loss: np.float32
    logits: np.ndarray  # float32 [classes]


def parse_trace(raw: bytes, steps: int, weight_sizes: dict[int, int], classes: int, features: int) -> list[TraceStep]:
    """Split `host_sim trace` output into its per-step records; weight_sizes: trainable conv -> size, conv order."""
    pos = 0

    def take(dtype, count: int) -> np.ndarray:
        nonlocal pos
        if pos + np.dtype(dtype).itemsize * count > len(raw):
            raise TradyError(f"host trace: {len(raw)} bytes end inside step {len(out)} of {steps}")
        a = np.frombuffer(raw, dtype, count, pos)
        pos += a.nbytes
        return a

    out: list[TraceStep] = []
    for _ in range(steps):
        sel = take(np.uint16, int(take(np.int32, 1)[0]))
        weights = {i: take(np.int8, n) for i, n in sorted(weight_sizes.items())}
        hw = take(np.float32, classes * features).reshape(classes, features)
        hb = take(np.float32, classes)
        loss = take(np.float32, 1)[0]
        out.append(TraceStep(sel, weights, hw, hb, loss, take(np.float32, classes)))
    if pos != len(raw):
        raise TradyError(f"host trace: {len(raw)} bytes, expected {pos} for {steps} steps")
    return out
