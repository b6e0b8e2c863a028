"""Stage 9c, flashing: a built firmware ELF -> the board, through pyOCD (`trady flash`).

The command is built here and run as a subprocess: `pyocd flash --target <part> [--uid ID] --format
elf DIR/firmware-<board>[-stream]/firmware.elf` (`--app stream`: the streaming firmware). pyOCD is an
optional dependency (`pip install 'trady[flash]'`); its STM32F746 support comes from the device's CMSIS pack, installed once with
`pyocd pack install stm32f746nghx`. `--dry-run` prints the command without running it (how the
tests check it: no board is needed). pyOCD programs the ELF's load segments at their physical (load)
addresses, i.e. the internal flash only: the STM32F746G-DISCO's QSPI flash (the flash weight home and the
persistent state) needs no external loader, the firmware copies the home into it at the first boot of an
image (docs/PERSIST.md).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from pathlib import Path

from compiler.errors import TradyError
from compiler.firmware import BOARDS, board

# board name -> pyOCD target type (the CMSIS-pack part name, lower case)
PYOCD_TARGETS = {"stm32f746g-disco": "stm32f746nghx"}
PYOCD_PIN = "pyocd==0.46.0"


def flash_command(project_dir: Path, board_name: str, probe: str | None, app: str = "train") -> list[str]:
    brd = board(board_name)
    if brd.name not in PYOCD_TARGETS:
        raise TradyError(f"--board {brd.name}: not a physical board (flashable: {', '.join(PYOCD_TARGETS)})")
    stream = app == "stream"
    elf = Path(project_dir).resolve() / f"firmware-{brd.name}{'-stream' if stream else ''}" / "firmware.elf"
    if not elf.is_file():
        raise TradyError(f"{elf}: no firmware built for {brd.name}; run `trady firmware {project_dir} "
                         f"--board {brd.name}{' --app stream' if stream else ''}` first")
    cmd = ["pyocd", "flash", "--target", PYOCD_TARGETS[brd.name]]
    if probe is not None:
        cmd += ["--uid", probe]
    return [*cmd, "--format", "elf", str(elf)]


def cmd_flash(a: argparse.Namespace) -> int:
    cmd = flash_command(a.dir, a.board, a.probe, a.app)
    print(shlex.join(cmd))
    if a.dry_run:
        return 0
    if shutil.which("pyocd") is None:
        raise TradyError(f"pyocd not found: install it with `pip install {PYOCD_PIN}` (or `pip install -e '.[flash]'`), "
                         f"then `pyocd pack install {PYOCD_TARGETS[a.board]}`")
    r = subprocess.run(cmd, check=False)
    if r.returncode != 0:
        raise TradyError(f"pyocd flash failed with exit status {r.returncode} (probe connected? `pyocd list`)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("flash", help="flash the built firmware to the board with pyOCD")
    f.add_argument("dir", type=Path, help="compiled project folder with a firmware built by `trady firmware`")
    f.add_argument("--board", choices=[n for n in BOARDS if n in PYOCD_TARGETS], default="stm32f746g-disco")
    f.add_argument("--app", choices=("train", "stream"), default="train",
                   help="which firmware: train (default) or stream (`trady firmware --app stream`)")
    f.add_argument("--probe", default=None, help="probe unique ID (`pyocd list`); default: the only one attached")
    f.add_argument("--dry-run", action="store_true", help="print the pyOCD command, do not run it")
    f.set_defaults(func=cmd_flash)
