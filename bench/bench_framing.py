"""Line framing throughput: logpipe's LineFramer against a pure-Python pipeline, side by side.

    .venv/bin/python bench/bench_framing.py [--lines 2000000] [--repeat 3] [--file PATH] [--mix] [--cases framer]

It writes a JSON log file of ``--lines`` lines (~85 bytes each; reused if the
file already exists with the right size), then reads it in 64 KiB chunks and
moves every line to a consumer thread, four ways, each with and without JSON
validation. ``--mix`` writes bench/ring_cost.py's production-like mix
(``mix_lines``: 2,000 seeded lines of 282 bytes on average, 0.8% of them
invalid) over and over instead; validating pipelines then pass the valid
lines only. ``--cases framer`` times the LineFramer rows alone (to compare
two builds, run it with each one's interpreter in turn):

- ``LineFramer``: ``framer.feed(chunk)`` splits, validates (nogil) and pushes
  into a RingBuffer; the consumer takes ``ring.get_batch(4096)``.
- ``python, per line``: the naive pipeline: ``bytes.split(b"\\n")`` with the
  partial line carried over, ``orjson.loads`` per line when validating, one
  ``queue.Queue.put`` per line; the consumer does one ``get`` per line.
- ``python, per chunk``: the same, but one ``put`` per chunk (a list of
  lines): the strongest simple pure-Python variant.

Times run from the first read to the consumer having taken the last line;
the best of ``--repeat`` runs is reported with lines/s, MB/s and the ratio
to the per-line Python pipeline of the same mode. Every run checks that the
consumer saw exactly ``--lines`` records. The machine is shared: read the
ratios, measured in the same run, more than the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import orjson

from logpipe import Closed, RingBuffer
from logpipe._framing import LineFramer

CHUNK = 64 * 1024
LEVELS = [b"INFO", b"WARN", b"DEBUG", b"ERROR"]


def mix_lines() -> list[bytes]:
    """bench/ring_cost.py's production-like mix (one definition for both benches)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ring_cost import MIX

    namespace: dict = {}
    exec(MIX, namespace)
    return namespace["mix_lines"]()


def make_mix_file(path: Path, lines: int) -> tuple[int, int]:
    """Write ``lines`` lines of the mix, round and round; return the file size and how many lines are invalid."""
    from logpipe._framing import validate_json

    mix = mix_lines()
    bad = [validate_json(line) is not None for line in mix]
    full, rest = divmod(lines, len(mix))
    size = full * sum(len(line) + 1 for line in mix) + sum(len(line) + 1 for line in mix[:rest])
    if not path.exists() or path.stat().st_size != size:  # else: the same lines, from an earlier run
        with open(path, "wb") as f:
            for start in range(0, lines, len(mix)):
                f.write(b"".join(line + b"\n" for line in mix[: lines - start]))
    return size, sum(bad) * full + sum(bad[:rest])


def make_file(path: Path, lines: int) -> int:
    """Write ``lines`` JSON log lines of about 85 bytes; return the file size."""
    with open(path, "wb") as f:
        block = []
        for i in range(lines):
            level = LEVELS[i & 3]
            block.append(
                b'{"ts":%d,"level":"%s","msg":"user %06d logged in ok","seq":%d}\n'
                % (1712345678123456 + i * 37, level, i % 999_983, i)
            )
            if len(block) == 10_000:
                f.write(b"".join(block))
                block.clear()
        f.write(b"".join(block))
    return path.stat().st_size


def read_chunks(path: Path):
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            yield view[:n]


def run_framer(path: Path, validate: bool, mix: bool = False) -> int:
    ring = RingBuffer(65536)
    framer = LineFramer(ring, max_line=ring.max_record_size, validate_json=validate)
    taken = [0]

    def consume() -> None:
        count = 0
        while True:
            try:
                count += len(ring.get_batch(4096))
            except Closed:
                break
        taken[0] = count

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        for chunk in read_chunks(path):
            framer.feed(chunk)
        framer.finish()
    finally:
        ring.close()
        consumer.join()
    assert mix or (framer.invalid == 0 and framer.take_rejected() == [])
    return taken[0]


