"""Stage 9d, streaming: `trady stream DIR --port PORT --data DATA` trains the `--app stream` firmware over a UART.

The protocol is docs/STREAM.md (C side: runtime_c/boards/tt_stream.c, the firmware tt_fw_stream.c). The host
sends HELLO (the firmware answers INFO: its classes and input size, checked against the project), CONFIG (seed,
learning rate, schedule), then per epoch every sample as a SAMPLE frame (order shuffled per epoch from the seed)
and EPOCH_END, answered by the epoch's METRICS; DONE ends the run, and BYE, once DONE's ACK is in, lets the
firmware exit. Every frame waits for its answer: a NAK or a
timeout sends it again (up to --retries times). `--corrupt-every K` injects, before every K-th sample, one
faulty transmission in turn (a flipped payload byte, an impossible length, a label out of range, a short
payload, an unknown type, line noise, a repeat of the last frame, a CONFIG with a NaN learning rate, a frame
cut short and followed by zeros) and checks that the firmware NAKs, counts and
skips each one exactly as injected. `--check` runs the host build (`host_sim trace`) on the samples the firmware
accepted and compares every step's loss bits and, per epoch, the CRC32 of the trained weights, head and selection.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compiler.errors import TradyError

VERSION = 1
SYNC = b"\xa5\x5a"
HEADER = 9
OVERHEAD = HEADER + 4
HELLO, CONFIG, SAMPLE, EPOCH_END, DONE, BYE = 0x01, 0x02, 0x10, 0x11, 0x12, 0x13
INFO, ACK, NAK, METRICS = 0x81, 0x86, 0x95, 0xA0
# tt_stream_reason order; counts[0] is the firmware's number of good-CRC frames
REASONS = ("ok", "sync", "length", "crc", "type", "size", "label", "state", "failed", "value")
FAULTS = ("crc", "length", "label", "size", "type", "noise", "repeat", "value", "cut")
CUT_TAIL = 3  # zero bytes past the end of a cut frame's padding: skipped as noise
NOISE = bytes([0x00, 0xFF, 0x13, 0x5A, 0x42, 0x00, 0x7E])  # no 0xA5: every byte is one skipped byte
METRICS_WORDS = 6 + len(REASONS) + 5


def encode(kind: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame: sync, type, seq, length, payload, CRC32 of type..payload (tt_stream_encode)."""
    body = struct.pack("<BHI", kind, seq & 0xFFFF, len(payload)) + payload
    return SYNC + body + struct.pack("<I", zlib.crc32(body))


@dataclass(frozen=True)
class Frame:
    kind: int
    seq: int
    payload: bytes


class Reader:
    """The host's parser for the firmware's answers: same rules as tt_stream_feed (bad frames are dropped)."""

    def __init__(self, capacity: int = 1 << 16):
        self.buf = bytearray()
        self.capacity = capacity
        self.dropped = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        out = []
        while True:
            at = self.buf.find(SYNC)
            if at < 0:
                keep = 1 if self.buf[-1:] == SYNC[:1] else 0
                self.dropped += len(self.buf) - keep
                del self.buf[:len(self.buf) - keep]
                return out
            self.dropped += at
            del self.buf[:at]
            if len(self.buf) < HEADER:
                return out
            kind, seq, length = struct.unpack_from("<BHI", self.buf, 2)
            if length > self.capacity:
                del self.buf[:1]
                continue
            if len(self.buf) < HEADER + length + 4:
                return out
            body = bytes(self.buf[2:HEADER + length])
            (crc,) = struct.unpack_from("<I", self.buf, HEADER + length)
            if crc != zlib.crc32(body):
                del self.buf[:1]
                continue
            out.append(Frame(kind, seq, body[HEADER - 2:]))
            del self.buf[:HEADER + length + 4]


@dataclass(frozen=True)
class Metrics:
    epoch: int
    trained: int
    correct: int
    loss_sum: np.float32
    total: int
    duplicates: int
    counts: dict[str, int]
    weights_crc: int
    head_crc: int
    selection_crc: int
    selection: int
    stack: int

    @staticmethod
    def parse(payload: bytes) -> Metrics:
        if len(payload) != 4 * METRICS_WORDS:
            raise TradyError(f"METRICS frame of {len(payload)} bytes, expected {4 * METRICS_WORDS}")
        w = struct.unpack(f"<{METRICS_WORDS}I", payload)
        n = len(REASONS)
        return Metrics(w[0], w[1], w[2], np.uint32(w[3]).view(np.float32), w[4], w[5],
                       dict(zip(REASONS, w[6:6 + n], strict=True)), *w[6 + n:])


