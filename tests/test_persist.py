"""Trained state that survives a reset (docs/PERSIST.md), on the host build: the region file models the flash.

The tiny model (tests/tt_support.py), with each weight home, built with 256-byte persistence pages (the flash
home's pages are 256 bytes too; REGION.home models the flash home). A run records at every epoch boundary; a
second run is cut by a simulated power loss (host_sim fail_after=N) at many offsets of one epoch boundary's
writes: the record (every page boundary, around it, inside pages and every byte of the commit header) and, with
a flash home, the journaled write-back of the home that follows it. The boot after it must restore exactly the
last committed state (or the new one once its header is whole), never anything else, and training from there
must go on bit-exactly like the run that was never interrupted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from tt_support import compile_tiny, data_path, require_tool, run_cli

from compiler import firmware, host, persist, pipeline, state

PAGE, PER_EPOCH, STEPS, SEED, LR = 256, 2, 8, 3, 0.01


def home_of(region: Path) -> Path:
    return region.with_name(region.name + ".home")  # host_sim's model of the flash home


def put(region: Path, base: tuple[bytes, bytes | None]) -> None:
    """Lay down a region (and the flash home it goes with, if any) as the flash would hold them."""
    region.write_bytes(base[0])
    home_of(region).unlink(missing_ok=True)
    if base[1] is not None:
        home_of(region).write_bytes(base[1])


@pytest.fixture(scope="module", params=["ram", "flash"], ids=["ram-home", "flash-home"])
def project(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp(f"persist-{request.param}")
    out = compile_tiny(tmp, "--weight-home", request.param, "--flash-page", "256")
    r = subprocess.run(["make", "-s", "-C", str(out), "host_sim", f"EXTRA_CFLAGS=-DTT_PERSIST_PAGE_BYTES={PAGE}"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    proj = pipeline.load_project(out)
    x, y = firmware.load_samples(proj, data_path(), STEPS)
    x.tofile(tmp / "x.bin")
    y.tofile(tmp / "y.bin")
    return tmp, proj, out / "host_sim", x, y


def sim(exe: Path, *args: str, ok=(0,)) -> subprocess.CompletedProcess:
    r = subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)
    assert r.returncode in ok, f"host_sim {' '.join(args)}: exit {r.returncode}: {r.stdout[-400:]}{r.stderr}"
    return r


def trace(tmp: Path, exe: Path, n: int, out: str, *options: str, ok=(0,)) -> subprocess.CompletedProcess:
    return sim(exe, "trace", str(tmp / "x.bin"), str(tmp / "y.bin"), str(n), str(PER_EPOCH), str(SEED), repr(LR), "1",
               str(STEPS), str(tmp / out), *options, ok=ok)


def steps_of(proj, raw: bytes, n: int) -> list[host.TraceStep]:
    g = proj.graph
    sizes = {i: g.convs[i].weight.size for i in sorted(set(proj.spec.pool.layers))}
    return host.parse_trace(raw, n, sizes, g.head.classes, g.head.features)


def same_steps(got: list[host.TraceStep], want: list[host.TraceStep]) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        for what, u, v in (("selection", a.selection, b.selection), ("logits", a.logits, b.logits),
                           ("head", a.head_weight, b.head_weight), ("loss", a.loss, b.loss),
                           *((f"conv {i} weights", a.weights[i], b.weights[i]) for i in a.weights)):
            u, v = np.atleast_1d(u), np.atleast_1d(v)
            bad = np.flatnonzero(u.view(np.uint8) != v.view(np.uint8)) if u.shape == v.shape else [0]
            assert len(bad) == 0, f"step {k}: {what} differs first at byte {bad[0]}"


@pytest.fixture(scope="module")
def reference(project):
    """The uninterrupted run's trace, the states at steps 2, 4 and 6, and a region holding records at 2 and 4."""
    tmp, proj, exe, _, _ = project
    trace(tmp, exe, STEPS, "full.bin")
    full = steps_of(proj, (tmp / "full.bin").read_bytes(), STEPS)
    states = {}
    for s in (2, 4, 6):
        trace(tmp, exe, s, "t.bin", f"save={tmp / f's{s}.bin'}")
        states[s] = (tmp / f"s{s}.bin").read_bytes()
    base = tmp / "base.region"
    out = trace(tmp, exe, 5, "t.bin", f"persist={base}").stdout
    assert "persist none" in out and "persist saved seq 1 step 2 " in out and "persist saved seq 2 step 4 " in out
    home = home_of(base).read_bytes() if home_of(base).is_file() else None
    assert (home is not None) == (proj.spec.weight_home == "flash")
    return full, states, (base.read_bytes(), home)


