"""File -> file throughput: `logpipe run --source file:IN --once` against a naive pipeline.

    python bench/bench_file.py [--lines 2000000] [--channel-size 65536] [--batch-size 4096]

One ~85-byte-per-line JSON file of --lines lines is made once; then, in the
same run, each side copies it to a new file, raw and with JSON validation:

* logpipe: the real command, ``logpipe run --source file:IN --once --rate 0
  --sink file:OUT [--format json]``, timed from start to exit (process
  start-up included), its output checked byte for byte against the input.
* naive: a reader thread (``for line in f``, ``orjson.loads`` in json mode)
  -> ``queue.Queue`` of the same capacity -> a writer thread with a buffered
  file; output checked the same way.

Reference figures for C engines on this machine class, from the issue:
rsyslog 1.25M lines/s file->file, 0.59M/s with JSON parsing.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time

import orjson


def make_input(path: str, lines: int) -> None:
    with open(path, "wb") as f:
        chunk = []
        for seq in range(lines):
            chunk.append(b'{"msg": "hello from producer", "level": "INFO", "ts": 1712345678123456, "seq": %d}\n' % seq)
            if len(chunk) == 100_000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))


def logpipe_copy(src: str, dst: str, fmt: str, channel_size: int, batch_size: int) -> float:
    command = [
        sys.executable, "-m", "logpipe", "run", "--source", f"file:{src}", "--once", "--rate", "0",
        "--sink", f"file:{dst}", "--format", fmt, "--channel-size", str(channel_size),
        "--batch-size", str(batch_size), "--max-workers", "2",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def naive_copy(src: str, dst: str, fmt: str, channel_size: int) -> float:
    q: queue.Queue[bytes | None] = queue.Queue(channel_size)

    def read() -> None:
        with open(src, "rb") as f:
            for line in f:
                if fmt == "json":
                    orjson.loads(line)
                q.put(line)
        q.put(None)

    def write() -> None:
        with open(dst, "wb") as out:
            while (line := q.get()) is not None:
                out.write(line)

    start = time.perf_counter()
    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--channel-size", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.ndjson")
        make_input(src, args.lines)
        print(f"input: {args.lines:,} lines, {os.path.getsize(src) / args.lines:.0f} bytes a line")
        print(f"{'format':<7} {'logpipe lines/s':>16} {'naive lines/s':>14} {'ratio':>7}")
        for fmt in ("raw", "json"):
            ours_out, theirs_out = os.path.join(tmp, f"a-{fmt}"), os.path.join(tmp, f"b-{fmt}")
            ours = logpipe_copy(src, ours_out, fmt, args.channel_size, args.batch_size)
            theirs = naive_copy(src, theirs_out, fmt, args.channel_size)
            for out in (ours_out, theirs_out):
                if not filecmp.cmp(src, out, shallow=False):
                    raise SystemExit(f"{out} differs from the input")
                os.unlink(out)
            print(f"{fmt:<7} {args.lines / ours:>16,.0f} {args.lines / theirs:>14,.0f} {theirs / ours:>6.1f}x")


if __name__ == "__main__":
    main()
