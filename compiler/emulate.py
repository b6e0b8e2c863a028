"""Stage 9b, emulation: firmware ELF -> QEMU (mps2 Cortex-M machines) -> checked trace and counts.

`trady qemu` runs the training firmware (tt_fw_main.c) in QEMU and the host build's `host_sim trace`
on the same embedded samples and schedule, turns the host trace into the lines the firmware prints
(CRC32 of the selection, of each trainable layer's int8 weights and of the head; the fp32 loss bits;
CRC32 of the logits) and compares them line by line: the first different line is named.
`trady bench-mcu` runs the benchmark build (-DTT_FW_BENCH) under an instruction-counting TCG plugin
(host_tools/tt_insn_plugin.c, built with host gcc) that records the count at every tt_fw_marker()
call: per forward op, per inference, per training step.
"""

from __future__ import annotations

import argparse
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import firmware, host
from compiler.errors import TradyError
from compiler.pipeline import Project


@dataclass(frozen=True)
class QemuRun:
    returncode: int
    lines: list[str]  # semihosting output
    stderr: str
    seconds: float


def qemu_command(brd: firmware.Board, elf: Path, plugin: list[str] | None = None) -> list[str]:
    if brd.qemu_machine is None:
        raise TradyError(f"--board {brd.name}: not an emulated board (use qemu-m7 or qemu-m4)")
    cmd = ["qemu-system-arm", "-M", brd.qemu_machine, "-nographic", "-monitor", "none", "-serial", "none",
           "-chardev", "stdio,id=sh0", "-semihosting-config", "enable=on,target=native,chardev=sh0",
           "-kernel", str(elf)]
    if plugin:
        cmd += ["-plugin", ",".join(plugin), "-d", "plugin"]
    return cmd


def run(brd: firmware.Board, elf: Path, timeout: int, plugin: list[str] | None = None) -> QemuRun:
    firmware.require("qemu-system-arm")
    t0 = time.monotonic()
    try:
        r = subprocess.run(qemu_command(brd, elf, plugin), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TradyError(f"{elf}: QEMU ({brd.qemu_machine}) did not finish within {timeout} s (--timeout)") from None
    return QemuRun(r.returncode, r.stdout.splitlines(), r.stderr, time.monotonic() - t0)


def _crc(a: np.ndarray) -> str:
    return f"{zlib.crc32(np.ascontiguousarray(a).tobytes()):08x}"


def host_lines(project: Project, raw: bytes, steps: int) -> list[str]:
    """The lines tt_fw_main.c prints, computed from `host_sim trace`'s records (host_main.c layout)."""
    g = project.graph
    convs = g.convs
    trainable = sorted(set(project.spec.pool.layers))
    classes, feats = g.head.classes, g.head.features
    pos = 0

    def take(dtype, count: int) -> np.ndarray:
        nonlocal pos
        a = np.frombuffer(raw, dtype, count, pos)
        pos += a.nbytes
        return a

    lines = []
    for s in range(steps):
        count = int(take(np.int32, 1)[0])
        lines.append(f"step {s} sel {count} {_crc(take(np.uint16, count))}")
        lines += [f"step {s} w {i} {_crc(take(np.int8, convs[i].weight.size))}" for i in trainable]
        head = np.concatenate([take(np.float32, classes * feats), take(np.float32, classes)])
        lines.append(f"step {s} head {_crc(head)}")
        loss = take(np.uint32, 1)[0]
        lines.append(f"step {s} loss {int(loss):08x} logits {_crc(take(np.float32, classes))}")
    if pos != len(raw):
        raise TradyError(f"host trace: {len(raw)} bytes, expected {pos} for {steps} steps")
    return lines


def compare(fw: list[str], want: list[str]) -> str | None:
    """None if the firmware printed exactly `want` (its step lines); else the first difference."""
    got = [ln for ln in fw if ln.startswith("step ")]
    for i, w in enumerate(want):
        if i >= len(got):
            return f"line {i + 1}: firmware ended early; host: {w!r}"
        if got[i] != w:
            return f"line {i + 1}: firmware {got[i]!r} != host {w!r}"
    if len(got) > len(want):
        return f"line {len(want) + 1}: firmware printed more than the host: {got[len(want)]!r}"
    return None


def _stack_used(lines: list[str]) -> int | None:
    for ln in lines:
        parts = ln.split()
        if len(parts) >= 2 and parts[-2] == "stack" and parts[-1].isdigit():
            return int(parts[-1])
    return None


def cmd_qemu(a: argparse.Namespace) -> int:
    from compiler import pipeline
    from compiler.commands import _data

    brd = firmware.board(a.board)
    folder = Path(a.dir)
    project = pipeline.load_project(folder, a.model)
    images, labels = firmware.load_samples(project, _data(a), a.samples)
    schedule = firmware.Schedule(seed=a.seed, lr=a.lr)
    fw = firmware.build(folder, project, brd, images, labels, schedule, opt=f"-{a.opt}", stack=a.stack)
    steps = len(images)
    raw = host.run_trace(host.build(folder), images, labels, schedule.per_epoch, schedule.seed, schedule.lr,
                         schedule.warmup, schedule.total(steps))
    want = host_lines(project, raw, steps)
    r = run(brd, fw.elf, a.timeout)
    for ln in r.lines:
        print(ln)
    diff = compare(r.lines, want)
    if diff is None and r.returncode != 0:
        diff = f"QEMU exit status {r.returncode} (firmware: 1 kernel error, 3 fault){': ' + r.stderr.strip() if r.stderr.strip() else ''}"
    if diff is None and not any(ln.startswith(f"done {steps} ") for ln in r.lines):
        diff = "the firmware did not print its final 'done' line"
    epochs = -(-steps // schedule.per_epoch)
    if diff is not None:
        print(f"qemu: FAIL {brd.name} ({brd.qemu_machine}) vs host build: first difference at {diff}")
        return 1
    layers = len(set(project.spec.pool.layers))
    print(f"qemu: OK {brd.name} ({brd.qemu_machine}) vs host build: {steps} training steps ({epochs} epochs), "
          f"identical selections, int8 weight CRCs of {layers} layers, head, loss bits and logits; "
          f"stack used {_stack_used(r.lines)} bytes; {r.seconds:.1f} s in QEMU")
    return 0