def restore(tmp: Path, exe: Path, region: Path) -> tuple[str, bytes | None]:
    out = tmp / "restored.bin"
    out.unlink(missing_ok=True)
    r = sim(exe, "persist-restore", str(region), str(out))
    return r.stdout, out.read_bytes() if out.is_file() else None


def test_records_at_epoch_boundaries_restore_the_newest(project, reference):
    tmp, proj, exe, _, _ = project
    full, states, base = reference
    region = tmp / "r.region"
    put(region, base)
    text, got = restore(tmp, exe, region)
    assert "persist slot 0 valid seq 1" in text and "persist slot 1 valid seq 2" in text
    # a flash home's state file holds the home as written back since: the same as trained, not the same bytes
    assert "persist restored seq 2 step 4" in text and (got == states[4] or base[1] is not None)
    slots, newest = persist.read_region(region, proj, PAGE)  # the Python reader agrees with the C boot
    assert newest == 1 and slots[1].seq == 2
    if base[1] is None:  # a RAM home's record is the state file; a flash home's leaves the home out
        assert slots[1].payload == states[4]
    else:
        assert len(slots[1].payload) < len(states[4]) - sum(proj.graph.convs[i].weight.size
                                                            for i in set(proj.spec.pool.layers))
    assert state.read(tmp / "restored.bin", proj).step == 4
    put(region, base)
    r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")  # boots from step 4 and trains on to the end
    assert "persist restored seq 2 step 4" in r.stdout and "persist saved seq 3 step 6 " in r.stdout
    assert "persist saved seq 4 step 8 " in r.stdout
    same_steps(steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS - 4), full[4:])


