"""Stage 9, firmware: compiled project folder + board -> Cortex-M ELF and .bin (arm-none-eabi-gcc).

The board descriptions are data (`BOARDS`); the startup code, semihosting, the firmware application
and the linker scripts are C/ld files in `runtime_c/boards/`. The firmware embeds a few training
samples (`fw_samples.h`, rendered from `templates/fw_samples.h.j2`) and runs training steps on them
(`tt_fw_main.c`); `--app stream` builds instead a firmware that trains on samples sent over the UART
(`tt_fw_stream.c`, `trady stream`, docs/STREAM.md). Text goes through semihosting or the board's UART
(`--output`; the QEMU boards default to semihosting, the STM32F746G-DISCO to USART1 on the ST-LINK's virtual
COM port, `tt_out_uart_stm32f7.c`). `--kernels dsp` (the default) swaps in the kernels
of `runtime_c/arm/` (same file names as the reference kernels, `__SMLAD`-based, bit-exact with them). The build goes into
`DIR/firmware-<board>/`; a link that overflows the board's flash or SRAM fails with one line naming
the region and the overflow. On success the sizes come
from the ELF (`arm-none-eabi-size -A`) and the stack bound from GCC's `-fstack-usage` call graph
(`-fcallgraph-info=su`), printed next to the plan's figures.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from compiler import __version__
from compiler.emit import RUNTIME, TEMPLATES
from compiler.errors import TradyError
from compiler.pipeline import Project

BOARD_FILES = RUNTIME / "boards"
DSP_KERNELS = RUNTIME / "arm"  # Cortex-M DSP-extension kernels, same file names as the reference ones
KERNELS = ("dsp", "reference")
FW_SOURCES = ("tt_startup.c", "tt_semihost.c", "tt_fw_main.c")
# firmware application -> its sources in runtime_c/boards/ (replacing tt_fw_main.c); stream: docs/STREAM.md
APPS = {"train": ("tt_fw_main.c",), "stream": ("tt_fw_stream.c", "tt_stream.c")}
OUTPUTS = ("semihosting", "uart")  # text channel: tt_out_semihost.c, or the board's UART driver (Board.uart)
CC = "arm-none-eabi-gcc"
# Fixed flags: -ffp-contract=off on ARM and host alike keeps the fp32 arithmetic bit-identical.
CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fno-strict-aliasing",
          "-ffunction-sections", "-fdata-sections", "-fstack-usage", "-fcallgraph-info=su")
LDFLAGS = ("--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles", "-Wl,--gc-sections")
DEFAULT_STACK = 16 * 1024
# A flash weight home goes to the linker script's .tt_flash section (in FLASH), not to .data (SRAM).
FLASH_SECTION = '-DTT_FLASH_SECTION=__attribute__((section(".tt_flash")))'
DEFAULT_SAMPLES = 4
PERSIST_PAGE = 2048  # erase page of the persistent-state region on the emulated boards (TT_PERSIST_PAGE_BYTES)


@dataclass(frozen=True)
class Board:
    name: str
    cpu: tuple[str, ...]  # -mcpu/-mfpu/-mfloat-abi/-mthumb
    linker_script: str  # in runtime_c/boards/
    flash_bytes: int
    ram_bytes: int
    qemu_machine: str | None  # qemu-system-arm -M, None for a real board
    # UART driver in runtime_c/boards/ (tt_fw_output.h and tt_uart.h): the text channel of --output uart and the
    # link of --app stream; None: no UART here
    uart: str | None
    # tt_flash_program_page port in runtime_c/boards/ (None: the runtime's default, which writes the memory
    # directly: right for the mps2 machines, whose code memory is RAM in QEMU)
    flash_port: str | None = None
    # bytes of QSPI NOR flash holding the flash home, its stamp and the persistent-state region (0: none; they
    # live in FLASH); its erase unit (subsector) is then the home's and the region's page (docs/PERSIST.md)
    qspi_bytes: int = 0
    qspi_subsector: int = 0
    output: str = "semihosting"  # the text channel a build gets without --output

    @property
    def persist_page(self) -> int:
        return self.qspi_subsector or PERSIST_PAGE


M4 = ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-mthumb")
M7 = ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard", "-mthumb")
BOARDS = {
    # the MPS2 boards' UART0, a CMSDK APB UART at 0x40004000 (QEMU -serial)
    "qemu-m7": Board("qemu-m7", M7, "qemu-m7.ld", 4 << 20, 4 << 20, "mps2-an500", "tt_out_uart_cmsdk.c"),
    "qemu-m4": Board("qemu-m4", M4, "qemu-m4.ld", 4 << 20, 4 << 20, "mps2-an386", "tt_out_uart_cmsdk.c"),
    # USART1 on the ST-LINK's virtual COM port: the board's console by default (semihosting needs a debugger)
    "stm32f746g-disco": Board("stm32f746g-disco", M7, "stm32f746g-disco.ld", 1 << 20, 320 << 10, None,
                              "tt_out_uart_stm32f7.c", "tt_qspi_stm32f7.c", 16 << 20, 4096, output="uart"),
}


@dataclass(frozen=True)
class Schedule:
    """The training run the firmware embeds; the host trace gets the same arguments."""
    seed: int = 0
    lr: float = 0.01
    per_epoch: int = 2  # steps per epoch: with >= 3 samples the run crosses an epoch boundary
    warmup: int = 1

    def total(self, steps: int) -> int:
        return steps


@dataclass(frozen=True)
class Firmware:
    board: Board
    output: str  # "semihosting" or "uart"
    folder: Path
    elf: Path
    binary: Path
    sections: dict[str, int]  # section name -> bytes
    stack_reserved: int
    stack_bound: int | None  # static call-graph bound, None if unbounded (recursion, indirect calls)
    stack_note: str
    persist_bytes: int = 0  # flash reserved after the image for the persistent trained state (2 slots)
    qspi: tuple[tuple[str, int, int], ...] = ()  # (what, address, bytes) laid out in the board's QSPI flash

    @property
    def flash_used(self) -> int:
        s = self.sections
        return s.get(".text", 0) + s.get(".ARM.exidx", 0) + s.get(".tt_flash", 0) + s.get(".data", 0)

    @property
    def ram_static(self) -> int:
        return self.sections.get(".data", 0) + self.sections.get(".bss", 0)


def board(name: str) -> Board:
    if name not in BOARDS:
        raise TradyError(f"--board {name}: expected one of {', '.join(BOARDS)}")
    return BOARDS[name]


def require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise TradyError(f"{tool} not found: install gcc-arm-none-eabi, libnewlib-arm-none-eabi and "
                         "qemu-system-arm (see .ci/run)")
    return found


def load_samples(project: Project, data_path: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` (class-balanced) training images of the data set, int8, and their labels."""
    from compiler import data

    g = project.graph
    res = g.tensors[g.input].shape[0]
    ds = data.load(data_path, res, limit_train=count, limit_test=0)
    if len(ds.train.y) < count:
        raise TradyError(f"{data_path}: {len(ds.train.y)} training images, --samples {count} needs as many")
    labels = ds.train.y[:count]
    if int(labels.max()) >= g.head.classes:
        raise TradyError(f"{data_path}: label {int(labels.max())} out of range for {g.head.classes} classes")
    return np.ascontiguousarray(ds.train.x[:count], np.int8), labels.astype(np.int32)


