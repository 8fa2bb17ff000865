"""``cat IN | logpipe run --source stdin``: how the pipe's capacity changes the run.

    python bench/pipe_capacity.py [--lines 5000000] [--rounds 4] [--capacities 65536,262144,1048576]

A pipe holds 64 KiB on Linux unless someone raises it, so each ``read(2)``
of the stdin source took at most 64 KiB however large its buffer. Here
the pipe is made by this script, set to each capacity in turn
(``F_SETPIPE_SZ``), fed by ``cat IN`` and read by ``logpipe run --source
stdin --rate 0 --sink file:OUT`` (raw, one worker, channel 65536, batch
4096), in interleaved rounds; each line is the median of the run's own
``elapsed=`` (start-up excluded) over the rounds, and its ratio to the
first capacity's.

Since issue 9's eighth round the stdin source raises a pipe below 256 KiB
to 256 KiB itself, so with that logpipe every capacity below it measures
256 KiB. To see the 64 KiB row, run this script with a logpipe from
before (``git worktree add /tmp/lp-before 22d6520``, installed into a venv
of its own), as docs/benchmarks.md does.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import statistics
import subprocess
import sys
import tempfile

from bench_file import make_input  # the same ~88-byte lines as the file bench

def run(src: str, out: str, capacity: int) -> float:
    """One run through a pipe of ``capacity`` bytes; logpipe's own elapsed seconds."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, capacity)
        feeder = subprocess.Popen(["cat", src], stdout=write_end)
        os.close(write_end)
        write_end = -1
        done = subprocess.run(
            [sys.executable, "-m", "logpipe", "run", "--source", "stdin", "--rate", "0", "--sink", f"file:{out}",
             "--format", "raw", "--channel-size", "65536", "--batch-size", "4096", "--max-workers", "1"],
            stdin=read_end, capture_output=True, text=True, check=True)
        if feeder.wait() != 0:
            raise SystemExit(f"cat {src} failed")
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    if os.path.getsize(out) != os.path.getsize(src):
        raise SystemExit(f"{out}: {os.path.getsize(out)} bytes, the input has {os.path.getsize(src)}")
    os.unlink(out)
    found = re.search(r"elapsed=([0-9.]+)s", done.stdout)
    if found is None:
        raise SystemExit(f"no elapsed= in logpipe's report: {done.stdout[-500:]!r}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--capacities", default="65536,262144,1048576", help="comma-separated pipe sizes in bytes")
    parser.add_argument("--dir", default="/dev/shm", help="where the input and the output live (default: in memory)")
    args = parser.parse_args()
    capacities = [int(c) for c in args.capacities.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out = os.path.join(tmp, "in.ndjson"), os.path.join(tmp, "out.ndjson")
        make_input(src, args.lines)
        times: dict[int, list[float]] = {c: [] for c in capacities}
        for _ in range(args.rounds):
            for capacity in capacities:
                times[capacity].append(run(src, out, capacity))
    first = statistics.median(times[capacities[0]])
    print(f"cat IN | logpipe run --source stdin: {args.lines:,} lines, {args.rounds} rounds, Python {sys.version.split()[0]}")
    print(f"{'pipe capacity':>14} {'elapsed (median)':>17} {'all rounds':>28} {'vs first':>9}")
    for capacity in capacities:
        median = statistics.median(times[capacity])
        rounds = " ".join(f"{t:.2f}" for t in times[capacity])
        print(f"{capacity // 1024:>10} KiB {median:>16.2f}s {rounds:>28} {median / first:>8.2f}x")


if __name__ == "__main__":
    main()
