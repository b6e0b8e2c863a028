"""Persistent trained state (docs/PERSIST.md): read the reserved flash region's two record slots.

The region is written by the generated `<model>_persist_save` (format in runtime_c/tt_persist.h): on the
host `host_sim trace ... persist=REGION` keeps it in a file, on the board it is the region the linker script reserves after the image.
This module reads a region file back the way the firmware does at boot (`tt_persist_examine`), so a host
run's region can be checked, and preloaded into the emulator, knowing which record the target will restore.
With a flash weight home the region ends with the journal of home pages (JOURNAL_ENTRIES entries), and the
boot also checks the home against the record (the host keeps the home in REGION.home), which this does not.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compiler import emit, host
from compiler.errors import TradyError
from compiler.pipeline import Project

MAGIC, VERSION, HEADER_BYTES = 0x52505454, 1, 28
PAGE_BYTES = 2048  # TT_PERSIST_PAGE_BYTES unless the build sets it
JOURNAL_ENTRIES = 4  # TT_PERSIST_JOURNAL_ENTRIES unless the build sets it (a flash weight home only)


@dataclass(frozen=True)
class Slot:
    state: str  # "valid", "empty", "torn", "other" (tt_slot_state_name)
    seq: int
    payload: bytes  # the trained-state file (compiler.state reads it); empty unless valid/other

    @property
    def state_crc(self) -> int:
        """The state file's own CRC32 (its last 4 bytes), as the firmware reports it."""
        return struct.unpack_from("<I", self.payload, len(self.payload) - 4)[0] if len(self.payload) >= 4 else 0


def slot_bytes(state_max_bytes: int, page: int = PAGE_BYTES) -> int:
    """TT_PERSIST_SLOT_BYTES: a header page plus the pages of the largest state."""
    return (1 + -(-state_max_bytes // page)) * page


def journal_bytes(project: Project, page: int = PAGE_BYTES) -> int:
    """The journal after the two slots (TT_PERSIST_REGION_BYTES): with a flash weight home, JOURNAL_ENTRIES
    entries of a header page plus the pages of one home page; none with a RAM home."""
    if project.spec.weight_home != "flash":
        return 0
    return JOURNAL_ENTRIES * (1 + -(-project.spec.flash_page // page)) * page


def examine(raw: bytes, slot: int, want_id: int, page: int = PAGE_BYTES, journal: int = 0) -> Slot:
    size = (len(raw) - journal) // 2
    h = raw[slot * size:(slot + 1) * size]
    if len(h) < page or struct.unpack_from("<I", h)[0] != MAGIC:
        return Slot("empty", 0, b"")
    _, version, seq, mid, length, pcrc, hcrc = struct.unpack_from("<7I", h)
    if hcrc != zlib.crc32(h[:24]) or length > size - page or pcrc != zlib.crc32(h[page:page + length]):
        return Slot("torn", 0, b"")
    return Slot("valid" if (version, mid) == (VERSION, want_id) else "other", seq, bytes(h[page:page + length]))


def read_region(path: Path, project: Project, page: int = PAGE_BYTES) -> tuple[list[Slot], int]:
    """Both slots of a region file and the index of the one a boot restores (-1: none valid; with a flash home
    the boot also checks the home, which this does not read)."""
    raw = Path(path).read_bytes() if Path(path).is_file() else None
    if raw is None:
        raise TradyError(f"{path}: persistent region file not found")
    journal = journal_bytes(project, page)
    if (len(raw) - journal) % (2 * page) != 0 or len(raw) - journal < 4 * page:
        raise TradyError(f"{path}: {len(raw)} bytes is not a region of two slots of whole {page}-byte pages"
                         + (f" and a {journal}-byte journal" if journal else ""))
    want = emit.model_id(project.graph, project.spec)
    slots = [examine(raw, k, want, page, journal) for k in (0, 1)]
    valid = [k for k in (0, 1) if slots[k].state == "valid"]
    return slots, max(valid, key=lambda k: slots[k].seq, default=-1)


def host_trace(exe: Path, images: np.ndarray, labels: np.ndarray, schedule, total: int,
               region: Path) -> tuple[bytes, list[str]]:
    """`host_sim trace ... persist=REGION` over `images` (the run from step 0; it goes on from the restored
    step): the trace records and the "persist ..." lines it printed."""
    raw, text = host.run_trace_text(exe, images, labels, schedule.per_epoch, schedule.seed, schedule.lr,
                                    schedule.warmup, total, (f"persist={region}",))
    return raw, [ln for ln in text.splitlines() if ln.startswith("persist ")]


def region_address(elf: Path) -> tuple[int, int]:
    """Address and size of the firmware's persistent-state region (_stt_persist, _ett_persist: tt_sections.ld)."""
    r = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True)
    syms = {p[2]: int(p[0], 16) for p in (ln.split() for ln in r.stdout.splitlines()) if len(p) == 3}
    if "_stt_persist" not in syms or "_ett_persist" not in syms:
        raise TradyError(f"{elf}: no persistent-state region (a build without TT_FW_PERSIST)")
    if syms["_ett_persist"] == syms["_stt_persist"]:
        raise TradyError(f"{elf}: no persistent-state region (a build without TT_FW_PERSIST)")
    return syms["_stt_persist"], syms["_ett_persist"] - syms["_stt_persist"]
