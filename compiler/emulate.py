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
import shutil
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import firmware, host, persist
from compiler.errors import TradyError
from compiler.pipeline import Project


@dataclass(frozen=True)
class QemuRun:
    returncode: int
    lines: list[str]  # semihosting output
    stderr: str
    seconds: float


def qemu_command(brd: firmware.Board, elf: Path, plugin: list[str] | None = None,
                 output: str = "semihosting", preload: tuple[Path, int] | None = None) -> list[str]:
    """Text on stdout: semihosting through a stdio chardev, or UART0 as `-serial stdio` (semihosting then
    only carries the exit status). `preload` (file, address): raw bytes QEMU's generic loader puts in memory
    before the reset (the persistent-state region)."""
    if brd.qemu_machine is None:
        raise TradyError(f"--board {brd.name}: not an emulated board (use qemu-m7 or qemu-m4)")
    cmd = ["qemu-system-arm", "-M", brd.qemu_machine, "-nographic", "-monitor", "none"]
    if output == "uart":
        cmd += ["-serial", "stdio", "-semihosting-config", "enable=on,target=native"]
    else:
        cmd += ["-serial", "none", "-chardev", "stdio,id=sh0", "-semihosting-config",
                "enable=on,target=native,chardev=sh0"]
    cmd += ["-kernel", str(elf)]
    if preload is not None:
        cmd += ["-device", f"loader,file={preload[0]},addr={preload[1]:#x},force-raw=on"]
    if plugin:
        cmd += ["-plugin", ",".join(plugin), "-d", "plugin"]
    return cmd