def render_samples(images: np.ndarray, labels: np.ndarray, schedule: Schedule) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    banner = f"/* Generated by trady {__version__} (trady firmware). Do not edit. */"
    rows = [", ".join(str(int(v)) for v in img.ravel()) for img in images]
    return env.get_template("fw_samples.h.j2").render(
        banner=banner, count=len(images), per_epoch=schedule.per_epoch, seed=schedule.seed,
        lr=repr(float(np.float32(schedule.lr))), warmup=schedule.warmup, total=schedule.total(len(images)),
        images=rows, labels=", ".join(str(int(v)) for v in labels))


def _sources(project_dir: Path, project: Project, brd: Board, kernels: str, output: str,
             app: str = "train") -> list[Path]:
    """The project's model and runtime sources; with "dsp", a runtime file that has a DSP variant of the
    same name in runtime_c/arm/ is replaced by it."""
    from compiler.emit import model_c_name

    name = model_c_name(project.graph)
    runtime = sorted((project_dir / "runtime").glob("*.c"))
    if kernels == "dsp":
        runtime = [DSP_KERNELS / p.name if (DSP_KERNELS / p.name).is_file() else p for p in runtime]
    port = () if brd.flash_port is None else (brd.flash_port,)
    fw = tuple(f for s in FW_SOURCES for f in (APPS[app] if s == "tt_fw_main.c" else (s,)))
    channel = brd.uart if output == "uart" else "tt_out_semihost.c"
    return [project_dir / f"{name}.c", *runtime, *(BOARD_FILES / s for s in (*fw, channel, *port))]