def open_port(spec: str, wait: float):
    """A serial device or pty path, `tcp:HOST:PORT`, or a pyserial URL (socket://, rfc2217://, loop://)."""
    import serial

    if spec.startswith("tcp:"):
        host, _, port = spec[4:].rpartition(":")
        if not host or not port.isdigit():
            raise TradyError(f"--port {spec}: expected tcp:HOST:PORT")
        url = f"socket://{host}:{port}"
    elif "://" in spec:
        url = spec
    else:
        if not Path(spec).exists():
            raise TradyError(f"--port {spec}: no such device (a serial device, a pty, tcp:HOST:PORT or a URL)")
        url = spec
    deadline = time.monotonic() + wait
    while True:
        try:
            port = serial.serial_for_url(url, baudrate=115200, timeout=0.05)
            port.reset_input_buffer()
            return port
        except (serial.SerialException, ValueError, OSError) as e:
            if time.monotonic() >= deadline or not url.startswith("socket://"):
                raise TradyError(f"--port {spec}: cannot open: {str(e).splitlines()[0] if str(e) else e}") from None
            time.sleep(0.1)


@dataclass
class Tally:
    retransmits: int = 0
    timeouts: int = 0
    naks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    expected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))  # injected faults
    duplicates: int = 0  # repeats injected
    faults: int = 0


