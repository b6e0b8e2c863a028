"""The STM32F746G-DISCO's QSPI flash path on the host (docs/PERSIST.md, "The STM32F746G-DISCO: QSPI flash").

The board driver (runtime_c/boards/tt_qspi_stm32f7.c) and the firmware application (tt_fw_main.c, with
persistence) are compiled for the host, with ASan and UBSan, against a register-level model of the QUADSPI, RCC,
GPIO, MPU and the N25Q128A (tests/c/qspi_model.c); the tiny model has a flash home of 4096-byte pages. Checked:
the boot copy and the stamp (fresh part, same image, new image), the journaled write-back of three epochs gives the
home and the region the host build (`host_sim trace persist=`) writes, byte for byte, and prints the same steps;
power losses at many points of the flash operations (the boot copy, records, journal, home pages) keep the
persistence guarantees; the model's protocol checks catch a driver that breaks the protocol (mutated copies of
the driver: no WRITE ENABLE, no erase, a page crossed, the window read in indirect mode, ...).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from tt_support import ROOT, compile_tiny, data_path, require_tool

from compiler import emit, emulate, firmware, persist, pipeline

SUB, STEPS = 4096, 6
BOARDS = ROOT / "runtime_c" / "boards"
MODEL_C = ROOT / "tests" / "c" / "qspi_model.c"
DRIVER = BOARDS / "tt_qspi_stm32f7.c"
SAN = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
ENV = {"ASAN_OPTIONS": "handle_segv=0:handle_sigbus=0:detect_leaks=1", "UBSAN_OPTIONS": "print_stacktrace=1"}


class Harness:
    """The firmware built for the host against the model; objects kept so a mutated driver links quickly."""

    def __init__(self, tmp: Path):
        gcc = require_tool("gcc")
        self.tmp = tmp
        out = compile_tiny(tmp, "--weight-home", "flash", "--flash-page", str(SUB))
        self.out, self.project = out, pipeline.load_project(out)
        self.images, self.labels = firmware.load_samples(self.project, data_path(), STEPS)
        self.schedule = firmware.Schedule()
        fw = tmp / "fw"
        fw.mkdir()
        (fw / "fw_samples.h").write_text(firmware.render_samples(self.images, self.labels, self.schedule))
        self.region_bytes = firmware.persist_region_bytes(out, self.project, SUB)
        self.flags = [gcc, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                      "-fno-strict-aliasing", *SAN, "-DTT_FW_PERSIST", "-DTT_FW_QSPI", "-DTT_QSPI_HOST_MODEL",
                      f"-DTT_PERSIST_PAGE_BYTES={SUB}", f"-DTT_PERSIST_JOURNAL_ENTRIES={persist.JOURNAL_ENTRIES}",
                      f"-DQSPI_MODEL_REGION_BYTES={self.region_bytes}", f"-I{fw}", f"-I{out}", f"-I{out / 'runtime'}",
                      f"-I{BOARDS}", f"-I{MODEL_C.parent}"]
        name = emit.model_c_name(self.project.graph)
        sources = [out / f"{name}.c", *sorted((out / "runtime").glob("*.c")), BOARDS / "tt_fw_main.c", MODEL_C]
        self.objects = []
        for k, src in enumerate(sources):
            obj = tmp / f"o{k}.o"
            self._cc("-c", str(src), "-o", str(obj))
            self.objects.append(obj)
        self.exe = self.link(DRIVER.read_text(), "fw_host")
        # the host build, with the board's page size: the reference for the steps, the home and the region
        r = subprocess.run(["make", "-s", "-C", str(out), "host_sim", f"EXTRA_CFLAGS=-DTT_PERSIST_PAGE_BYTES={SUB}"],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        region = tmp / "host.region"
        raw, self.host_persist = persist.host_trace(out / "host_sim", self.images, self.labels, self.schedule, STEPS,
                                                    region)
        self.host_region, self.host_home = region.read_bytes(), Path(f"{region}.home").read_bytes()
        self.want = (emulate.forward_lines(self.project, out / "host_sim", self.images[0])
                     + emulate.host_lines(self.project, raw, STEPS))
        self.home_bytes = len(self.host_home)
        offsets, _ = self.project.spec.flash_layout(self.project.graph)
        self.weights_bytes = max(o + self.project.graph.convs[i].weight.size for i, o in offsets.items())

    def _cc(self, *args: str) -> None:
        r = subprocess.run([*self.flags, *args], capture_output=True, text=True, check=False)
        assert r.returncode == 0, r.stderr

    def link(self, driver_source: str, name: str, *flags: str) -> Path:
        src = self.tmp / f"{name}.c"
        src.write_text(driver_source)
        exe = self.tmp / name
        self._cc(*flags, str(src), *(str(o) for o in self.objects), "-o", str(exe), "-lm")
        return exe

    def run(self, flash: Path, exe: Path | None = None, strict: bool = True, **env: str) -> tuple[int, list[str]]:
        r = subprocess.run([str(exe or self.exe)], capture_output=True, text=True, check=False, timeout=120,
                           env={**os.environ, **ENV, "QSPI_MODEL_FLASH": str(flash), **env})
        assert r.returncode in (0, 3) or not strict, \
            f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        return r.returncode, r.stdout.splitlines()

    def parts(self, flash: Path) -> tuple[bytes, bytes, bytes]:
        raw = flash.read_bytes()
        h = self.home_bytes
        assert len(raw) == h + SUB + self.region_bytes
        return raw[:h], raw[h:h + SUB], raw[h + SUB:]


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Harness:
    return Harness(tmp_path_factory.mktemp("qspi"))


def operations(lines: list[str]) -> int:
    return int(next(ln for ln in lines if ln.startswith("qspi-model: flash operations")).split()[3])


def test_boot_copy_stamp_and_write_back_equal_the_host_build(harness, tmp_path):
    """A fresh part: the pristine home is copied and stamped; three epochs of journaled write-back leave the same
    home and region as the host build, and the firmware prints the same forward pass, steps and records. The same
    image again keeps the trained home and restores; a new image (other weights) recopies and the record is
    refused (its home is gone)."""
    h = harness
    flash = tmp_path / "flash.bin"
    rc, lines = h.run(flash)
    assert rc == 0, "\n".join(lines[-5:])
    assert f"qspi home fresh: {h.home_bytes} bytes" in " ".join(lines)
    diff = emulate.compare(lines, h.want)
    assert diff is None, diff
    assert [ln for ln in lines if ln.startswith("persist ")] == h.host_persist
    assert any(ln.startswith(f"done {STEPS} ") for ln in lines)
    home, stamp, region = h.parts(flash)
    assert home == h.host_home, f"home differs from the host build's first at byte {_first(home, h.host_home)}"
    assert region == h.host_region, f"region differs from the host build's first at byte {_first(region, h.host_region)}"
    assert stamp[:4] == b"TTQS" and stamp[24:] == b"\xff" * (SUB - 24)
    # the same image again: home kept (no erase at boot), the newest record restored, nothing left to train
    rc, again = h.run(flash)
    assert rc == 0 and any(ln.startswith(f"qspi home kept: {h.home_bytes} bytes") for ln in again), again[:3]
    assert f"persist restored seq {STEPS // 2} step {STEPS}" in again
    assert operations(again) == 0 and h.parts(flash)[0] == h.host_home
    # a new image: another stamp, the pristine home copied over the trained one (the forward pass runs on it)
    rc, other = h.run(flash, QSPI_MODEL_IMAGE_XOR="85")
    assert rc == 0 and any(ln.startswith("qspi home other: ") for ln in other), other[:3]
    assert [ln for ln in other if ln.startswith("fwd ")] != [ln for ln in lines if ln.startswith("fwd ")]
    # the tiny home is one page, which the journal's newest entry holds whole: read in its place the home check
    # matches the record, so the record is restored and the page redone (docs/PERSIST.md); a longer home refuses
    assert f"persist restored seq {STEPS // 2} step {STEPS}" in other and h.parts(flash)[0] == h.host_home
    rc, kept = h.run(flash, QSPI_MODEL_IMAGE_XOR="85")
    assert rc == 0 and any(ln.startswith("qspi home kept: ") for ln in kept)
    # and a stamp torn (its page cut short): a fresh copy
    raw = bytearray(flash.read_bytes())
    raw[h.home_bytes + 20] ^= 0x40
    flash.write_bytes(bytes(raw))
    rc, torn = h.run(flash)
    assert rc == 0 and any(ln.startswith("qspi home fresh: ") for ln in torn)


def _first(a: bytes, b: bytes) -> int:
    return next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), min(len(a), len(b)))


def _steps(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("step ")]


def test_power_loss_at_any_flash_operation_keeps_the_guarantees(harness, tmp_path):
    """Cut the power after N flash operations (erases, bytes programmed) of a fresh run: the boot copy, the
    records, the journal and the home pages. The next boot restores exactly a committed record (the last one
    saved, or the one being saved once its header was whole) and trains on like the uninterrupted run, to the
    same home; a cut before the stamp is programmed recopies the home."""
    h = harness
    flash = tmp_path / "flash.bin"
    flash.unlink(missing_ok=True)
    rc, full = h.run(flash)
    total = operations(full)
    # the stamp names the image once its six words are programmed: after its erase, the home's erases and pages
    copy = 1 + h.home_bytes // SUB + h.home_bytes + 24
    step_lines = _steps(h.want)
    cuts = sorted({0, 1, copy - 24, copy - 2, copy - 1, copy, copy + 1, copy + 232, total - 1,
                   *range(0, total, max(1, total // 80))})
    outcomes, kinds = set(), set()
    for n in cuts:
        flash.unlink(missing_ok=True)
        rc, cut = h.run(flash, QSPI_MODEL_CUT=str(n))
        assert rc == 3, f"cut at {n} of {total}: exit {rc}"
        saved = sum(ln.startswith("persist saved") for ln in cut)
        where = re.match(r"qspi-model: power-loss during (.+) at flash offset (\d+) ", cut[-1])
        assert where is not None, cut[-1]
        at_flash = int(where.group(2))
        kinds.add((where.group(1), "home" if at_flash < h.home_bytes else "stamp" if at_flash < h.home_bytes + SUB
                   else "region"))
        rc, lines = h.run(flash)
        assert rc == 0, f"cut at {n}: the boot after it failed: {lines[-3:]}"
        boot = next(ln for ln in lines if ln.startswith("qspi home "))
        assert boot.startswith("qspi home fresh" if n < copy else "qspi home kept"), f"cut at {n} (copy {copy}): {boot}"
        m = next((re.match(r"persist restored seq (\d+) step (\d+)$", ln) for ln in lines
                  if ln.startswith("persist restored")), None)
        at = int(m.group(2)) if m else 0
        assert m is not None or any(ln.startswith("persist none") for ln in lines), f"cut at {n}: {lines}"
        assert at in (2 * saved, 2 * saved + 2), f"cut at {n}: {saved} records saved before it, restored step {at}"
        want = [ln for ln in step_lines if int(ln.split()[1]) >= at]
        assert _steps(lines) == want, f"cut at {n}: restored at step {at}, steps differ from the uninterrupted run"
        got_saved = [ln for ln in lines if ln.startswith("persist saved")]
        assert got_saved == [ln for ln in h.host_persist if ln.startswith("persist saved")][len(
            h.host_persist) - len(got_saved) - sum(not ln.startswith("persist saved") for ln in h.host_persist):]
        # the weights (not the page's padding after them, which the home check does not cover: a cut there
        # is left as it is, unread) as the uninterrupted run left them
        home, used = h.parts(flash)[0], h.weights_bytes
        assert home[:used] == h.host_home[:used], \
            f"cut at {n}: the home differs from the uninterrupted run's at byte {_first(home, h.host_home)}"
        outcomes.add(at)
    assert outcomes >= {0, 2, 4, 6} and len(cuts) > 60
    assert kinds == {(op, part) for op in ("SUBSECTOR ERASE", "PAGE PROGRAM") for part in ("home", "stamp", "region")}


MUTATIONS = {
    "no WRITE ENABLE before PAGE PROGRAM": (
        ("    tt_status st = write_enable();\n    if (st != TT_OK) {\n        return st;\n    }\n"
         "    TT_REG_WR(QSPI_DLR, TT_QSPI_PROGRAM_PAGE - 1);"),
        "    tt_status st = TT_OK;\n    TT_REG_WR(QSPI_DLR, TT_QSPI_PROGRAM_PAGE - 1);",
        "PAGE PROGRAM at 0 without WRITE ENABLE"),
    "no erase before programming": (
        "tt_status st = erase_subsector((uint32_t)(at + s));", "tt_status st = TT_OK;",
        "needs bits set that only an erase sets"),
    "a program crossing a 256-byte page": (
        "st = program_page((uint32_t)(at + s + p), data + s + p);",
        "st = program_page((uint32_t)(at + s + p + 16), data + s + p);", "crosses a 256-byte page"),
    "the window read in indirect mode": (
        "    st = st != TT_OK ? st : write_subsectors(at, data, bytes);",
        "    (void)*(volatile const int8_t *)page;\n    st = st != TT_OK ? st : write_subsectors(at, data, bytes);",
        "while it is not memory-mapped"),
    "the MPU left open in indirect mode": (
        "    mpu_mapped(0);\n    TT_REG_WR(QSPI_CR, TT_REG_RD(QSPI_CR) | CR_ABORT);",
        "    TT_REG_WR(QSPI_CR, TT_REG_RD(QSPI_CR) | CR_ABORT);", "while the MPU leaves the window open"),
    "memory-mapped mode not aborted": (
        "    TT_REG_WR(QSPI_CR, TT_REG_RD(QSPI_CR) | CR_ABORT);\n", "",
        "error qspi_boot: parameter out of range"),  # BUSY never clears: the driver gives up, the boot fails
    "no WIP polling after a program": (
        "    st = st != TT_OK ? st : wait_idle();\n    return st != TT_OK ? st : poll_status(STATUS_WIP, 0u);",
        "    return st != TT_OK ? st : wait_idle();", "while the flash is busy"),
    "wrong dummy cycles for FAST READ": ("#define FAST_READ_DUMMY 8 ", "#define FAST_READ_DUMMY 10 ", "8 dummy cycles"),
    "a pin in the wrong alternate function": ("gpio_af(GPIOB, 6, 10, 1);", "gpio_af(GPIOB, 6, 9, 1);",
                                              "pin PB6 NCS is not in alternate function 10"),
}


@pytest.mark.parametrize("what", list(MUTATIONS))
def test_a_driver_that_breaks_the_protocol_fails(harness, tmp_path, what):
    old, new, message = MUTATIONS[what]
    source = DRIVER.read_text()
    assert source.count(old) == 1, f"mutation {what!r}: the driver no longer has {old!r}"
    exe = harness.link(source.replace(old, new), "mutant_" + re.sub(r"\W+", "_", what), "-Wno-unused-function")
    rc, lines = harness.run(tmp_path / "flash.bin", exe, strict=False)
    assert rc != 0 and any(message in ln for ln in lines), f"{what}: exit {rc}, not caught:\n" + "\n".join(lines[-5:])


WRAPPER = r"""
#include <stdio.h>
tt_status tt_qspi_boot(const tt_qspi_image *image, tt_qspi_outcome *outcome, uint32_t *crc)
{
    const tt_status st = tt_qspi_boot_real(image, outcome, crc); /* then the window is mapped */
    uint8_t sram[2 * TT_QSPI_SUBSECTOR] = {0};
    int8_t *home = image->home;
    const int refused = tt_flash_program_page(home, (const uint8_t *)image->stamp, TT_QSPI_SUBSECTOR) == TT_ERR_ARG &&
                        tt_flash_program_page(home, (const uint8_t *)home, TT_QSPI_SUBSECTOR) == TT_ERR_ARG &&
                        tt_flash_program_page(home + 256, sram, TT_QSPI_SUBSECTOR) == TT_ERR_ARG &&
                        tt_flash_program_page(home, sram, 2048) == TT_ERR_ARG &&
                        tt_flash_program_page((int8_t *)sram, sram, TT_QSPI_SUBSECTOR) == TT_ERR_ARG;
    printf("qspi-check: %s\n", refused ? "refused" : "a bad program was accepted");
    return st;
}
"""


def test_bad_programs_are_refused(harness, tmp_path):
    """tt_flash_program_page refuses (TT_ERR_ARG, no flash operation) a source inside the window (unreadable while
    programming), a page that is not a whole aligned subsector, and a destination outside the window."""
    source = DRIVER.read_text()
    head = "tt_status tt_qspi_boot(const tt_qspi_image *image, tt_qspi_outcome *outcome, uint32_t *crc)\n{"
    assert source.count(head) == 1
    exe = harness.link(source.replace(head, head.replace("tt_qspi_boot", "tt_qspi_boot_real")) + WRAPPER, "refusal")
    flash = tmp_path / "flash.bin"
    rc, lines = harness.run(flash, exe)
    assert rc == 0 and "qspi-check: refused" in lines, lines[-5:]
    rc, plain = harness.run(tmp_path / "plain.bin")
    assert operations(lines) == operations(plain), "a refused program reached the flash"