def cut_offsets(record: int, total: int) -> list[int]:
    """Power-loss points (bytes programmed into the region and the home) over one epoch boundary's writes: the
    record (header-page erase, payload pages, header page: every 7th byte, every header byte) and what follows
    it (the journaled write-back of a flash home: every 11th byte); every page boundary and its neighbours."""
    commit = record - PAGE
    cuts = {0, 1, total, total + 1, *range(0, record, 7), *range(record, total, 11)}
    for p in range(total // PAGE + 1):
        cuts |= {p * PAGE - 1, p * PAGE, p * PAGE + 1, p * PAGE + 97}
    cuts |= set(range(commit, commit + persist.HEADER_BYTES + 2))
    return sorted(c for c in cuts if 0 <= c <= total + 1)


def pages_programmed(text: str) -> int:
    line = next(ln for ln in text.splitlines() if ln.startswith("flash pages-programmed "))
    _, _, _, region, _, home = line.split()
    return int(region) + int(home)


def test_power_loss_at_any_point_of_an_epoch_boundary_keeps_the_previous_state(project, reference):
    tmp, proj, exe, _, _ = project
    full, states, base = reference
    flash = base[1] is not None
    (tmp / "b.region").write_bytes(base[0])
    slots, newest = persist.read_region(tmp / "b.region", proj, PAGE)
    payload_pages = -(-len(slots[newest].payload) // PAGE)
    record = (1 + payload_pages + 1) * PAGE
    commit = record - PAGE + persist.HEADER_BYTES  # the new record is whole once its header is
    region, outcomes, in_home = tmp / "cut.region", {}, 0
    put(region, base)
    uncut = trace(tmp, exe, 7, "t.bin", f"persist={region}").stdout  # from step 4: the record at 6, its write-back
    total = pages_programmed(uncut) * PAGE
    final_home = home_of(region).read_bytes() if flash else None
    assert total > record if flash else total == record
    for n in cut_offsets(record, total):
        put(region, base)
        r = trace(tmp, exe, 7, "t.bin", f"persist={region}", f"fail_after={n}", ok=(0, 3))
        assert (r.returncode == 3) == (n < total), f"cut at {n}: exit {r.returncode}"
        want = 6 if n >= commit else 4
        if flash and r.returncode == 3:  # untouched home pages intact: only the page being cut is neither
            home, cut = home_of(region).read_bytes(), r.stdout.splitlines()[-1].split()
            at = int(cut[6]) if cut[3] == "home" else None  # "persist power-loss at home page offset P byte B"
            in_home += at is not None
            for p in range(0, len(home), PAGE):  # written in order: before the cut page new, after it old
                old, new = base[1][p:p + PAGE], final_home[p:p + PAGE]
                if p != at:
                    assert home[p:p + PAGE] in ((old, new) if at is None else (new,) if p < at else (old,)), \
                        f"cut at {n} (home page {at}): home page {p} is neither as before nor as after the write-back"
        if not flash or n in (PAGE + 97, commit - 1, commit):
            text, got = restore(tmp, exe, region)  # a boot: exactly the previous state or the new one
            assert got == states[want] or flash, (f"power loss after {n} bytes of a {total}-byte write: restored "
                                                  f"{'nothing' if got is None else f'{len(got)} bytes'} != the state "
                                                  f"at step {want}\n{text}")
            assert f"persist restored seq {want // PER_EPOCH} step {want}" in text, f"cut at {n}:\n{text}"
        outcomes[n] = want
        if flash or n in (PAGE + 97, commit - 1, commit):  # train on from what came back: as with no interruption
            r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")
            assert f"persist restored seq {want // PER_EPOCH} step {want}" in r.stdout, f"cut at {n}:\n{r.stdout}"
            got_steps = steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS - want)
            try:
                same_steps(got_steps, full[want:])
            except AssertionError as e:
                raise AssertionError(f"power loss after {n} of {total} bytes: {e}") from None
    assert payload_pages >= 3 and set(outcomes.values()) == {4, 6} and len(outcomes) > 4 * payload_pages
    assert not flash or in_home > 2 * (PAGE // 11)  # cuts inside home pages being programmed


def test_torn_or_damaged_records_fall_back(project, reference):
    tmp, proj, exe, _, _ = project
    full, states, base = reference
    size = (len(base[0]) - persist.journal_bytes(proj, PAGE)) // 2
    region = tmp / "bad.region"
    damaged = bytearray(base[0])
    damaged[size + PAGE + 10] ^= 0x01  # one payload bit of the newest record (slot 1)
    put(region, (bytes(damaged), base[1]))
    text, got = restore(tmp, exe, region)
    assert "persist slot 1 torn" in text
    if base[1] is None:
        assert "persist restored seq 1 step 2" in text and got == states[2]
        r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")
        assert "persist restored seq 1 step 2" in r.stdout
        same_steps(steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS - 2), full[2:])
    else:  # the home has moved on past the older record (the write-back at step 4): refused, not mixed
        assert "persist refused seq 1: the weight home is not the one" in text and got is None
    damaged[10] ^= 0x01  # and the older record's header: nothing valid left
    put(region, (bytes(damaged), base[1]))
    text, got = restore(tmp, exe, region)
    assert "persist slot 0 torn" in text and "persist none" in text and got is None
    put(region, (bytes(damaged), None))
    r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")
    assert "persist none" in r.stdout
    same_steps(steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS), full)
    region.write_bytes(base[0][:-1])
    r = sim(exe, "persist-restore", str(region), str(tmp / "x.state"), ok=(2,))
    assert r.stderr.count("\n") == 1 and "bad.region" in r.stderr and "bytes" in r.stderr