def build(project_dir: Path, project: Project, brd: Board, images: np.ndarray, labels: np.ndarray,
          schedule: Schedule, bench: bool = False, opt: str = "-O2", stack: int = DEFAULT_STACK,
          kernels: str = "dsp", defines: tuple[str, ...] = (), output: str | None = None,
          app: str = "train") -> Firmware:
    """Compile and link the firmware into DIR/firmware-<board>[-bench|-stream]/; raise TradyError on failure.

    `defines` (NAME=VALUE) reach the C compiler: tests use them to reach a kernel's rare paths.
    `output` None is the board's channel (Board.output).
    `app` "stream" builds the UART streaming trainer (tt_fw_stream.c) instead of the embedded-samples one."""
    require(CC)
    uarts = ", ".join(n for n, b in BOARDS.items() if b.uart)
    if app == "stream":
        if brd.uart is None:
            raise TradyError(f"--app stream: {brd.name} has no UART driver here (boards with one: {uarts})")
        if brd.qspi_bytes and project.spec.weight_home == "flash":
            raise TradyError(f"--app stream: {Path(project_dir)}: the stream firmware does not bring up {brd.name}'s "
                             "QSPI flash, where a flash weight home lives: compile with --weight-home ram")
        output = "uart"
    output = output or brd.output
    if output == "uart" and brd.uart is None:
        raise TradyError(f"--output uart: {brd.name} has no UART driver here (boards with one: {uarts}); "
                         "use --output semihosting")
    project_dir = Path(project_dir).resolve()
    if brd.qspi_bytes and project.spec.weight_home == "flash" and project.spec.flash_page % brd.qspi_subsector:
        raise TradyError(f"{project_dir}: the flash home's {project.spec.flash_page}-byte pages do not fit "
                         f"{brd.name}'s QSPI flash, which erases {brd.qspi_subsector}-byte subsectors: compile "
                         f"again with --flash-page {brd.qspi_subsector}")
    folder = project_dir / f"firmware-{brd.name}{'-bench' if bench else ''}{'-stream' if app == 'stream' else ''}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "fw_samples.h").write_text(render_samples(images, labels, schedule))
    elf = folder / "firmware.elf"
    # the trained state survives a reset where the board's flash can be programmed (docs/PERSIST.md)
    page = brd.persist_page
    writable = brd.flash_port is None or brd.qspi_bytes > 0
    persist_bytes = persist_region_bytes(project_dir, project, page) if writable and not bench else 0
    persist = ["-DTT_FW_PERSIST", f"-DTT_PERSIST_PAGE_BYTES={page}",
               f"-DTT_PERSIST_JOURNAL_ENTRIES={persist_journal_entries()}"] if persist_bytes else []
    persist += ["-DTT_FW_QSPI"] if brd.qspi_bytes else []
    cmd = [CC, *brd.cpu, opt, *CFLAGS, *(["-DTT_FW_BENCH", "-DTT_TRAIN_MARKS"] if bench else []), *persist,
           *(f"-D{d}" for d in defines),
           f"-I{folder}", f"-I{project_dir}", f"-I{project_dir / 'runtime'}", f"-I{BOARD_FILES}",
           FLASH_SECTION, *(str(s) for s in _sources(project_dir, project, brd, kernels, output, app)),
           f"-L{BOARD_FILES}", f"-T{brd.linker_script}", f"-Wl,--defsym=TT_STACK_SIZE={stack}",
           f"-Wl,--defsym=TT_PERSIST_BYTES={persist_bytes}", f"-Wl,--defsym=TT_PERSIST_ALIGN={page}",
           f"-Wl,-Map={folder / 'firmware.map'}", *LDFLAGS, "-o", str(elf), "-lm"]
    r = subprocess.run(cmd, cwd=folder, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)  # no half-built firmware left behind
        raise TradyError(_build_error(project_dir, brd, r.stdout + r.stderr, stack))
    binary = folder / "firmware.bin"
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    bound, note = stack_bound(folder)
    return Firmware(brd, output, folder, elf, binary, sections(elf), stack, bound, note, persist_bytes,
                    qspi_layout(elf) if brd.qspi_bytes else ())


