"""Cortex-M firmware: `trady firmware` (build, sizes, link failure), `trady qemu` (trace equals the host).

The tiny model (tests/tt_support.py) compiled for 10 classes trains on CIFAR-10 samples; mcunet-5fps
at a small budget runs the same check on a real model. Tests need arm-none-eabi-gcc (`arm`) and
qemu-system-arm (`qemu`); they skip only where a tool is absent (CI installs both).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from pathlib import Path

import pytest
from tt_support import (
    assert_one_line_error,
    compile_tiny,
    data_path,
    model_path,
    require_tool,
    run_cli,
)

from compiler import emulate, firmware, host, pipeline

pytestmark = pytest.mark.arm


@pytest.fixture(scope="module")
def tiny10(tmp_path_factory) -> Path:
    require_tool("arm-none-eabi-gcc")
    return compile_tiny(tmp_path_factory.mktemp("fw"))


@pytest.mark.parametrize("board", list(firmware.BOARDS))
def test_firmware_builds_with_vector_table_and_sizes(tiny10, board):
    data_path()
    rc, out, err = run_cli(["firmware", str(tiny10), "--board", board])
    assert rc == 0, err
    brd = firmware.BOARDS[board]
    folder = tiny10 / f"firmware-{board}"
    head = (folder / "firmware.bin").read_bytes()[:8]
    sp, reset = struct.unpack("<II", head)
    syms = dict(ln.split()[::-2] for ln in subprocess.run(["arm-none-eabi-nm", str(folder / "firmware.elf")],
                                                          capture_output=True, text=True, check=True).stdout.splitlines()
                if len(ln.split()) == 3)
    estack = int(syms["_estack"], 16)
    assert sp == estack and 0x20000000 < estack <= 0x20000000 + brd.ram_bytes, f"initial SP {sp:#x}"
    assert estack - int(syms["_sstack"], 16) == firmware.DEFAULT_STACK
    assert reset & 1, "reset vector must be a Thumb address"
    secs = firmware.sections(folder / "firmware.elf")
    assert secs[".stack"] == firmware.DEFAULT_STACK
    plan = pipeline.plan_path(tiny10).read_text()
    assert f"{secs['.text'] + secs.get('.ARM.exidx', 0) + secs['.data']:,} of {brd.flash_bytes:,}" in out
    assert f".bss {secs['.bss']:,}" in out and "the plan's SRAM figure" in out and '"sram_bytes"' in plan
    assert "stack: static bound" in out


def test_link_fails_with_one_line_when_the_plan_does_not_fit(tiny10):
    data_path()
    rc, _, err = run_cli(["firmware", str(tiny10), "--board", "stm32f746g-disco", "--stack", str(400 * 1024)])
    line = assert_one_line_error(rc, err, "does not fit stm32f746g-disco", "SRAM", "327,680")
    assert "overflows" in line
    assert not (tiny10 / "firmware-stm32f746g-disco").exists(), "a failed build must leave no firmware folder"


def test_qemu_board_must_be_emulated(tiny10):
    rc, _, err = run_cli(["qemu", str(tiny10), "--board", "stm32f746g-disco"])
    assert_one_line_error(rc, err, "--board")


@pytest.mark.qemu
@pytest.mark.parametrize("kernels", firmware.KERNELS)
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_qemu_training_trace_equals_host(tiny10, board, kernels):
    """Forward outputs of every op, then 5 steps over 3 epochs, DSP and reference kernels, M7 and M4."""
    require_tool("qemu-system-arm")
    data_path()
    rc, out, err = run_cli(["qemu", str(tiny10), "--board", board, "--samples", "5", "--kernels", kernels])
    last = out.splitlines()[-1]
    assert rc == 0, f"{last}\n{err}"
    assert last.startswith(f"qemu: OK {board}") and "5 training steps (3 epochs)" in last
    assert f"{kernels} kernels" in last and "forward outputs of 9 ops" in last
    assert sum(ln.startswith("fwd ") for ln in out.splitlines()) == 9 + 1
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(tiny10 / f"firmware-{board}" / "firmware.elf")],
                         capture_output=True, text=True, check=True).stdout
    assert ("smlad" in dis) == (kernels == "dsp"), "the DSP build must use SMLAD, the reference build must not"
    sel = [ln.split()[3] for ln in out.splitlines() if " sel " in ln]
    assert len(sel) == 5 and len(set(sel)) > 1, "the epoch boundaries should change the selection"


@pytest.mark.qemu
def test_qemu_output_through_the_cmsdk_uart(tiny10):
    """--output uart: the lines arrive on QEMU's -serial stdio (semihosting carries only the exit status)."""
    require_tool("qemu-system-arm")
    data_path()
    rc, out, err = run_cli(["qemu", str(tiny10), "--output", "uart", "--samples", "3"])
    assert rc == 0, out[-500:] + err
    assert out.splitlines()[-1].startswith("qemu: OK qemu-m7 (mps2-an500, dsp kernels, uart)")
    assert "-serial stdio" in " ".join(emulate.qemu_command(firmware.BOARDS["qemu-m7"], Path("x.elf"), output="uart"))