def test_record_on_a_newly_flashed_home_is_refused(project, reference):
    """A new image resets the flash home to the compiled weights but keeps the region: the record of step 4
    (trained on a home the write-back at step 4 changed) is refused and training starts afresh, bit-exactly like
    a run from scratch; the record of step 2 (its home is still the compiled one) is taken."""
    tmp, proj, exe, _, _ = project
    full, _, base = reference
    region = tmp / "new-image.region"
    if base[1] is None:  # a RAM home's record carries the weights: a new image does not matter, it is taken
        put(region, (base[0], None))
        r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")
        assert "persist restored seq 2 step 4" in r.stdout, r.stdout
        same_steps(steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS - 4), full[4:])
        return
    put(region, (base[0], None))
    r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")
    assert "persist refused seq 2: the weight home is not the one it was trained on" in r.stdout
    same_steps(steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS), full)
    # the new run's first record, cut before its write-back journals anything: the old run's journal entry
    # does not make the boot refuse it
    put(region, (base[0], None))
    record = pages_programmed(trace(tmp, exe, 2, "t.bin", f"persist={region}").stdout) * PAGE
    put(region, (base[0], None))
    r = trace(tmp, exe, STEPS, "t.bin", f"persist={region}", f"fail_after={record}", ok=(3,))
    assert "persist saved seq 3 step 2 " in r.stdout and "power-loss at region" in r.stdout
    r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")
    assert "persist restored seq 3 step 2" in r.stdout, r.stdout
    same_steps(steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS - 2), full[2:])
    put(region, (trace_region(tmp, exe, 3), None))  # a record of step 2 and the write-back after it
    r = trace(tmp, exe, STEPS, "cont.bin", f"persist={region}")
    assert "persist restored seq 1 step 2" in r.stdout
    same_steps(steps_of(proj, (tmp / "cont.bin").read_bytes(), STEPS - 2), full[2:])


def trace_region(tmp: Path, exe: Path, n: int) -> bytes:
    """The region of a run of `n` steps from scratch (records at its epoch boundaries)."""
    region = tmp / "scratch.region"
    region.unlink(missing_ok=True)
    home_of(region).unlink(missing_ok=True)
    trace(tmp, exe, n, "t.bin", f"persist={region}")
    return region.read_bytes()


def test_record_of_another_model_is_not_restored(project, reference, tmp_path):
    tmp, proj, exe, _, _ = project
    _, _, base = reference
    raw = bytearray(base[0])
    size = (len(raw) - persist.journal_bytes(proj, PAGE)) // 2
    for k in (0, 1):  # rewrite both headers with another model id, CRCs made consistent
        h = k * size
        raw[h + 12:h + 16] = (int.from_bytes(raw[h + 12:h + 16], "little") ^ 1).to_bytes(4, "little")
        raw[h + 24:h + 28] = zlib.crc32(bytes(raw[h:h + 24])).to_bytes(4, "little")
    region = tmp_path / "other.region"
    put(region, (bytes(raw), base[1]))
    text, got = restore(tmp, exe, region)
    assert "persist slot 0 other" in text and "persist slot 1 other" in text and got is None
    assert persist.read_region(region, proj, PAGE)[1] == -1
    shutil.copy(region, tmp_path / "copy.region")