def python_lines(path: Path, validate: bool, put: Callable[[list[bytes]], None]) -> None:
    """Split the file into lines the obvious way; hand each chunk's good lines to ``put``."""
    partial = b""
    loads = orjson.loads
    for chunk in read_chunks(path):
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        good = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            if validate:
                try:
                    loads(line)
                except orjson.JSONDecodeError:
                    continue
            good.append(line)
        put(good)
    if partial:
        put([partial])


def run_python_per_line(path: Path, validate: bool) -> int:
    q: queue.Queue[bytes | None] = queue.Queue(65536)
    taken = [0]

    def consume() -> None:
        count = 0
        get = q.get
        while get() is not None:
            count += 1
        taken[0] = count

    consumer = threading.Thread(target=consume)
    consumer.start()

    def put(lines: list[bytes]) -> None:
        for line in lines:
            q.put(line)

    try:
        python_lines(path, validate, put)
    finally:
        q.put(None)
        consumer.join()
    return taken[0]


def run_python_per_chunk(path: Path, validate: bool) -> int:
    q: queue.Queue[list[bytes] | None] = queue.Queue(64)
    taken = [0]

    def consume() -> None:
        count = 0
        while (lines := q.get()) is not None:
            count += len(lines)
        taken[0] = count

    consumer = threading.Thread(target=consume)
    consumer.start()
    try:
        python_lines(path, validate, q.put)
    finally:
        q.put(None)
        consumer.join()
    return taken[0]


CASES = [
    ("LineFramer -> RingBuffer", run_framer),
    ("python, per line (queue.Queue)", run_python_per_line),
    ("python, per chunk (queue.Queue)", run_python_per_chunk),
]


def best_time(fn: Callable[[Path, bool], int], path: Path, validate: bool, lines: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        taken = fn(path, validate)  # lines: the records expected
        elapsed = time.perf_counter() - start
        if taken != lines:
            raise SystemExit(f"{fn.__name__}: consumer saw {taken} records, expected {lines}")
        best = min(best, elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines in the test file (default 2,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported (default 3)")
    parser.add_argument("--file", type=Path, default=None,
                        help="where to keep the test file (default: a temp dir; removed afterwards)")
    parser.add_argument("--mix", action="store_true", help="production-like lines (ring_cost.py's mix) instead")
    parser.add_argument("--cases", choices=["all", "framer"], default="all",
                        help="framer: the LineFramer rows only (default: all)")
    args = parser.parse_args()
    cases = CASES if args.cases == "all" else CASES[:1]

    tmp = None
    if args.file is None:
        tmp = tempfile.TemporaryDirectory(prefix="logpipe-bench-")
        path = Path(tmp.name) / "lines.ndjson"
    else:
        path = args.file
    try:
        invalid = 0
        if args.mix:
            size, invalid = make_mix_file(path, args.lines)
        elif not path.exists() or sum(1 for _ in open(path, "rb")) != args.lines:
            size = make_file(path, args.lines)
        else:
            size = path.stat().st_size
        print(f"{args.lines:,} lines{' (the mix, %d invalid)' % invalid if args.mix else ''}, {size / 1e6:.1f} MB, "
              f"{size / args.lines:.1f} bytes/line; 64 KiB reads; best of {args.repeat}; cpus: {os.cpu_count()}\n")
        header = f"| {'mode':<4} | {'pipeline':<31} | {'lines/s':>11} | {'MB/s':>7} | {'seconds':>7} | {'vs per line':>11} |"
        print(header)
        print("|" + "|".join("-" * (len(col) + 0) for col in header.split("|")[1:-1]) + "|")
        for validate in (False, True):
            mode = "json" if validate else "raw"
            expected = args.lines - invalid if validate else args.lines
            times = {name: best_time(partial(fn, mix=args.mix) if fn is run_framer else fn, path, validate, expected,
                                     args.repeat)
                     for name, fn in cases}
            base = times[cases[1][0]] if len(cases) > 1 else None
            for name, _ in cases:
                t = times[name]
                ratio = f"{base / t:>10.1f}x" if base else f"{'-':>11}"
                print(f"| {mode:<4} | {name:<31} | {args.lines / t:>11,.0f} | {size / t / 1e6:>7.1f} | "
                      f"{t:>7.3f} | {ratio} |")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