def qspi_layout(elf: Path) -> tuple[tuple[str, int, int], ...]:
    """The home, the stamp subsector and the persistent-state region in the QSPI window (tt_sections.ld)."""
    r = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True)
    sym = {p[2]: int(p[0], 16) for p in (ln.split() for ln in r.stdout.splitlines()) if len(p) == 3}
    home, stamp, region, end = sym["_stt_home"], sym["_stt_stamp"], sym["_stt_persist"], sym["_ett_persist"]
    home_bytes = sections(elf).get(".tt_flash", 0)
    return (("home", home, home_bytes), ("stamp", stamp, region - stamp), ("persistent state", region, end - region))


def persist_journal_entries() -> int:
    from compiler import persist

    return persist.JOURNAL_ENTRIES


def persist_region_bytes(project_dir: Path, project: Project, page: int = PERSIST_PAGE) -> int:
    """Two record slots for the project's largest record and, with a flash weight home, the journal of home
    pages (TT_PERSIST_REGION_BYTES, tt_persist.h)."""
    from compiler import persist
    from compiler.emit import model_c_name

    name = model_c_name(project.graph)
    header = Path(project_dir) / f"{name}.h"
    m = re.search(rf"#define {name.upper()}_PERSIST_MAX_BYTES (\d+)", header.read_text() if header.is_file() else "")
    if m is None:
        raise TradyError(f"{header}: no {name.upper()}_PERSIST_MAX_BYTES (compiled by an older trady? compile again)")
    return 2 * persist.slot_bytes(int(m.group(1)), page) + persist.journal_bytes(project, page)


def _build_error(project_dir: Path, brd: Board, text: str, stack: int) -> str:
    over = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", text)
    if over:
        parts = []
        for region, n in over:
            size = brd.ram_bytes if region == "RAM" else brd.flash_bytes
            what = "SRAM (.data + .bss + stack)" if region == "RAM" else "flash (code + constants + .data init)"
            parts.append(f"{what} overflows the {size:,} bytes by {int(n):,} bytes")
        return (f"{project_dir}: the plan does not fit {brd.name}: {'; '.join(parts)} "
                f"(stack reserve {stack:,} bytes)")
    first = next((ln for ln in text.splitlines() if "error" in ln), text.strip().splitlines()[0] if text.strip() else "")
    return f"{project_dir}: firmware build for {brd.name} failed: {first.strip()}"


