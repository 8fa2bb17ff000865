"""A line framer's wait for room in a full ring: a short spin before parking, against parking at once.

    python bench/room_spin.py [--lines 2000000] [--pairs 8] [--dir /dev/shm]

A file, stdin or TCP source pushes its lines through a LineFramer; when the
ring is full it waits in ``lp_wait_room``. With the spin on (the default on
more than one CPU) a framer whose last wait was short spins up to 50 us
before it parks, so a busy worker does not pay a futex wake for every batch
it frees; off, it parks after ~3 us like any putter.
``logpipe._ringbuf._set_bulk_spin`` turns it on or off, and each run here is a
fresh ``logpipe run`` process with one or the other, the two interleaved:

* ``defaults``: ``--source file:IN --once --rate 0 --sink file:OUT --format
  raw`` at the spec's channel 1500 and batch 50 (``--lines`` lines of 88
  bytes);
* ``tuned``: the same with ``--channel-size 65536 --batch-size 4096
  --max-workers 1``;
* ``slow sink``: 100,000 lines with ``--io-latency 1ms`` (the worker sleeps
  1 ms a batch, so the framer waits ~1 ms each time): what matters there is
  the CPU the process uses (user + sys), which a spin through long waits
  would inflate.

Throughput is the ``rate=`` of logpipe's own report (the run, without the
interpreter's start-up). Medians of ``--pairs`` runs of each; read the
ratios, not the absolute numbers (a shared 2-CPU VM).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

from bench_file import make_input

RUN = (
    "import sys, logpipe._ringbuf as ring; ring._set_bulk_spin({on}); "
    "from logpipe.cli import main; sys.exit(main(sys.argv[1:]))"
)


def run_once(spin: bool, source: str, out: str, extra: list[str]) -> tuple[float, float]:
    """One ``logpipe run``; its reported rate (lines/s) and its CPU seconds."""
    command = [
        sys.executable, "-c", RUN.format(on=spin), "run", "--source", f"file:{source}", "--once",
        "--rate", "0", "--sink", f"file:{out}", "--format", "raw", *extra,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.unlink(out)
    rate = re.search(r"rate=(\d+)", done.stdout)
    if rate is None:
        raise SystemExit(f"no rate= in logpipe's report:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(rate.group(1)), cpu


def compare(label: str, pairs: int, source: str, out: str, extra: list[str]) -> None:
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(pairs):
        for spin in (False, True) if i % 2 == 0 else (True, False):  # alternate which goes first
            results[spin].append(run_once(spin, source, out, extra))
    rate = {spin: statistics.median(r for r, _ in results[spin]) for spin in results}
    cpu = {spin: statistics.median(c for _, c in results[spin]) for spin in results}
    print(
        f"{label:<10} {rate[False] / 1e6:>9.2f} M {rate[True] / 1e6:>9.2f} M {rate[True] / rate[False]:>7.2f}x"
        f" {cpu[False]:>9.2f} s {cpu[True]:>9.2f} s {cpu[True] / cpu[False]:>7.2f}x"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--pairs", type=int, default=8, help="runs of each setting per case (default 8)")
    parser.add_argument("--dir", default=None, help="where the input and output go (default: the system's temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-room-spin-", dir=args.dir) as workdir:
        source = os.path.join(workdir, "in.ndjson")
        small = os.path.join(workdir, "in-small.ndjson")
        out = os.path.join(workdir, "out.ndjson")
        make_input(source, args.lines)
        make_input(small, 100_000)
        print(f"{args.lines:,} lines of 88 bytes; medians of {args.pairs} interleaved runs of each; "
              f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        print(f"{'case':<10} {'park':>11} {'spin':>11} {'ratio':>8} {'CPU park':>11} {'CPU spin':>11} {'ratio':>8}")
        compare("defaults", args.pairs, source, out, [])
        compare("tuned", args.pairs, source, out,
                ["--channel-size", "65536", "--batch-size", "4096", "--max-workers", "1"])
        compare("slow sink", args.pairs, small, out, ["--io-latency", "1ms", "--max-workers", "1"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
