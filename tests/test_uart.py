"""The STM32F746G-DISCO's console and stream link: USART1 on the ST-LINK's virtual COM port, without a board.

The board driver (runtime_c/boards/tt_out_uart_stm32f7.c) is compiled for the host, with ASan and UBSan, against a
register-level model of USART1, RCC and GPIOA/B (tests/c/uart_model.c) and driven by tests/c/uart_check.c: the
set-up after init (clocks, PA9/PB7 in AF7 with no other pin touched, BRR for the baud rate, CR1), a string and raw
bytes sent, bytes received, an overrun and a framing error recovered from, and the exit line flushed before the
halt. Mutated copies of the driver (no ORE clear, no TXE or TC wait, BRR after UE, a wrong alternate function, ...)
are caught by the model. The disco firmware, the training one and the stream one, links the USART path by
default and no semihosting; `--output semihosting` keeps the debugger channel.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from tt_support import ROOT, assert_one_line_error, compile_tiny, data_path, require_tool, run_cli

from compiler import firmware

BOARDS = ROOT / "runtime_c" / "boards"
DRIVER = BOARDS / "tt_out_uart_stm32f7.c"
CHECK = ROOT / "tests" / "c" / "uart_check.c"
MODEL = ROOT / "tests" / "c" / "uart_model.c"
SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]


def build(tmp: Path, name: str, source: str, *defines: str) -> Path:
    gcc = require_tool("gcc")
    src = tmp / f"{name}.c"
    src.write_text(source)
    exe = tmp / name
    r = subprocess.run([gcc, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", *SAN, "-DTT_UART_HOST_MODEL",
                        *(f"-D{d}" for d in defines), f"-I{CHECK.parent}", f"-I{BOARDS}", str(src), str(MODEL),
                        str(CHECK), "-o", str(exe)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return exe


def run(exe: Path) -> tuple[int, list[str]]:
    r = subprocess.run([str(exe)], capture_output=True, text=True, check=False, timeout=60)
    return r.returncode, (r.stdout + r.stderr).splitlines()


@pytest.mark.parametrize(("baud", "brr", "code"), [(115200, 139, 3), (9600, 1667, 0), (57600, 278, -12)])
def test_driver_on_the_model(tmp_path, baud, brr, code):
    """115200 baud by default: BRR = 16 MHz / 115200 rounded; another TT_UART_BAUD gives its own divisor."""
    defines = [f"UART_MODEL_BAUD={baud}", f"EXIT_CODE={code}"] + ([f"TT_UART_BAUD={baud}u"] if baud != 115200 else [])
    rc, lines = run(build(tmp_path, "driver", DRIVER.read_text(), *defines))
    assert rc == 0, "\n".join(lines[-5:])
    assert lines == [f"uart-check: init BRR {brr} CR1 0000000d PA9 AF7 PB7 AF7",
                     "uart-check: transmit 27 bytes in order",
                     "uart-check: receive 5 bytes in order",
                     "uart-check: overrun: 3 bytes lost, the link goes on",
                     "uart-check: full duplex: 40 bytes received while sending, none lost",
                     "uart-check: framing error cleared",
                     f'uart-model: halt {code} after "exit {code}\\n"']


def test_a_baud_rate_the_host_does_not_use_is_caught(tmp_path):
    rc, lines = run(build(tmp_path, "baud", DRIVER.read_text(), "UART_MODEL_BAUD=9600"))
    assert rc == 5 and "baud rate 115108 (BRR 139) is not the host's 9600" in lines[-1], lines[-3:]


MUTATIONS = {
    "ORE never cleared": ("        TT_REG_WR(USART_ICR, ICR_ORECF | ICR_NCF | ICR_FECF);\n", "", "uart-model: stuck: "),
    "no TXE wait before TDR": (
        "    while ((poll() & ISR_TXE) == 0u) { /* TDR still full: receive meanwhile */\n    }\n", "",
        "TDR written while TXE is clear"),
    "no receive while transmitting": (
        "while ((poll() & ISR_TXE) == 0u)", "while ((TT_REG_RD(USART_ISR) & ISR_TXE) == 0u)",
        "bytes lost while transmitting"),
    "no TC wait before the halt": (
        "    while ((TT_REG_RD(USART_ISR) & ISR_TC) == 0u) { /* the last byte is still being shifted out */\n    }\n",
        "", "halted before the last byte left"),
    "BRR written after UE": (
        ("    TT_REG_WR(USART_BRR, (UART_CLOCK + TT_UART_BAUD / 2u) / TT_UART_BAUD);\n"
         "    TT_REG_WR(USART_CR1, CR1_UE);\n"),
        ("    TT_REG_WR(USART_CR1, CR1_UE);\n"
         "    TT_REG_WR(USART_BRR, (UART_CLOCK + TT_UART_BAUD / 2u) / TT_UART_BAUD);\n"),
        "BRR written while UE is set"),
    "the STM32F4 mantissa/fraction divisor": ("(UART_CLOCK + TT_UART_BAUD / 2u) / TT_UART_BAUD",
                                              "UART_CLOCK / (16u * TT_UART_BAUD) << 4", "baud rate"),
    "RX in the wrong alternate function": ("gpio_af(GPIOB, 7, AF_USART1);", "gpio_af(GPIOB, 7, 4u);",
                                           "pin PB7 RX is not in alternate function 7"),
    "TX on the wrong pin": ("gpio_af(GPIOA, 9, AF_USART1);", "gpio_af(GPIOA, 10, AF_USART1);",
                            "pin PA9 TX is not in alternate function 7"),
    "USART1 clock not enabled": ("    TT_REG_WR(RCC_APB2ENR, TT_REG_RD(RCC_APB2ENR) | RCC_USART1);\n", "",
                                 "USART1 accessed with its clock off"),
    "GPIOB clock not enabled": ("RCC_GPIOA | RCC_GPIOB);", "RCC_GPIOA);", "GPIOB accessed with its clock off"),
    "receiver not enabled": ("CR1_UE | CR1_TE | CR1_RE);", "CR1_UE | CR1_TE);", "uart-model: stuck: "),
    "RDR read without RXNE": ("if ((isr & ISR_RXNE) != 0u && ring_in", "if (ring_in", "RDR read while RXNE is clear"),
}


@pytest.mark.parametrize("what", list(MUTATIONS))
def test_a_driver_that_breaks_the_protocol_fails(tmp_path, what):
    old, new, message = MUTATIONS[what]
    source = DRIVER.read_text()
    assert source.count(old) == 1, f"mutation {what!r}: the driver no longer has {old!r}"
    # the model, not the check's expected register values, must catch it
    rc, lines = run(build(tmp_path, "mutant_" + re.sub(r"\W+", "_", what), source.replace(old, new),
                          "UART_CHECK_NO_INIT_VALUES"))
    assert rc in (1, 5, 6) and any(message in ln for ln in lines), f"{what}: exit {rc}, not caught:\n" + \
        "\n".join(lines[-5:])


# ---------------------------------------------------------------------------------------------
# The firmware for the board


@pytest.fixture(scope="module")
def tiny10(tmp_path_factory) -> Path:
    require_tool("arm-none-eabi-gcc")
    return compile_tiny(tmp_path_factory.mktemp("uart"))


def _symbols(elf: Path) -> set[str]:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    return {p[2] for p in (ln.split() for ln in out.splitlines()) if len(p) == 3}


def _code(elf: Path, *options: str) -> str:
    return subprocess.run(["arm-none-eabi-objdump", "-d", *options, str(elf)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.arm
@pytest.mark.parametrize("app", ["train", "stream"])
def test_disco_firmware_links_the_usart_and_no_semihosting(tiny10, app):
    """Without --output: the USART1 driver, no semihosting call (a BKPT would halt a board without a debugger);
    tt_uart_init writes USART1 and BRR 139. The stream firmware has the receive path too; `trady flash --app`
    programs the one asked for."""
    data_path()
    rc, out, err = run_cli(["firmware", str(tiny10), "--board", "stm32f746g-disco", "--app", app])
    assert rc == 0, err
    assert "text through uart (tt_out_uart_stm32f7.c)" in out.splitlines()[0]
    elf = tiny10 / f"firmware-stm32f746g-disco{'-stream' if app == 'stream' else ''}" / "firmware.elf"
    syms = _symbols(elf)
    assert {"tt_uart_init", "tt_out_exit", "tt_fault_handler"} <= syms
    assert app == "train" or {"tt_uart_read", "tt_uart_write"} <= syms
    assert not syms & {"tt_sh_write0", "tt_sh_exit"}, "semihosting linked into the UART build"
    assert "bkpt" not in _code(elf)
    init = _code(elf, "--disassemble=tt_uart_init")
    assert ".word\t0x40011000" in init and "#139" in init, "tt_uart_init: no USART1 base or no BRR 139"
    rc, out, err = run_cli(["flash", str(tiny10), "--app", app, "--dry-run"])
    assert rc == 0 and out.split()[-1] == str(elf.resolve()), out + err


@pytest.mark.arm
def test_disco_semihosting_stays_available_and_uart_can_be_asked_for(tiny10):
    data_path()
    rc, out, err = run_cli(["firmware", str(tiny10), "--board", "stm32f746g-disco", "--output", "semihosting"])
    assert rc == 0, err
    assert "text through semihosting" in out.splitlines()[0]
    syms = _symbols(tiny10 / "firmware-stm32f746g-disco" / "firmware.elf")
    assert {"tt_sh_write0", "tt_sh_exit"} <= syms and "tt_uart_init" not in syms
    rc, out, err = run_cli(["firmware", str(tiny10), "--board", "stm32f746g-disco", "--output", "uart"])
    assert rc == 0 and "text through uart (tt_out_uart_stm32f7.c)" in out.splitlines()[0], err
    assert "tt_uart_init" in _symbols(tiny10 / "firmware-stm32f746g-disco" / "firmware.elf")


@pytest.mark.arm
def test_qemu_boards_keep_semihosting_by_default(tiny10):
    data_path()
    project_boards = [b for b in firmware.BOARDS.values() if b.qemu_machine]
    assert project_boards and all(b.output == "semihosting" and b.uart == "tt_out_uart_cmsdk.c"
                                  for b in project_boards)
    rc, out, err = run_cli(["firmware", str(tiny10), "--board", "qemu-m7"])
    assert rc == 0 and "text through semihosting" in out.splitlines()[0], err


@pytest.mark.arm
def test_disco_stream_with_a_flash_home_is_refused(tmp_path):
    """The stream firmware does not bring up the QSPI flash where the board keeps a flash home: one line."""
    require_tool("arm-none-eabi-gcc")
    out = compile_tiny(tmp_path, "--weight-home", "flash", "--flash-page", "4096")
    rc, _, err = run_cli(["firmware", str(out), "--board", "stm32f746g-disco", "--app", "stream"])
    assert_one_line_error(rc, err, "--app stream", "stm32f746g-disco", "--weight-home ram")
    assert not (out / "firmware-stm32f746g-disco-stream").exists()
