"""Time of one put + get in one thread, RingBuffer next to queue.SimpleQueue, for one build or several.

    python bench/put_get_loop.py [--src DIR ...] [--rounds 6] [--records 1000] [--loops 200]

S2 in test_bench_queues.py moves records one by one between two threads,
which take turns under the GIL: what a record costs there starts with what
its put and its get cost in one thread. This loop puts ``--records``
distinct 70-byte records and gets them back, ``--loops`` times, in a
function's locals (no global lookups), on a RingBuffer of 1500 and on a
SimpleQueue (unbounded, it copies nothing: S2's reference); the best of
five such runs is kept per interpreter. Atomic instructions and fences cost
time but no instructions, so this is the measure for them (bench/ring_cost.py
counts instructions).

Each ``--src`` (default: the installed package) is a ``src/`` directory whose
``logpipe`` is imported (``PYTHONPATH``), so two builds compare in one
command; every round runs each of them once, in turn, in a fresh
interpreter, and the medians of the rounds are printed: on a shared VM
whose speed drifts, only builds measured in turn compare.

    git worktree add /tmp/lp-base BASE && (cd /tmp/lp-base && python setup.py build_ext --inplace)
    python bench/put_get_loop.py --src /tmp/lp-base/src --src src
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import queue, sys, time
sys.path.insert(0, {bench!r})
from baselines import make_records
from logpipe import RingBuffer

records = make_records({records})


def per_pair(q, loops):
    put, get, items = q.put, q.get, records
    started = time.perf_counter()
    for _ in range(loops):
        for item in items:
            put(item)
        for _ in items:
            get()
    return (time.perf_counter() - started) / (loops * len(items)) * 1e9


ring = min(per_pair(RingBuffer(1500), {loops}) for _ in range(5))
simple = min(per_pair(queue.SimpleQueue(), {loops}) for _ in range(5))
print(ring, simple)
"""


def run_once(src: str | None, records: int, loops: int) -> tuple[float, float]:
    bench = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.path.abspath(src)
    code = CHILD.format(bench=bench, records=records, loops=loops)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    ring, simple = out.stdout.split()
    return float(ring), float(simple)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", help="a src/ directory to import logpipe from (repeatable)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--loops", type=int, default=200)
    args = parser.parse_args()
    sources = args.src or [None]
    times: dict[str | None, list[tuple[float, float]]] = {src: [] for src in sources}
    for _ in range(args.rounds):
        for src in sources:
            times[src].append(run_once(src, args.records, args.loops))
    print(f"put + get in one thread, ns a pair (medians of {args.rounds} rounds, each the best of 5 runs)")
    print(f"   {'logpipe from':40} {'RingBuffer':>11} {'SimpleQueue':>12} {'ratio':>6}")
    for src in sources:
        ring = statistics.median(t[0] for t in times[src])
        simple = statistics.median(t[1] for t in times[src])
        print(f"   {src or '(installed)':40} {ring:11.1f} {simple:12.1f} {simple / ring:5.2f}x")


if __name__ == "__main__":
    main()