@pytest.mark.qemu
def test_qemu_comparison_names_the_first_difference(tiny10):
    """Firmware trained with another learning rate than the host: the first differing line is named."""
    require_tool("qemu-system-arm")
    project = pipeline.load_project(tiny10)
    images, labels = firmware.load_samples(project, data_path(), 3)
    brd = firmware.BOARDS["qemu-m7"]
    fw = firmware.build(tiny10, project, brd, images, labels, firmware.Schedule(lr=0.02))
    r = emulate.run(brd, fw.elf, 60)
    assert r.returncode == 0, r.stderr
    s = firmware.Schedule(lr=0.01)
    exe = host.build(tiny10)
    raw = host.run_trace(exe, images, labels, s.per_epoch, s.seed, s.lr, s.warmup, 3)
    want = emulate.forward_lines(project, exe, images[0]) + emulate.host_lines(project, raw, 3)
    diff = emulate.compare(r.lines, want)
    assert diff is not None and diff.startswith("line ") and "!= host 'step 0 " in diff, diff
    same = firmware.build(tiny10, project, brd, images, labels, s)
    assert emulate.compare(emulate.run(brd, same.elf, 60).lines, want) is None
    # the DSP dense convolution's fallback for patches longer than its stack column (3x3x3 > 8)
    # and the pointwise kernel's path for inputs too wide for its widened buffer (8 and 12 channels > 4);
    # the input-gradient kernels' fallbacks for outputs wider than their column and for more than 4 taps
    short = firmware.build(tiny10, project, brd, images, labels, s, defines=("TT_CONV_COLUMN=8", "TT_PW_GROUPS=1",
                                                                              "TT_BWD_COLUMN=4", "TT_DW_TAPS=4"))
    assert emulate.compare(emulate.run(brd, short.elf, 60).lines, want) is None


@pytest.fixture(scope="module")
def mcunet17(tmp_path_factory) -> Path:
    """mcunet-5fps at the paper's smallest budget, pool in the top-17 layers (docs/topk-mcunet-last17.json)."""
    require_tool("arm-none-eabi-gcc")
    out = tmp_path_factory.mktemp("fw") / "mcunet"
    topk = Path(__file__).resolve().parent.parent / "docs" / "topk-mcunet-last17.json"
    rc, _, err = run_cli(["compile", str(model_path("mcunet-5fps")), "--budget", "15936", "--topk", str(topk),
                          "--out", str(out)])
    assert rc == 0, err
    return out


@pytest.mark.arm
def test_mcunet_flash_home_needs_qspi_subsector_pages_on_the_stm32_board(mcunet17):
    """Its trainable weights (394 KB) have a flash home of 2048-byte pages; the board's QSPI flash erases 4096-byte
    subsectors: one line says to compile with --flash-page 4096, and no firmware is left behind."""
    plan = json.loads(next(mcunet17.glob("*_plan.json")).read_text())
    assert plan["weight_home"] == "flash" and plan["flash_page_bytes"] == 2048
    rc, _, err = run_cli(["firmware", str(mcunet17), "--board", "stm32f746g-disco"])
    assert_one_line_error(rc, err, "stm32f746g-disco", "4096-byte subsectors", "--flash-page 4096")
    assert not (mcunet17 / "firmware-stm32f746g-disco").exists()


