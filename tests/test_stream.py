"""UART streaming (docs/STREAM.md): the frame parser on the host, and `trady stream` against the firmware in QEMU.

The parser tests compile runtime_c/boards/tt_stream.c with the host gcc (host_tools/tt_stream_host.c prints
its events) and feed it valid, truncated, bit-flipped and oversized frames. The end-to-end tests build the
`--app stream` firmware for the tiny model, run it in QEMU with UART0 on a TCP socket, stream CIFAR-10
samples with injected faults and compare the trained results with the host build.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from tt_support import (
    ROOT,
    assert_one_line_error,
    compile_tiny,
    data_path,
    require_tool,
    run_cli,
)

from compiler import firmware, pipeline, stream

IMAGE = bytes((7 * i + 3) % 160 for i in range(40))  # no 0xA5 byte: noise never looks like a sync pair
LABEL = 3


def sample(seq: int, label: int = LABEL, image: bytes = IMAGE) -> bytes:
    return stream.encode(stream.SAMPLE, seq, struct.pack("<H", label) + image)


@pytest.fixture(scope="module")
def parser(tmp_path_factory) -> Path:
    require_tool("gcc")
    exe = tmp_path_factory.mktemp("stream") / "tt_stream_host"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
                    f"-I{ROOT / 'runtime_c'}", f"-I{ROOT / 'runtime_c' / 'boards'}",
                    str(ROOT / "host_tools" / "tt_stream_host.c"), str(ROOT / "runtime_c" / "boards" / "tt_stream.c"),
                    str(ROOT / "runtime_c" / "tt_state.c"), "-o", str(exe)], check=True)
    return exe


def feed(exe: Path, data: bytes, capacity: int = len(IMAGE) + 2) -> tuple[list[list[str]], list[int]]:
    """The parser's event lines (split) and its final counters."""
    r = subprocess.run([str(exe), str(capacity), str(len(IMAGE)), "10"], input=data, capture_output=True, check=True)
    lines = [ln.split() for ln in r.stdout.decode().splitlines()]
    assert lines[-1][0] == "counts"
    return lines[:-1], [int(v) for v in lines[-1][1:]]