def sections(elf: Path) -> dict[str, int]:
    r = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], check=True, capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def stack_bound(folder: Path) -> tuple[int | None, str]:
    """Worst-case stack depth from the `.ci` call-graph files GCC wrote (-fcallgraph-info=su).

    Each node carries its frame size ("N bytes (static)"; "dynamic" frames make the bound unknown);
    the bound is the deepest path from the reset handler. Indirect calls (the forward's observer
    callback) are not edges in the graph: the note says how many calls were left out that way.
    """
    frames: dict[str, int] = {}
    dynamic: set[str] = set()
    edges: dict[str, set[str]] = {}
    indirect = 0
    for ci in sorted(folder.glob("*.ci")):
        text = ci.read_text()
        for m in re.finditer(r'node: \{ title: "([^"]+)" label: "([^"]*)"', text):
            title, label = m.group(1), m.group(2)
            sm = re.search(r"(\d+) bytes \((\w+)", label)
            if sm:  # a function defined here; declarations only (library calls) carry no figure
                frames[title] = max(frames.get(title, 0), int(sm.group(1)))
                if sm.group(2) != "static":
                    dynamic.add(title)
            indirect += label.count("__indirect_call")
        for m in re.finditer(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
            edges.setdefault(m.group(1), set()).add(m.group(2))
    # Function names are "file.c:func" for defined nodes and "func" for references: key by the function.
    def key(title: str) -> str:
        return title.rsplit(":", 1)[-1]

    frame_of: dict[str, int] = {}
    for t, v in frames.items():  # static functions of the same name in two files: the larger frame
        frame_of[key(t)] = max(frame_of.get(key(t), 0), v)
    succ: dict[str, set[str]] = {}
    for src, dsts in edges.items():
        succ.setdefault(key(src), set()).update(key(d) for d in dsts)
    memo: dict[str, int] = {}
    unknown: set[str] = set()

    def depth(f: str, path: tuple[str, ...]) -> int:
        if f in path:
            unknown.add(f"recursion through {f}")
            return 0
        if f in memo:
            return memo[f]
        if f not in frame_of:
            unknown.add(f)  # a library function compiled elsewhere (newlib): no frame figure
        d = frame_of.get(f, 0) + max((depth(g, (*path, f)) for g in succ.get(f, ())), default=0)
        memo[f] = d
        return d

    total = depth("tt_reset_handler", ())
    if any(key(t) in memo for t in dynamic):
        return None, "a function on the call graph has a dynamic frame"
    lib = sorted(u for u in unknown if not u.startswith("recursion") and u != "__indirect_call")
    note = (f"-fstack-usage call graph; excludes {len(lib)} library functions ({', '.join(lib[:5])}"
            f"{', ...' if len(lib) > 5 else ''}) and indirect calls")
    if any(u.startswith("recursion") for u in unknown):
        return None, "recursion in the call graph"
    return total, note


def report_lines(fw: Firmware, plan: dict) -> list[str]:
    b = fw.board
    sram_plan = plan["sram_bytes"]["total"]
    flash_plan = plan["flash_bytes"]["total"]
    s = fw.sections
    channel = f"{fw.output} ({b.uart})" if fw.output == "uart" else fw.output
    lines = [(f"firmware: {fw.elf} ({b.name}, text through {channel}), {fw.binary.name} "
              f"{fw.binary.stat().st_size:,} bytes"),
             (f"  flash: {fw.flash_used:,} of {b.flash_bytes:,} bytes (.text {s.get('.text', 0):,} incl. constants, "
             + (f".tt_flash {s['.tt_flash']:,} (trainable weights' home), " if s.get(".tt_flash") else "")
             + f".data init {s.get('.data', 0):,}); the plan's flash figure: {flash_plan:,}"
             + (f"; reserved after it: {fw.persist_bytes:,} (persistent trained state, 2 record slots"
                + (f" and a {persist_journal_entries()}-entry journal of home pages"
                   if s.get(".tt_flash") else "") + ")" if fw.persist_bytes and not fw.qspi else "")),
             (f"  SRAM:  {fw.ram_static + fw.stack_reserved:,} of {b.ram_bytes:,} bytes (.data {s.get('.data', 0):,} "
             f"+ .bss {s.get('.bss', 0):,} + stack reserve {fw.stack_reserved:,}); the plan's SRAM figure: {sram_plan:,}")]
    if fw.qspi:
        end = max(a + n for _, a, n in fw.qspi)
        lines.append(f"  QSPI:  {end - fw.qspi[0][1]:,} of {b.qspi_bytes:,} bytes ("
                     + ", ".join(f"{what} {n:,} at {a:#010x}" for what, a, n in fw.qspi)
                     + (f": 2 record slots and a {persist_journal_entries()}-entry journal of home pages"
                        if s.get(".tt_flash") else ": 2 record slots")
                     + f"; {b.qspi_subsector:,}-byte subsector pages; the firmware copies the home from flash at boot)")
    if fw.stack_bound is None:
        lines.append(f"  stack: no static bound ({fw.stack_note})")
    else:
        lines.append(f"  stack: static bound {fw.stack_bound:,} bytes ({fw.stack_note})")
        if fw.stack_bound > fw.stack_reserved:
            lines.append(f"  warning: the stack bound exceeds the reserve of {fw.stack_reserved:,} bytes (--stack)")
    return lines


def cmd_firmware(a: argparse.Namespace) -> int:
    from compiler import pipeline
    from compiler.commands import _data

    brd = board(a.board)
    project = pipeline.load_project(Path(a.dir), a.model)
    if a.app == "stream":  # the samples come over the UART (trady stream)
        images, labels = np.zeros((0, 1), np.int8), np.zeros(0, np.int32)
    else:
        images, labels = load_samples(project, _data(a), a.samples)
    fw = build(Path(a.dir), project, brd, images, labels, Schedule(seed=a.seed, lr=a.lr), opt=f"-{a.opt}",
               stack=a.stack, kernels=a.kernels, output=a.output, app=a.app)
    for line in report_lines(fw, project.plan_json):
        print(line)
    if brd.flash_port is not None and not brd.qspi_bytes and project.spec.weight_home == "flash":
        print(f"  warning: {brd.name}: the trainable weights have a flash home and this board has no flash write-back "
              f"yet (runtime_c/boards/{brd.flash_port}): training stops with 'not supported on this target' at the "
              f"first resampling", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """`trady firmware`, `trady qemu`, `trady bench-mcu`, `trady flash`, `trady stream`."""
    from compiler import emulate, flash
    from compiler.cli import positive_int

    def common(p: argparse.ArgumentParser, boards: tuple[str, ...], default: str,
               output: str | None = "semihosting") -> None:
        p.add_argument("dir", type=Path, help="compiled project folder (trady compile --out)")
        p.add_argument("--board", choices=boards, default=default, help=f"target (default {default})")
        p.add_argument("--model", type=Path, default=None, help="model file, if it moved since the compile")
        p.add_argument("--data", type=Path, default=None,
                       help="data set the embedded samples come from (default: shared CIFAR-10 subset)")
        p.add_argument("--samples", type=positive_int, default=DEFAULT_SAMPLES,
                       help=f"training samples embedded in the image (default {DEFAULT_SAMPLES})")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--lr", type=float, default=0.01)
        p.add_argument("--opt", choices=("O2", "O3", "Os", "Ofast"), default="O2", help="optimisation (default O2)")
        p.add_argument("--kernels", choices=KERNELS, default="dsp",
                       help="dsp: the Cortex-M DSP-extension kernels of runtime_c/arm/ where one exists (default); "
                            "reference: the plain C99 kernels")
        default_output = output or "the board's (semihosting on the QEMU boards, uart on stm32f746g-disco)"
        p.add_argument("--output", choices=OUTPUTS, default=output,
                       help="text channel: semihosting or the board's UART (the QEMU boards' CMSDK UART0, the "
                            f"DISCO's USART1 on the ST-LINK's virtual COM port); default {default_output}")
        p.add_argument("--stack", type=positive_int, default=DEFAULT_STACK,
                       help=f"stack bytes reserved at the top of SRAM (default {DEFAULT_STACK})")

    f = sub.add_parser("firmware", help="build the Cortex-M firmware (ELF + .bin) for a board; print its sizes")
    common(f, tuple(BOARDS), "qemu-m7", output=None)
    f.add_argument("--app", choices=tuple(APPS), default="train",
                   help="train: training steps on embedded samples (default); stream: trains on samples sent "
                        "over the UART by `trady stream` (docs/STREAM.md; every board here has one)")
    f.set_defaults(func=cmd_firmware)
    emulated = tuple(n for n, b in BOARDS.items() if b.qemu_machine)
    q = sub.add_parser("qemu", help="run the firmware's training steps in QEMU; compare with the host build")
    common(q, emulated, "qemu-m7")
    q.add_argument("--timeout", type=positive_int, default=600, help="seconds QEMU may run (default 600)")
    q.add_argument("--restore-at", type=positive_int, default=None, metavar="STEP",
                   help="the host build trains to epoch boundary STEP and writes its persistent-state region; QEMU "
                        "preloads it (generic loader) and the firmware restores it at boot and trains on from STEP")
    q.set_defaults(func=emulate.cmd_qemu)
    bm = sub.add_parser("bench-mcu", help="instructions per layer, inference and training step in QEMU (plugin)")
    common(bm, emulated, "qemu-m7")
    bm.add_argument("--timeout", type=positive_int, default=600, help="seconds QEMU may run (default 600)")
    bm.set_defaults(func=emulate.cmd_bench_mcu)
    flash.register(sub)
    from compiler import stream

    stream.register(sub)