@pytest.mark.arm
def test_flash_home_and_persistent_state_in_qspi_on_the_stm32_board(tmp_path):
    """A flash home of 4096-byte pages: .tt_flash runs from the QSPI window (VMA 0x90000000) and is loaded from the
    internal flash (LMA, the pristine weights); the stamp and the persistent-state region follow it in QSPI; the
    firmware is built with persistence and the QSPI driver, and `trady firmware` prints the QSPI layout."""
    require_tool("arm-none-eabi-gcc")
    data_path()
    out = compile_tiny(tmp_path, "--weight-home", "flash", "--flash-page", "4096")
    rc, text, err = run_cli(["firmware", str(out), "--board", "stm32f746g-disco"])
    assert rc == 0, err
    elf = out / "firmware-stm32f746g-disco" / "firmware.elf"
    heads = subprocess.run(["arm-none-eabi-readelf", "-lW", str(elf)], capture_output=True, text=True,
                           check=True).stdout
    home = next(ln.split() for ln in heads.splitlines() if ln.split()[:1] == ["LOAD"] and " 0x90000000 " in ln)
    assert 0x08000000 <= int(home[3], 16) < 0x08100000, f"the home's load address: {home[3]}"
    layout = firmware.qspi_layout(elf)
    sections = firmware.sections(elf)
    assert [w for w, _, _ in layout] == ["home", "stamp", "persistent state"]
    (_, h, hn), (_, s, sn), (_, r, rn) = layout
    assert h == 0x90000000 and hn == sections[".tt_flash"] and s == h + hn and sn == 4096 and r == s + 4096
    assert rn == firmware.persist_region_bytes(out, pipeline.load_project(out), 4096) > 0
    assert f"home {hn:,} at 0x90000000, stamp 4,096 at {s:#010x}, persistent state {rn:,} at {r:#010x}" in text
    syms = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    assert " tt_qspi_boot" in syms and " T tt_flash_program_page" in syms and "warning" not in err


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_qemu_mcunet(mcunet17, board):
    """On the M4 the loss once differed in its last bit (newlib's logf for single-precision FPUs): the
    runtime's tt_logf makes host and both cores agree. The trainable weights have a flash home here, so
    this also runs the DSP kernels' weight patches and the page write-back at the resampling."""
    require_tool("qemu-system-arm")
    data_path()
    rc, text, err = run_cli(["qemu", str(mcunet17), "--board", board])
    last = text.splitlines()[-1]
    assert rc == 0, f"{last}\n{err}"
    assert last.startswith(f"qemu: OK {board}") and "4 training steps (2 epochs)" in last
    assert "forward outputs of 50 ops" in last and "CRCs of 17 layers" in last


def test_tt_logf_accuracy(tmp_path):
    """tt_logf (the loss's log, runtime_c/tt_fmath.h) within 3e-7 relative of log on [1, 4096)."""
    gcc = require_tool("gcc")
    root = Path(__file__).resolve().parent.parent
    exe = tmp_path / "logf_check"
    subprocess.run([gcc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                    f"-I{root / 'runtime_c'}", "-o", str(exe), str(root / "tests" / "c" / "logf_check.c"), "-lm"],
                   check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


COUNTED_PROGRAM = r"""
    .syntax unified
    .cpu cortex-m4
    .thumb
    .section .vectors, "a"
    .word 0x20001000
    .word reset + 1
    .text
    .thumb_func
    .global tt_fw_marker
    .type tt_fw_marker, %function
tt_fw_marker:
    bx lr
    .size tt_fw_marker, . - tt_fw_marker
    .thumb_func
    .global reset
    .type reset, %function
reset:
    bl tt_fw_marker
    .rept 1000
    nop
    .endr
    bl tt_fw_marker
    movs r0, #100
1:  subs r0, r0, #1
    bne 1b
    bl tt_fw_marker
    ldr r1, =exit_block
    movs r0, #0x20
    bkpt 0xab
    .size reset, . - reset
    .align 2
exit_block:
    .word 0x20026, 0
"""


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["qemu-m7", "qemu-m4"])
def test_instruction_counter_is_exact(tmp_path, board):
    """A hand-written program: 1000 nops between two markers, then a 100-iteration two-instruction loop.

    Between consecutive markers the counter must see the block of interest plus the `bl` that calls
    the marker and the marker's own `bx lr`: 1000 + 2 and 1 + 2 * 100 + 2, on every run.
    """
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    require_tool("gcc")
    src = tmp_path / "counted.S"
    src.write_text(COUNTED_PROGRAM)
    elf = tmp_path / "counted.elf"
    # the vector table at 0x0 (initial SP, reset vector), the code after it
    subprocess.run(["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-nostdlib", "-Wl,-e,reset",
                    "-Wl,--section-start=.vectors=0x0", "-Wl,-Ttext=0x100", "-o", str(elf), str(src)], check=True)
    brd = firmware.BOARDS[board]
    runs = [emulate.count(brd, elf, tmp_path, 30)[0] for _ in range(2)]
    c = runs[0]
    totals = [s[0] for s in c.snapshots]
    assert len(totals) == 3, totals
    assert totals[1] - totals[0] == 1000 + 2
    assert totals[2] - totals[1] == 1 + 2 * 100 + 2
    reset = c.names.index("reset") + 1
    assert c.snapshots[1][reset] - c.snapshots[0][reset] == 1000 + 1, "nops and the bl are charged to reset"
    assert runs[1].snapshots == c.snapshots and runs[1].end_total == c.end_total, "counts must repeat exactly"