def test_valid_frames_are_parsed_and_checked(parser):
    frames = [stream.encode(stream.HELLO, 0), stream.encode(stream.CONFIG, 1, struct.pack("<IfiI", 7, 0.01, 1, 8)),
              sample(2), stream.encode(stream.EPOCH_END, 3), stream.encode(stream.DONE, 65535), stream.encode(stream.BYE, 0)]
    events, counts = feed(parser, b"".join(frames))
    assert events == [["frame", str(f[2]), str(struct.unpack_from("<H", f, 3)[0]), str(len(f) - stream.OVERHEAD),
                       f"{zlib.crc32(f[stream.HEADER:-4]):08x}", "0"] for f in frames]
    assert counts == [6, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    # the Python reader (the host's side) agrees
    got = stream.Reader().feed(b"".join(frames))
    assert [(f.kind, f.seq) for f in got] == [(1, 0), (2, 1), (0x10, 2), (0x11, 3), (0x12, 65535), (0x13, 0)]


def test_good_crc_frames_with_bad_content_are_flagged(parser):
    """Label out of range, payload size wrong for the type, unknown type: the CRC is fine, the check is not."""
    data = (sample(1, label=10) + sample(2, image=IMAGE[:-1]) + stream.encode(0x7E, 3)
            + stream.encode(stream.HELLO, 4, b"x") + stream.encode(stream.CONFIG, 5, b"\0" * 15)
            + stream.encode(stream.ACK, 6))
    configs = [(0.01, -1, 8), (0.01, 0, 0), (float("nan"), 0, 8), (float("inf"), 0, 8), (-0.01, 0, 8), (0.0, 0, 8),
               (1e-30, 0, 1)]
    data += b"".join(stream.encode(stream.CONFIG, 7 + i, struct.pack("<Ifii", 1, *c)) for i, c in enumerate(configs))
    events, _ = feed(parser, data)
    why = {name: str(i) for i, name in enumerate(stream.REASONS)}
    assert [e[-1] for e in events] == ([why["label"], why["size"], why["type"], why["size"], why["size"], why["type"]]
                                       + [why["value"]] * 6 + [why["ok"]])


def test_every_single_bit_flip_is_rejected_and_the_parser_resyncs(parser):
    """Each byte of a SAMPLE frame flipped in turn, each followed by a good HELLO: no SAMPLE is accepted,
    every HELLO is, and every flip is counted as a length or CRC rejection or as skipped bytes."""
    good = sample(9)
    data = b""
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 1 << (i % 8)
        data += bytes(bad) + stream.encode(stream.HELLO, 1000 + i)
    events, counts = feed(parser, data)
    frames = [e for e in events if e[0] == "frame"]
    assert [(int(e[1]), int(e[2])) for e in frames] == [(stream.HELLO, 1000 + i) for i in range(len(good))]
    rejects = [e for e in events if e[0] == "reject"]
    assert {int(e[1]) for e in rejects} <= {2, 3}
    assert counts[2] + counts[3] == len(rejects) and counts[0] == len(good)
    assert len(rejects) >= len(good) - 2 and counts[1] > 0, "flipped sync bytes turn the frame into skipped noise"


def test_truncated_and_oversized_frames(parser):
    good = sample(5)
    # a length above the capacity is rejected as soon as the header is in: nothing more is awaited
    events, counts = feed(parser, good[:stream.HEADER], capacity=len(IMAGE) + 1)
    assert events == [["reject", "2", "16", "5"]] and counts[2] == 1
    # a frame cut short: the next frame's bytes complete its payload, the CRC fails, the stream recovers
    events, counts = feed(parser, good[:20] + good + stream.encode(stream.HELLO, 6))
    assert events[0][:2] == ["reject", "3"] and events[-1][:3] == ["frame", "1", "6"]
    assert not any(e[0] == "frame" and e[1] == "16" for e in events)
    # noise between frames is skipped byte by byte; a doubled sync byte costs one
    events, counts = feed(parser, bytes([0, 0xFF, 0x5A, 0x13]) + b"\xa5" + good)
    assert events == [["frame", "16", "5", str(len(IMAGE) + 2), f"{zlib.crc32(good[stream.HEADER:-4]):08x}", "0"]]
    assert counts[1] == 5


class FakeFirmware:
    """A port whose far end answers HELLO and SAMPLE like the firmware, but drops the first answer."""

    def __init__(self):
        self.reader, self.out, self.dropped = stream.Reader(), b"", False

    def write(self, data: bytes) -> None:
        for f in self.reader.feed(data):
            ans = (stream.encode(stream.INFO, f.seq, struct.pack("<BBHII", 1, 0, 10, 40, 42)) if f.kind == stream.HELLO
                   else stream.encode(stream.ACK, f.seq, struct.pack("<fI", 1.5, 2)))
            if not self.dropped:
                self.dropped = True
                continue
            self.out += ans

    def flush(self) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        return len(self.out)

    def read(self, n: int) -> bytes:
        data, self.out = self.out[:n], self.out[n:]
        return data


def test_a_lost_answer_is_retransmitted_after_the_timeout():
    s = stream.Exchange(FakeFirmware(), timeout=0.2, retries=2)
    assert s.request(stream.HELLO, b"", stream.INFO).payload[2] == 10
    assert (s.tally.timeouts, s.tally.retransmits) == (1, 1)
    a = s.request(stream.SAMPLE, struct.pack("<H", 1) + bytes(40), stream.ACK)
    assert a.seq == 1 and (s.tally.timeouts, s.tally.retransmits) == (1, 1)
    dead = stream.Exchange(FakeFirmware(), timeout=0.05, retries=0)
    with pytest.raises(stream.TradyError, match="no answer to frame 0 .* after 1 tries"):
        dead.request(stream.HELLO, b"", stream.INFO)


@pytest.fixture(scope="module")
def tiny10(tmp_path_factory) -> Path:
    require_tool("arm-none-eabi-gcc")
    return compile_tiny(tmp_path_factory.mktemp("stream"))


def test_bad_input_is_one_line(tiny10, tmp_path):
    rc, _, err = run_cli(["firmware", str(tiny10), "--app", "stream", "--output", "semihosting"])
    assert rc == 0, err  # the stream firmware always talks over the UART (--output does not apply to it)
    rc, _, err = run_cli(["stream", str(tmp_path / "missing"), "--port", "tcp:127.0.0.1:9"])
    assert_one_line_error(rc, err, "missing", "project folder")
    data_path()
    rc, _, err = run_cli(["stream", str(tiny10), "--port", str(tmp_path / "ttyNONE")])
    assert_one_line_error(rc, err, "--port", "ttyNONE", "no such device")
    rc, _, err = run_cli(["stream", str(tiny10), "--port", "tcp:nohostport"])
    assert_one_line_error(rc, err, "--port", "tcp:HOST:PORT")
    rc, _, err = run_cli(["stream", str(tiny10), "--port", "tcp:127.0.0.1:9", "--data", str(tmp_path / "none.npz")])
    assert_one_line_error(rc, err, "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    rc, _, err = run_cli(["stream", str(tiny10), "--port", "tcp:127.0.0.1:9", "--data", str(bad)])
    assert_one_line_error(rc, err, "bad.npz")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _qemu(board: str, elf: Path, serial: str) -> subprocess.Popen:
    brd = firmware.BOARDS[board]
    return subprocess.Popen(["qemu-system-arm", "-M", brd.qemu_machine, "-nographic", "-monitor", "none",
                             "-serial", serial, "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(q: subprocess.Popen) -> int:
    try:
        return q.wait(timeout=20)
    except subprocess.TimeoutExpired:
        q.kill()
        q.wait()
        raise


@pytest.mark.qemu
def test_stream_in_qemu_with_faults_equals_the_host_build(tiny10):
    """2 epochs of 4 samples on mps2-an500 with a fault before every 2nd sample: all NAKed or repeated as
    injected, counted by the firmware, never trained on: the loss bits and weight CRCs equal the host build."""
    require_tool("qemu-system-arm")
    data_path()
    rc, out, err = run_cli(["firmware", str(tiny10), "--app", "stream"])
    assert rc == 0, err
    elf = tiny10 / "firmware-qemu-m7-stream" / "firmware.elf"
    port = _free_port()
    q = _qemu("qemu-m7", elf, f"tcp:127.0.0.1:{port},server=on,wait=on")
    try:
        rc, out, err = run_cli(["stream", str(tiny10), "--port", f"tcp:127.0.0.1:{port}", "--samples", "4",
                                "--epochs", "2", "--corrupt-every", "2", "--check", "--timeout", "20"])
    finally:
        code = _finish(q)
    lines = out.splitlines()
    assert rc == 0, out + err
    assert code == 0, f"the firmware exit status after DONE and BYE: {code}"
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/2", "epoch 2/2", "stream"]
    last = lines[-1]
    assert last.startswith("stream: OK 8 samples over 2 epochs") and "retransmits 0, timeouts 0" in last
    assert "4 injected faults all rejected or repeated as sent (NAKed: length 1, crc 1, size 1, label 1;" in last
    assert "host build: identical loss bits of 8 steps and weight, head and selection CRCs of 2 epochs" in last
    assert lines[0].split()[-1] != lines[1].split()[-1], "each epoch draws its own selection"


@pytest.mark.qemu
def test_stream_in_qemu_m4_counts_every_fault_kind_and_checks_can_fail(tiny10):
    """mps2-an386, UART0 on a pty: one fault before every sample (all nine kinds); then the comparisons are
    shown to catch a changed loss, weight CRC or counter."""
    require_tool("qemu-system-arm")
    project = pipeline.load_project(tiny10)
    images, labels = firmware.load_samples(project, data_path(), 5)
    fw = firmware.build(tiny10, project, firmware.BOARDS["qemu-m4"], images, labels, firmware.Schedule(), app="stream")
    q = _qemu("qemu-m4", fw.elf, "pty")
    try:
        said = q.stdout.readline()  # "char device redirected to /dev/pts/N (label serial0)"
        pty = next((w for w in said.split() if w.startswith("/dev/")), None)
        assert pty is not None, f"QEMU did not name its pty: {said!r}"
        link = stream.open_port(pty, 10)
        try:
            run = stream.stream(link, images, labels, 10, 2, 3, 0.02, 1, 20.0, 3, corrupt_every=1, progress=False)
        finally:
            link.close()
    finally:
        code = _finish(q)
    assert code == 0
    m = run.metrics[-1]
    assert run.tally.faults == 10 and m.duplicates == 1 and m.total == 10
    # good-CRC frames: HELLO, CONFIG, 10 samples, 2 EPOCH_END and the label, size, type, repeat and value faults;
    # CRC failures: two flipped bits and the cut frame
    assert m.counts == {"ok": 2 + 10 + 2 + 5, "sync": len(stream.NOISE) + stream.CUT_TAIL, "length": 1, "crc": 3,
                        "type": 1, "size": 1, "label": 1, "state": 0, "failed": 0, "value": 1}
    assert stream.fault_check(run) is None
    assert stream.host_check(tiny10, project, run, 3, 0.02, 1) is None
    assert [float(x.loss_sum) for x in run.metrics] == [float(np.float32(sum(run.losses[:5], np.float32(0)))),
                                                       float(np.float32(sum(run.losses[5:], np.float32(0))))]
    losses = list(run.losses)
    losses[5] = np.float32(losses[5] * np.float32(1.0000001) + np.float32(1e-6))
    assert stream.host_check(tiny10, project, dataclasses.replace(run, losses=losses), 3, 0.02, 1).startswith("step 5:")
    bad = dataclasses.replace(m, weights_crc=m.weights_crc ^ 1)
    diff = stream.host_check(tiny10, project, dataclasses.replace(run, metrics=[run.metrics[0], bad]), 3, 0.02, 1)
    assert diff.startswith("epoch 2: firmware weights CRC")
    run.tally.expected["crc"] += 1
    assert "'crc' rejections" in stream.fault_check(run)


def test_fuzz_seeds_reach_frames_and_rejections(parser):
    """The seed corpus of `make fuzz` holds good frames, CRC and length rejections and noise."""
    from compiler import stream_fuzz

    seen = set()
    for data in stream_fuzz.seeds().values():
        events, counts = feed(parser, data[1:], capacity=data[0] + 1)
        seen |= {e[0] if e[0] == "frame" else f"reject {e[1]}" for e in events}
        seen |= {"noise"} if counts[1] else set()
    assert seen == {"frame", "reject 2", "reject 3", "noise"}


def test_fuzz_target_runs(tmp_path):
    """A 3-second run of the libFuzzer target, where clang and its fuzzer runtime are installed."""
    require_tool("clang")
    import contextlib
    import io

    from compiler import stream_fuzz

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rc = stream_fuzz.main(["--seconds", "3", "--out", str(tmp_path / "run")])
    except SystemExit as e:  # clang without its fuzzer runtime (libclang-rt-14-dev)
        pytest.skip(str(e))
    line = out.getvalue().strip()
    assert rc == 0, line
    execs = int(line.split(" executions")[0].split()[-1])
    assert execs > 1000 and ", 0 crashes," in line
