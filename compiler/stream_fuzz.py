"""`make fuzz`: libFuzzer (clang -fsanitize=fuzzer,address,undefined) on the streaming frame parser.

Builds host_tools/tt_stream_fuzz.c with runtime_c/boards/tt_stream.c, writes a seed corpus of valid,
truncated, corrupted and oversized frames (compiler/stream.py's encoder), runs the fuzzer for a bounded
time and prints the executions and the crashes found. Not part of `make test` (it needs clang and the
compiler-rt fuzzer library: apt-get install -y --no-install-recommends clang libclang-rt-14-dev).

    python -m compiler.stream_fuzz [--seconds 60] [--out build/fuzz]
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from compiler import stream

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "host_tools" / "tt_stream_fuzz.c"
SOURCES = (ROOT / "runtime_c" / "boards" / "tt_stream.c", ROOT / "runtime_c" / "tt_state.c")


def seeds() -> dict[str, bytes]:
    """Named seed inputs: capacity byte, then a byte stream."""
    img = bytes(range(40))
    sample = stream.encode(stream.SAMPLE, 3, struct.pack("<H", 2) + img)
    bad_crc = bytearray(sample)
    bad_crc[20] ^= 1
    return {
        "hello": bytes([63]) + stream.encode(stream.HELLO, 0),
        "config": bytes([63]) + stream.encode(stream.CONFIG, 1, struct.pack("<IfiI", 7, 0.01, 1, 8)),
        "sample": bytes([41]) + sample,  # capacity 42 = 40-byte image + label
        "exchange": bytes([63]) + b"".join([stream.encode(stream.HELLO, 0), sample, stream.encode(stream.EPOCH_END, 4),
                                           stream.encode(stream.DONE, 5), stream.encode(stream.BYE, 6)]),
        "bad_crc": bytes([63]) + bytes(bad_crc) + sample,
        "oversized": bytes([15]) + sample + stream.encode(stream.HELLO, 9),
        "truncated": bytes([63]) + sample[:17] + sample,
        "noise": bytes([63]) + bytes([0xA5, 0xA5, 0x00, 0x5A, 0xFF]) + stream.encode(stream.DONE, 1),
    }


def build(out: Path) -> Path:
    if shutil.which("clang") is None:
        raise SystemExit("fuzz: clang not found: apt-get install -y --no-install-recommends clang libclang-rt-14-dev")
    exe = out / "tt_stream_fuzz"
    cmd = ["clang", "-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=fuzzer,address,undefined",
           "-fno-sanitize-recover=undefined", f"-I{ROOT / 'runtime_c'}", f"-I{ROOT / 'runtime_c' / 'boards'}",
           str(HARNESS), *(str(s) for s in SOURCES), "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        first = (r.stdout + r.stderr).strip().splitlines()
        raise SystemExit(f"fuzz: harness build failed (libFuzzer needs libclang-rt-14-dev): {first[-1] if first else ''}")
    return exe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compiler.stream_fuzz")
    ap.add_argument("--seconds", type=int, default=60, help="fuzzing time (default 60)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz", help="build, corpus and crash folder")
    a = ap.parse_args(argv)
    out = a.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    (out / "corpus").mkdir(parents=True)
    seed_dir = out / "seeds"
    seed_dir.mkdir()
    for name, data in seeds().items():
        (seed_dir / name).write_bytes(data)
    exe = build(out)
    # libFuzzer's RSS limit reads getrusage's peak RSS, which a child inherits from its parent (a large Python
    # process: 2.3 GB under pytest): no RSS limit; the harness's allocations are bounded by malloc_limit instead
    r = subprocess.run([str(exe), f"-max_total_time={a.seconds}", "-print_final_stats=1", f"-artifact_prefix={out}/",
                        "-rss_limit_mb=0", "-malloc_limit_mb=64",
                        str(out / "corpus"), str(seed_dir)], capture_output=True, text=True, check=False)
    log = r.stdout + r.stderr
    (out / "fuzz.log").write_text(log)
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    execs = int(runs.group(1)) if runs else None
    crashes = sorted(p.name for p in out.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-")))
    corpus = len(list((out / "corpus").iterdir()))
    cov = re.findall(r"cov: (\d+)", log)
    print(f"fuzz: tt_stream parser (libFuzzer + ASan + UBSan), {a.seconds} s: "
          f"{execs if execs is not None else 'unknown'} executions, {len(crashes)} crashes"
          f"{' (' + ', '.join(crashes) + ')' if crashes else ''}, corpus {corpus} inputs from {len(seeds())} seeds, "
          f"coverage {cov[-1] if cov else '?'} edges; log {out / 'fuzz.log'}")
    return 1 if crashes or r.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