@pytest.mark.qemu
def test_bench_mcu_per_op_counts_add_up(tiny10):
    """Per-op rows plus the head sum to the inference figure; every conv row has its MACs from the plan."""
    require_tool("qemu-system-arm")
    data_path()
    rc, out, err = run_cli(["bench-mcu", str(tiny10), "--samples", "3"])
    assert rc == 0, err
    lines = out.splitlines()
    plan = json.loads(pipeline.plan_path(tiny10).read_text())
    rows = [ln.split() for ln in lines if re.match(r"\s+\d+ ", ln)]
    assert [r[1] for r in rows] == [op["name"] for op in plan["ops"]]
    head = next(ln.split() for ln in lines if "head (fp32 classifier)" in ln)
    inference = int(re.search(r"inference: ([\d,]+) instructions", out).group(1).replace(",", ""))
    assert sum(int(r[3].replace(",", "")) for r in rows) + int(head[4].replace(",", "")) == inference
    macs = {layer["name"]: layer["macs"] for layer in plan["layers"]}
    for r in rows:
        if r[2] == "Conv":
            assert int(r[4].replace(",", "")) == macs[r[1]] > 0
    assert len(re.findall(r"training step \d+: [\d,]+ instructions", out)) == 3
    # training step 0 per layer: every forward op, the loss and head, every backward op; they add up to the step
    step_rows = [ln.split() for ln in lines if re.match(r"\s+(fwd|bwd) \d+ ", ln)]
    first = plan["backward_first_op"]
    assert [r[2] for r in step_rows] == ([op["name"] for op in plan["ops"]]
                                         + [op["name"] for op in plan["ops"][first:]][::-1])
    extra = [int(ln.split()[-1].replace(",", "")) for ln in lines if "loss + head update" in ln or "step bookkeeping" in ln]
    step0 = int(re.search(r"training step 0: ([\d,]+) instructions", out).group(1).replace(",", ""))
    assert sum(int(r[-1].replace(",", "")) for r in step_rows) + sum(extra) == step0


def test_floor_requantisation_equals_reference(tmp_path):
    """tt_requantize_floor (runtime_c/arm/tt_arm_math.h) == tt_requantize on edge cases and 4M random inputs.

    Needs only the host gcc: the function is plain C."""
    gcc = require_tool("gcc")
    root = Path(__file__).resolve().parent.parent
    exe = tmp_path / "requant_floor"
    subprocess.run([gcc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{root / 'runtime_c'}",
                    f"-I{root / 'runtime_c' / 'arm'}", "-o", str(exe), str(root / "tests" / "c" / "requant_floor.c")],
                   check=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr
    assert int(r.stdout.split()[1]) > 4_700_000
    assert int(r.stdout.split()[3]) > 2_000_000  # tt_rq (the DSP kernels' fast form) on the triples it takes


def test_flash_builds_the_pyocd_command(tiny10, monkeypatch, tmp_path):
    """`trady flash` (no board here): the pyOCD command it runs, and its errors."""
    data_path()
    rc, _, err = run_cli(["flash", str(tiny10), "--probe", "0668FF56"])
    assert_one_line_error(rc, err, "no firmware built for stm32f746g-disco", "trady firmware")
    assert run_cli(["firmware", str(tiny10), "--board", "stm32f746g-disco"])[0] == 0
    elf = (tiny10 / "firmware-stm32f746g-disco" / "firmware.elf").resolve()
    rc, out, err = run_cli(["flash", str(tiny10), "--probe", "0668FF56", "--dry-run"])
    assert rc == 0, err
    assert out.splitlines() == [f"pyocd flash --target stm32f746nghx --uid 0668FF56 --format elf {elf}"]
    rc, out, _ = run_cli(["flash", str(tiny10), "--dry-run"])
    assert out.split() == ["pyocd", "flash", "--target", "stm32f746nghx", "--format", "elf", str(elf)]
    monkeypatch.setenv("PATH", str(tmp_path))  # no pyocd on PATH
    rc, _, err = run_cli(["flash", str(tiny10)])
    assert_one_line_error(rc, err, "pyocd not found", "pyocd==0.46.0")
    rc, _, err = run_cli(["flash", str(tiny10), "--board", "qemu-m7"])
    assert_one_line_error(rc, err, "--board")