@pytest.mark.arm
@pytest.mark.qemu
@pytest.mark.parametrize("home,board,at", [("ram", "qemu-m7", 4), ("flash", "qemu-m4", 4)])
def test_qemu_restores_the_region_the_host_wrote(tmp_path, home, board, at):
    """QEMU's generic loader preloads the region the host build wrote; the firmware restores its record at
    boot (same sequence number and state CRC as the host reads), trains on bit-identically with the host build
    from the same record, and writes the same records (state CRCs) at the later epoch boundaries."""
    require_tool("arm-none-eabi-gcc")
    require_tool("qemu-system-arm")
    out = compile_tiny(tmp_path, "--weight-home", home, "--flash-page", "256")
    rc, text, err = run_cli(["qemu", str(out), "--board", board, "--samples", "6", "--restore-at", str(at)])
    lines = text.splitlines()
    assert rc == 0, f"{lines[-1:]}\n{err}"
    region = out / f"firmware-{board}" / "persist.bin"
    slots, newest = persist.read_region(region, pipeline.load_project(out))
    rec = slots[newest]
    assert rec.seq == at // PER_EPOCH
    assert f"persist restored seq {rec.seq} step {at}" in lines
    assert f"persist slot {newest} valid seq {rec.seq} state-crc {rec.state_crc:08x}" in lines
    assert sum(ln.startswith("persist saved") for ln in lines) == (6 - at) // PER_EPOCH
    assert lines[-2].startswith(f"qemu: restored on the target: record seq {rec.seq} (state CRC {rec.state_crc:08x}")
    assert lines[-1].startswith(f"qemu: OK {board}") and f"{6 - at} training steps" in lines[-1]
    assert next(ln for ln in lines if ln.startswith("step ")).startswith(f"step {at} ")
    # a flash home: the image's home replaced by the one the host's write-back at step 2 left (the record's)
    assert (home == "flash") == ("firmware-restored.elf" in lines[-2])
    rc, _, err = run_cli(["qemu", str(out), "--board", board, "--samples", "6", "--restore-at", "3"])
    assert rc == 2 and "--restore-at 3" in err


def test_train_killed_mid_record_resumes_to_the_same_end_state(project, tmp_path):
    """host_sim train (what `trady sim` runs) loses power in its second record; run again with the same
    arguments it goes on from the first record and ends with the same epochs and state as the run never cut."""
    tmp, _, exe, _, _ = project
    data = [str(tmp / "x.bin"), str(tmp / "y.bin"), str(STEPS)] * 2
    args = ["train", *data, "3", str(SEED), repr(LR), "1"]
    full = sim(exe, *args, f"save={tmp_path / 'full.state'}").stdout
    region = tmp_path / "train.region"
    cut = sim(exe, *args, f"persist={region}", f"fail_after={9 * PAGE + 300}", ok=(3,)).stdout
    assert "persist saved seq 1 step 8 " in cut and "persist power-loss" in cut
    again = sim(exe, *args, f"persist={region}", f"save={tmp_path / 'resumed.state'}").stdout
    assert "persist restored seq 1 step 8" in again
    def epochs(text: str) -> list[str]:  # without the pages programmed since boot (a resumed run skips some)
        return [re.sub(r', "flash_pages": \d+', "", ln) for ln in text.splitlines() if ln.startswith("epoch ")]

    assert epochs(again) == epochs(full)[1:]
    assert (tmp_path / "resumed.state").read_bytes() == (tmp_path / "full.state").read_bytes()
    assert "persist saved seq 3 step 24 " in again  # epoch 3 boundary and the end


def test_sim_persist_goes_on_from_the_region(project, tmp_path):
    tmp, _, _, _, _ = project
    out = tmp / "tiny"
    region = tmp_path / "sim.region"
    common = ["sim", str(out), "--train", "8", "--test", "8", "--persist", str(region)]
    rc, out_, err = run_cli([*common, "--epochs", "2"])
    assert rc == 0, err
    text = out_ + err
    assert "persist none" in text and "persist saved seq 2 step 16" in text
    rc, out_, err = run_cli([*common, "--epochs", "3"])
    assert rc == 0, err
    text = out_ + err
    assert "persist restored seq 2 step 16" in text and "epoch 3:" in text and "epoch 2:" not in text
    rc, _, err = run_cli([*common, "--epochs", "3"])
    assert rc == 2 and "nothing left to train" in err