def run(brd: firmware.Board, elf: Path, timeout: int, plugin: list[str] | None = None,
        output: str = "semihosting", preload: tuple[Path, int] | None = None) -> QemuRun:
    firmware.require("qemu-system-arm")
    t0 = time.monotonic()
    try:
        r = subprocess.run(qemu_command(brd, elf, plugin, output, preload), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TradyError(f"{elf}: QEMU ({brd.qemu_machine}) did not finish within {timeout} s (--timeout)") from None
    return QemuRun(r.returncode, r.stdout.splitlines(), r.stderr, time.monotonic() - t0)


def _crc(a: np.ndarray) -> str:
    return f"{zlib.crc32(np.ascontiguousarray(a).tobytes()):08x}"


def host_lines(project: Project, raw: bytes, steps: int, first: int = 0) -> list[str]:
    """The lines tt_fw_main.c prints, computed from `host_sim trace`'s records (host_main.c layout); the
    records start at step `first` (a run restored from the persistent state)."""
    g = project.graph
    sizes = {i: g.convs[i].weight.size for i in sorted(set(project.spec.pool.layers))}
    lines = []
    for s, rec in enumerate(host.parse_trace(raw, steps, sizes, g.head.classes, g.head.features), first):
        lines.append(f"step {s} sel {len(rec.selection)} {_crc(rec.selection)}")
        lines += [f"step {s} w {i} {_crc(w)}" for i, w in rec.weights.items()]
        lines.append(f"step {s} head {_crc(np.concatenate([rec.head_weight.ravel(), rec.head_bias]))}")
        lines.append(f"step {s} loss {int(rec.loss.view(np.uint32)):08x} logits {_crc(rec.logits)}")
    return lines


def forward_lines(project: Project, exe: Path, image: np.ndarray, region: Path | None = None) -> list[str]:
    """The firmware's "fwd" lines, from `host_sim forward` on the same image (with `region`: on the flash home
    the host's persistent-state run left, REGION.home)."""
    g = project.graph
    outs, logits = host.run_forward(exe, image[None], [g.tensors[op.output].size for op in g.ops], g.head.classes,
                                    (f"persist={region}",) if region is not None else ())
    return [f"fwd {i} {_crc(o[0])}" for i, o in enumerate(outs)] + [f"fwd logits {_crc(logits[0])}"]


def compare(fw: list[str], want: list[str]) -> str | None:
    """None if the firmware printed exactly `want` (its fwd and step lines); else the first difference."""
    got = [ln for ln in fw if ln.startswith(("step ", "fwd "))]
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
    restore_at = getattr(a, "restore_at", None)
    if restore_at is not None and (restore_at < 1 or restore_at % schedule.per_epoch or restore_at > len(images)):
        raise TradyError(f"--restore-at {restore_at}: expected an epoch boundary (a multiple of {schedule.per_epoch}) "
                         f"in 1..{len(images)} (--samples)")
    fw = firmware.build(folder, project, brd, images, labels, schedule, opt=f"-{a.opt}", stack=a.stack,
                        kernels=a.kernels, output=a.output)
    steps = len(images)
    exe = host.build(folder)
    region = fw.folder / "persist.region"  # the host build's model of the firmware's persistent-state region
    home = region.with_name(region.name + ".home")  # and of its flash weight home (host_sim persist=)
    region.unlink(missing_ok=True)
    home.unlink(missing_ok=True)
    preload, first, restored, elf = None, 0, None, fw.elf
    if restore_at is not None:  # the host trains up to the boundary and leaves its record in the region
        persist.host_trace(exe, images[:restore_at], labels[:restore_at], schedule, steps, region)
        slots, newest = persist.read_region(region, project)
        restored = slots[newest]
        addr, size = persist.region_address(fw.elf)
        if size != region.stat().st_size:
            raise TradyError(f"{fw.elf}: the persistent-state region is {size} bytes, the host's {region.stat().st_size}")
        preload, first = (fw.folder / "persist.bin", addr), restore_at
        shutil.copy(region, preload[0])
        if home.is_file():  # the flash home as the host's write-backs left it: the image's .tt_flash replaced
            elf, saved_home = fw.folder / "firmware-restored.elf", fw.folder / "persist.bin.home"
            shutil.copy(home, saved_home)
            subprocess.run(["arm-none-eabi-objcopy", f"--update-section=.tt_flash={saved_home}", str(fw.elf),
                            str(elf)], check=True, capture_output=True)
    # the forward pass before training runs on the home the image boots with
    fwd = forward_lines(project, exe, images[0], fw.folder / "persist.bin" if elf != fw.elf else None)
    # the host's run from the same region: the reference for every step and persist line the firmware prints
    raw, host_persist = persist.host_trace(exe, images, labels, schedule, steps, region)
    want = fwd + host_lines(project, raw, steps - first, first)
    r = run(brd, elf, a.timeout, output=a.output, preload=preload)
    for ln in r.lines:
        print(ln)
    diff = compare(r.lines, want)
    got_persist = [ln for ln in r.lines if ln.startswith("persist ")]
    if diff is None and got_persist != host_persist:
        bad = next((i for i, (u, v) in enumerate(zip(got_persist, host_persist)) if u != v),
                   min(len(got_persist), len(host_persist)))
        diff = (f"persist line {bad + 1}: firmware {got_persist[bad] if bad < len(got_persist) else 'none'!r} != "
                f"host {host_persist[bad] if bad < len(host_persist) else 'none'!r}")
    if diff is None and r.returncode != 0:
        diff = f"QEMU exit status {r.returncode} (firmware: 1 kernel error, 3 fault){': ' + r.stderr.strip() if r.stderr.strip() else ''}"
    if diff is None and not any(ln.startswith(f"done {steps} ") for ln in r.lines):
        diff = "the firmware did not print its final 'done' line"
    epochs = -(-(steps - first) // schedule.per_epoch)
    if diff is not None:
        print(f"qemu: FAIL {brd.name} ({brd.qemu_machine}) vs host build: first difference at {diff}")
        return 1
    layers = len(set(project.spec.pool.layers))
    saved = sum(ln.startswith("persist saved") for ln in got_persist)
    if restored is not None:
        print(f"qemu: restored on the target: record seq {restored.seq} (state CRC {restored.state_crc:08x}, step "
              f"{first}) preloaded at {preload[1]:#x} by QEMU's loader, as the host build wrote it"
              + (", on the flash home its write-backs left (.tt_flash of firmware-restored.elf)" if elf != fw.elf else ""))
    print(f"qemu: OK {brd.name} ({brd.qemu_machine}, {a.kernels} kernels, {a.output}) vs host build: forward outputs of "
          f"{len(project.graph.ops)} ops and logits, {steps - first} training steps ({epochs} epoch{'s' if epochs != 1 else ''}"
          f"{f', from step {first}' if first else ''}): identical selections, int8 weight CRCs of {layers} layers, "
          f"head, loss bits and logits; {saved} persistent-state record{'s' if saved != 1 else ''}; "
          f"stack used {_stack_used(r.lines)} bytes; {r.seconds:.1f} s in QEMU")
    return 0


PLUGIN_SOURCE = Path(__file__).resolve().parent.parent / "host_tools" / "tt_insn_plugin.c"


def build_plugin(folder: Path) -> Path:
    """Compile the instruction-counting plugin with the host gcc into `folder`."""
    firmware.require("gcc")
    so = Path(folder) / "tt_insn_plugin.so"
    r = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-o", str(so),
                        str(PLUGIN_SOURCE)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise TradyError(f"{PLUGIN_SOURCE}: plugin build failed: {(r.stdout + r.stderr).strip().splitlines()[0]}")
    return so


def functions(elf: Path) -> list[tuple[int, int, str]]:
    """(start, end, name) of every sized function symbol, sorted by address (Thumb bit cleared)."""
    r = subprocess.run(["arm-none-eabi-nm", "-S", "--defined-only", str(elf)], capture_output=True, text=True,
                       check=True)
    found = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            start, size = int(parts[0], 16) & ~1, int(parts[1], 16)
            if size > 0:
                found.setdefault(start, (start, start + size, parts[3]))
    return sorted(found.values())


@dataclass(frozen=True)
class Counts:
    snapshots: list[list[int]]  # per marker: [total, per function..., other]
    names: list[str]  # function names, then "other"
    end_total: int


def count(brd: firmware.Board, elf: Path, folder: Path, timeout: int,
          output: str = "semihosting") -> tuple[Counts, QemuRun]:
    """Run `elf` under the plugin; the counts at every tt_fw_marker() call (cumulative)."""
    so = build_plugin(folder)
    funcs = functions(elf)
    marker = next((s for s, _, n in funcs if n == "tt_fw_marker"), None)
    if marker is None:
        raise TradyError(f"{elf}: no tt_fw_marker symbol (not a benchmark build)")
    ranges, out = Path(folder) / "ranges.txt", Path(folder) / "counts.txt"
    ranges.write_text("".join(f"{s:x} {e:x}\n" for s, e, _ in funcs))
    r = run(brd, elf, timeout, [str(so), f"marker={marker:#x}", f"ranges={ranges}", f"out={out}"], output)
    if r.returncode != 0 or not out.is_file():
        raise TradyError(f"{elf}: QEMU with the counting plugin failed (exit {r.returncode}): "
                         f"{' '.join((r.stderr.strip() or ' '.join(r.lines)).splitlines()[-1:])}")
    rows = [ln.split() for ln in out.read_text().splitlines()]
    snaps = [[int(v) for v in row] for row in rows if row and row[0] != "end"]
    end = next(int(row[1]) for row in rows if row and row[0] == "end")
    return Counts(snaps, [n for _, _, n in funcs] + ["other"], end), r


def _top(names: list[str], before: list[int], after: list[int], n: int) -> str:
    d = [(after[k] - before[k], names[k - 1]) for k in range(1, len(after))]
    d.sort(reverse=True)
    tot = max(1, after[0] - before[0])
    return ", ".join(f"{name} {v / tot:.0%}" for v, name in d[:n] if v > 0)


def cmd_bench_mcu(a: argparse.Namespace) -> int:
    from compiler import pipeline
    from compiler.commands import _data

    brd = firmware.board(a.board)
    folder = Path(a.dir)
    project = pipeline.load_project(folder, a.model)
    plan = project.plan_json
    images, labels = firmware.load_samples(project, _data(a), a.samples)
    fw = firmware.build(folder, project, brd, images, labels, firmware.Schedule(seed=a.seed, lr=a.lr), bench=True,
                        opt=f"-{a.opt}", stack=a.stack, kernels=a.kernels, output=a.output)
    c, r = count(brd, fw.elf, fw.folder, a.timeout, a.output)
    ops = plan["ops"]
    backward = list(range(len(ops) - 1, plan["backward_first_op"] - 1, -1))  # the backward blocks, in order
    per_step = 2 + len(ops) + 1 + len(backward)  # step start, forward ops, loss + head, backward ops, step end
    want = len(ops) + 2 + per_step * len(images)
    if len(c.snapshots) != want:
        raise TradyError(f"{fw.elf}: {len(c.snapshots)} marker counts, expected {want} "
                         f"(firmware output: {' | '.join(r.lines[-2:])})")
    macs = {layer["name"]: layer["macs"] for layer in plan["layers"]}
    s = [row[0] for row in c.snapshots]
    print(f"bench-mcu: {plan['model']} on {brd.name} ({brd.qemu_machine}), -{a.opt}, {a.kernels} kernels, budget "
          f"{plan['budget_units']:,} units, strategy {plan['strategy']}; exact instruction counts (QEMU TCG plugin)")
    print(f"  {'op':>3} {'name':<34} {'type':<8} {'instructions':>13} {'MACs':>11} {'instr/MAC':>9}")
    fwd_macs = 0
    for i, op in enumerate(ops):
        n = s[i + 1] - s[i]
        m = macs.get(op["name"], 0)
        fwd_macs += m
        ratio = f"{n / m:9.2f}" if m else f"{'':9}"
        print(f"  {i:>3} {op['name']:<34} {op['type']:<8} {n:>13,} {m:>11,} {ratio}")
    head = s[len(ops) + 1] - s[len(ops)]
    head_macs = project.graph.head.classes * project.graph.head.features
    print(f"  {'':>3} {'head (fp32 classifier)':<34} {'Head':<8} {head:>13,} {head_macs:>11,}")
    inference = s[len(ops) + 1] - s[0]
    total_macs = fwd_macs + head_macs
    print(f"  inference: {inference:,} instructions, {total_macs:,} MACs, {inference / total_macs:.2f} instructions/MAC")
    base = len(ops) + 2
    starts = [base + per_step * k for k in range(len(images))]
    steps = [s[b + per_step - 1] - s[b] for b in starts]
    print("  training step 0, per layer (forward with saved planes and masks, loss and head, backward):")
    marks = s[starts[0]:starts[0] + per_step]
    rows = ([(f"fwd {i}", op["name"], op["type"]) for i, op in enumerate(ops)] + [("", "loss + head update", "Head")]
            + [(f"bwd {k}", ops[k]["name"], ops[k]["type"]) for k in backward] + [("", "step bookkeeping", "")])
    for (label, name, kind), lo, hi in zip(rows, marks[:-1], marks[1:], strict=True):
        print(f"  {label:>7} {name:<34} {kind:<8} {hi - lo:>13,}")
    for k, n in enumerate(steps):
        top = _top(c.names, c.snapshots[starts[k]], c.snapshots[starts[k] + per_step - 1], 5)
        print(f"  training step {k}: {n:,} instructions "
              f"({n / total_macs:.2f} per forward MAC); top functions: {top}")
    print(f"  whole run: {c.end_total:,} instructions; stack used {_stack_used(r.lines)} bytes; "
          f"{r.seconds:.1f} s in QEMU ({c.end_total / max(r.seconds, 1e-9) / 1e6:.0f} M instructions/s)")
    print(f"bench-mcu: {plan['model']} {brd.name}: inference {inference / 1e6:.2f} M instructions, training step "
          f"{min(steps) / 1e6:.2f}..{max(steps) / 1e6:.2f} M instructions (mean {sum(steps) / len(steps) / 1e6:.2f} M)")
    return 0