class Exchange:
    """Stop-and-wait exchange of frames over an open port."""

    def __init__(self, port, timeout: float, retries: int):
        self.port, self.timeout, self.retries = port, timeout, retries
        self.reader = Reader()
        self.pending: list[Frame] = []
        self.seq = 0
        self.tally = Tally()
        self.last: tuple[bytes, Frame] | None = None  # the last frame sent and its answer

    def _send(self, data: bytes, good_crc: bool) -> None:
        self.port.write(data)
        self.port.flush()
        if good_crc:
            self.tally.expected["ok"] += 1

    def _answer(self, deadline: float) -> Frame | None:
        while True:
            if self.pending:
                return self.pending.pop(0)
            if time.monotonic() >= deadline:
                return None
            try:  # pyserial drops what a larger read got when the peer closes during it: read what is there
                data = self.port.read(max(1, self.port.in_waiting))
            except OSError as e:  # serial.SerialException is an OSError
                raise TradyError(f"the link closed while waiting for an answer ({e})") from None
            if data:
                self.pending += self.reader.feed(data)

    def request(self, kind: int, payload: bytes, expect: int) -> Frame:
        seq, self.seq = self.seq, (self.seq + 1) & 0xFFFF
        data = encode(kind, seq, payload)
        for attempt in range(self.retries + 1):
            if attempt:
                self.tally.retransmits += 1
            self._send(data, True)
            deadline = time.monotonic() + self.timeout
            while (a := self._answer(deadline)) is not None:
                if a.kind == NAK:
                    reason = REASONS[a.payload[0]] if a.payload and a.payload[0] < len(REASONS) else "?"
                    self.tally.naks[reason] = self.tally.naks.get(reason, 0) + 1
                    if reason not in ("length", "crc", "?"):  # resending the same frame cannot help
                        raise TradyError(f"the firmware refused frame {seq} (type {kind:#04x}): {reason}")
                    break
                if a.kind == expect and a.seq == seq:
                    self.last = (data, a)
                    return a
                # an answer to an earlier frame (late after a timeout): ignore it
            else:
                self.tally.timeouts += 1
        raise TradyError(f"no answer to frame {seq} (type {kind:#04x}) after {self.retries + 1} tries "
                         f"of {self.timeout:g} s")

    def close(self, wait: float) -> None:
        """Send BYE (no answer: the firmware exits) and give a socket or pty up to `wait` s to close."""
        self.port.write(encode(BYE, self.seq))
        self.port.flush()
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                self.port.read(max(1, self.port.in_waiting))
        except OSError:  # closed: the emulator exited
            pass

    def inject(self, fault: str, image: bytes, label: int, classes: int, capacity: int) -> None:
        """Send one faulty transmission and check the firmware's answer (none for noise)."""
        t = self.tally
        t.faults += 1
        seq = self.seq  # the clean frame that follows reuses it: a rejected frame leaves no trace
        if fault == "noise":
            self._send(NOISE, False)
            t.expected["sync"] += len(NOISE)
            return
        if fault == "repeat":
            if self.last is None:
                raise TradyError("--corrupt-every: no frame to repeat yet")
            data, answer = self.last
            self._send(data, True)
            t.duplicates += 1
            got = self._answer(time.monotonic() + self.timeout)
            if got != answer:
                raise TradyError(f"the firmware answered a repeated frame with {got}, expected its first answer again")
            return
        good = encode(SAMPLE, seq, struct.pack("<H", label) + image)
        if fault == "crc":
            data, reason = bytearray(good), "crc"
            data[HEADER + 2 + len(image) // 2] ^= 0x40
            self._send(bytes(data), False)
        elif fault == "length":
            data, reason = good[:5] + struct.pack("<I", capacity + 1), "length"
            self._send(data, False)
        elif fault == "label":
            reason = "label"
            self._send(encode(SAMPLE, seq, struct.pack("<H", classes) + image), True)
        elif fault == "size":
            reason = "size"
            self._send(encode(SAMPLE, seq, struct.pack("<H", label) + image[:-1]), True)
        elif fault == "cut":  # the frame stops half-way; zeros (an idle line) fill its payload and CRC, then 3 more
            reason = "crc"
            n = len(good) - OVERHEAD
            self._send(good[:HEADER + n // 2] + bytes(n - n // 2 + 4 + CUT_TAIL), False)
            t.expected["sync"] += CUT_TAIL
        elif fault == "value":
            reason = "value"
            self._send(encode(CONFIG, seq, struct.pack("<IfiI", 1, float("nan"), 1, 8)), True)
        else:  # "type"
            reason = "type"
            self._send(encode(0x7E, seq), True)
        t.expected[reason] += 1
        got = self._answer(time.monotonic() + self.timeout)
        if got is None or got.kind != NAK or not got.payload or got.payload[0] != REASONS.index(reason):
            raise TradyError(f"injected a {fault} fault: expected NAK({reason}), the firmware answered {got}")
        t.naks[reason] += 1


@dataclass(frozen=True)
class Run:
    info: dict[str, int]
    losses: list[np.float32]  # per accepted sample, as ACKed
    predicted: list[int]
    metrics: list[Metrics]
    images: np.ndarray  # the accepted samples in training order
    labels: np.ndarray
    tally: Tally
    seconds: float


def order(n: int, epochs: int, seed: int) -> list[np.ndarray]:
    """The sample order of each epoch: a permutation drawn from the seed."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(epochs)]


def stream(port, images: np.ndarray, labels: np.ndarray, classes: int, epochs: int, seed: int, lr: float,
           warmup: int, timeout: float, retries: int, corrupt_every: int = 0, progress: bool = True,
           on_epoch=None) -> Run:
    from tqdm import tqdm

    t0 = time.monotonic()
    s = Exchange(port, timeout, retries)
    info = s.request(HELLO, b"", INFO).payload
    if len(info) != 12:
        raise TradyError(f"INFO frame of {len(info)} bytes, expected 12 (protocol version {VERSION})")
    version, _, fw_classes, input_size, capacity = struct.unpack("<BBHII", info)
    meta = dict(version=version, classes=fw_classes, input_size=input_size, capacity=capacity)
    if version != VERSION:
        raise TradyError(f"the firmware speaks protocol version {version}, this host {VERSION}")
    if fw_classes != classes or input_size != images[0].size:
        raise TradyError(f"the firmware's model has {fw_classes} classes and {input_size}-byte inputs, the project "
                         f"{classes} and {images[0].size} (flash the firmware built from this project)")
    total = epochs * len(images)
    s.request(CONFIG, struct.pack("<IfiI", seed & 0xFFFFFFFF, lr, warmup, total), ACK)
    losses, predicted, metrics, seq_images, seq_labels = [], [], [], [], []
    count = 0
    with tqdm(total=total, desc="stream", unit="sample", disable=None if progress else True, file=sys.stderr) as bar:
        for e, perm in enumerate(order(len(images), epochs, seed)):
            for i in perm:
                img, lab = images[i].astype(np.int8).tobytes(), int(labels[i])
                count += 1
                if corrupt_every and count % corrupt_every == 0:
                    s.inject(FAULTS[(count // corrupt_every - 1) % len(FAULTS)], img, lab, classes, capacity)
                a = s.request(SAMPLE, struct.pack("<H", lab) + img, ACK)
                loss_bits, pred = struct.unpack("<II", a.payload)
                losses.append(np.uint32(loss_bits).view(np.float32))
                predicted.append(pred)
                seq_images.append(images[i])
                seq_labels.append(lab)
                bar.update(1)
            m = Metrics.parse(s.request(EPOCH_END, b"", METRICS).payload)
            metrics.append(m)
            if on_epoch is not None:
                on_epoch(e, epochs, m, s.tally)
    s.request(DONE, b"", ACK)
    s.close(min(timeout, 2.0))
    return Run(meta, losses, predicted, metrics, np.stack(seq_images), np.array(seq_labels, np.int32), s.tally,
               time.monotonic() - t0)


def _counts(d: dict[str, int], skip: tuple[str, ...] = ("ok",)) -> str:
    parts = [f"{k} {v}" for k, v in d.items() if v and k not in skip]
    return ", ".join(parts) if parts else "none"


def epoch_line(e: int, epochs: int, m: Metrics, t: Tally) -> str:
    mean = float(m.loss_sum) / m.trained if m.trained else float("nan")
    acc = m.correct / m.trained if m.trained else 0.0
    return (f"epoch {e + 1}/{epochs}: {m.trained} samples, mean loss {mean:.4f}, train accuracy {acc:.1%}; "
            f"firmware rejected: {_counts(m.counts)}; duplicates {m.duplicates}; host: retransmits {t.retransmits}, "
            f"timeouts {t.timeouts}; weights {m.weights_crc:08x} head {m.head_crc:08x} "
            f"selection {m.selection} {m.selection_crc:08x}")


def fault_check(run: Run) -> str | None:
    """None if the firmware's counters equal what was injected (clean link); else the first difference."""
    m, t = run.metrics[-1], run.tally
    for k in REASONS[1:]:
        if m.counts[k] != t.expected[k]:
            return f"firmware counted {m.counts[k]} '{k}' rejections, {t.expected[k]} were injected"
    # good-CRC frames: the firmware's count stops at the last EPOCH_END; the DONE frame came after it
    if m.counts["ok"] != t.expected["ok"] - 1:
        return f"firmware counted {m.counts['ok']} good frames, the host sent {t.expected['ok'] - 1}"
    if m.duplicates != t.duplicates:
        return f"firmware counted {m.duplicates} repeated frames, {t.duplicates} were sent"
    return None


def host_check(folder: Path, project, run: Run, seed: int, lr: float, warmup: int) -> str | None:
    """Train the host build on the accepted samples; None if the firmware's figures equal it, else the first
    difference (step loss bits, per-epoch weight, head and selection CRCs)."""
    from compiler import host

    g = project.graph
    per_epoch, steps = run.metrics[0].trained, len(run.labels)
    exe = host.build(folder)
    raw = host.run_trace(exe, run.images, run.labels, per_epoch, seed, lr, warmup, steps)
    sizes = {i: g.convs[i].weight.size for i in sorted(set(project.spec.pool.layers))}
    recs = host.parse_trace(raw, steps, sizes, g.head.classes, g.head.features)
    for k, (rec, loss) in enumerate(zip(recs, run.losses, strict=True)):
        if rec.loss.view(np.uint32) != loss.view(np.uint32):
            return (f"step {k}: firmware loss {float(loss)!r} ({int(loss.view(np.uint32)):08x}) != host "
                    f"{float(rec.loss)!r} ({int(rec.loss.view(np.uint32)):08x})")
    at = 0
    for e, m in enumerate(run.metrics):
        at += m.trained
        rec = recs[at - 1]
        wcrc = 0
        for w in rec.weights.values():
            wcrc = zlib.crc32(np.ascontiguousarray(w).tobytes(), wcrc)
        head = zlib.crc32(np.concatenate([rec.head_weight.ravel(), rec.head_bias]).tobytes())
        sel = zlib.crc32(np.ascontiguousarray(rec.selection).tobytes())
        for what, fw, want in (("weights CRC", m.weights_crc, wcrc), ("head CRC", m.head_crc, head),
                               ("selection size", m.selection, len(rec.selection)), ("selection CRC", m.selection_crc, sel)):
            if fw != want:
                return f"epoch {e + 1}: firmware {what} {fw:08x} != host {want:08x}"
    return None


def cmd_stream(a: argparse.Namespace) -> int:
    from compiler import firmware, pipeline
    from compiler.commands import _data

    if not np.isfinite(a.lr) or a.lr <= 0:
        raise TradyError(f"--lr {a.lr}: expected a positive number")
    for name, value, low in (("--timeout", a.timeout, 1e-3), ("--retries", a.retries, 0), ("--wait", a.wait, 0),
                             ("--warmup", a.warmup, 0), ("--corrupt-every", a.corrupt_every, 0)):
        if not value >= low:
            raise TradyError(f"{name} {value}: expected >= {low:g}")
    folder = Path(a.dir)
    if not folder.is_dir():
        raise TradyError(f"{folder}: no such project folder (trady compile --out)")
    project = pipeline.load_project(folder, a.model)
    images, labels = firmware.load_samples(project, _data(a), a.samples)
    port = open_port(a.port, a.wait)
    try:
        run = stream(port, images, labels, project.graph.head.classes, a.epochs, a.seed, a.lr, a.warmup, a.timeout,
                     a.retries, a.corrupt_every, on_epoch=lambda e, n, m, t: print(epoch_line(e, n, m, t), flush=True))
    finally:
        port.close()
    last = run.metrics[-1]
    t = run.tally
    status = 0
    notes = []
    if a.corrupt_every:
        diff = fault_check(run)
        if diff is None:
            notes.append(f"{t.faults} injected faults all rejected or repeated as sent "
                         f"(NAKed: {_counts(t.naks)}; skipped noise bytes {last.counts['sync']}; "
                         f"repeats answered without retraining {last.duplicates})")
        else:
            notes.append(f"fault counters differ: {diff}")
            status = 1
    if a.check:
        diff = host_check(folder, project, run, a.seed, a.lr, a.warmup)
        if diff is None:
            notes.append(f"host build: identical loss bits of {len(run.losses)} steps and weight, head and selection "
                         f"CRCs of {len(run.metrics)} epochs")
        else:
            notes.append(f"host build differs: {diff}")
            status = 1
    acc = sum(int(p == y) for p, y in zip(run.predicted, run.labels, strict=True)) / max(1, len(run.labels))
    mean = float(np.mean(np.array(run.losses[-len(images):], np.float64)))
    print(f"stream: {'OK' if status == 0 else 'FAIL'} {len(run.losses)} samples over {len(run.metrics)} epochs on "
          f"{a.port} (protocol v{run.info['version']}, {run.info['classes']} classes, {run.info['input_size']}-byte "
          f"inputs): last epoch mean loss {mean:.4f}, train accuracy {acc:.1%} overall; retransmits {t.retransmits}, "
          f"timeouts {t.timeouts}; {'; '.join(notes) + '; ' if notes else ''}firmware stack used {last.stack} bytes; "
          f"{run.seconds:.1f} s")
    return status


def register(sub: argparse._SubParsersAction) -> None:
    from compiler.cli import positive_int

    p = sub.add_parser("stream", help="train the --app stream firmware over a UART: framed samples, ACKs, metrics")
    p.add_argument("dir", type=Path, help="compiled project folder the firmware was built from")
    p.add_argument("--port", required=True,
                   help="serial device or pty path, tcp:HOST:PORT, or a pyserial URL (socket://HOST:PORT)")
    p.add_argument("--data", type=Path, default=None, help="data set (default: shared CIFAR-10 subset)")
    p.add_argument("--model", type=Path, default=None, help="model file, if it moved since the compile")
    p.add_argument("--samples", type=positive_int, default=8, help="training samples per epoch (default 8)")
    p.add_argument("--epochs", type=positive_int, default=1, help="epochs (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps of the learning-rate schedule (default 1)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")
    p.add_argument("--retries", type=int, default=3, help="retransmissions of a frame before giving up (default 3)")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to keep trying to connect a tcp port (default 10)")
    p.add_argument("--corrupt-every", type=int, default=0, metavar="K",
                   help="test the link: before every K-th sample inject one fault in turn (" + ", ".join(FAULTS)
                        + ") and check the firmware rejects and counts it (default 0: none)")
    p.add_argument("--check", action="store_true",
                   help="compare with the host build trained on the accepted samples (loss bits, weight CRCs)")
    p.set_defaults(func=cmd_stream)
