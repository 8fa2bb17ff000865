"""Where the time goes when one producer thread feeds one consumer thread.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/profile_threads.py [--rounds 5]

For the S2 (per item) and S4 (batches of 100) shapes of test_bench_queues.py
it prints, per queue: records/s, wall time of a round, the CPU time each thread
used (time.thread_time), and their overlap = (producer CPU + consumer CPU) /
wall. An overlap near 2.0 means both cores worked at once; near 1.0 means the
two threads took turns (the GIL, or parking on each other); below 1.0 means
time went to wake-ups and hand-offs rather than work. For a RingBuffer it
also shows how often a call parked (put_waits / get_waits per round).

For a native profile of the same shapes, run this under perf:

    perf record -g -o /tmp/perf.data .venv/bin/python bench/profile_threads.py --only ring
    perf report -i /tmp/perf.data --no-children --sort dso,symbol --stdio | head -60
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import DequeQueue, make_records, ringbuf_build  # noqa: E402

from logpipe import RingBuffer  # noqa: E402

CAPACITY = 1024
BATCH = 100


def per_item(records: list[bytes]) -> tuple[int, Callable[[Any], None], Callable[[Any], None]]:
    n = len(records)

    def produce(q: Any) -> None:
        put = q.put
        for r in records:
            put(r)

    def consume(q: Any) -> None:
        get = q.get
        for _ in range(n):
            get()

    return n, produce, consume


def batched(chunks: list[list[bytes]], take: str) -> tuple[int, Callable[[Any], None], Callable[[Any], None]]:
    n = len(chunks) * BATCH

    def produce(q: Any) -> None:
        if take == "lists":
            put = q.put
            for c in chunks:
                put(c)
        else:
            put_many = q.put_many
            for c in chunks:
                put_many(c)

    def consume(q: Any) -> None:
        got = 0
        fn = q.get if take == "lists" else getattr(q, take)
        if take == "lists":
            while got < n:
                got += len(fn())
        else:
            while got < n:
                got += len(fn(BATCH))

    return n, produce, consume


def measure(make: Callable[[], Any], shape: tuple[int, Callable[[Any], None], Callable[[Any], None]],
            rounds: int) -> dict[str, float]:
    n, produce, consume = shape
    rows = []
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        q = make()
        cpu: dict[str, float] = {}
        go = threading.Event()

        def run(name: str, fn: Callable[[Any], None]) -> None:
            go.wait()
            t = time.thread_time()
            fn(q)
            cpu[name] = time.thread_time() - t

        threads = [threading.Thread(target=run, args=("p", produce)),
                   threading.Thread(target=run, args=("c", consume))]
        for t in threads:
            t.start()
        t0 = time.perf_counter()
        go.set()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        waits = (q.put_waits + q.get_waits) if isinstance(q, RingBuffer) else float("nan")
        rows.append({"wall": wall, "p": cpu["p"], "c": cpu["c"], "waits": waits})
    rows = rows[1:]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["rate"] = n / med["wall"]
    return med


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--only", choices=["ring", "all"], default="all")
    args = p.parse_args(argv)

    records = make_records(200_000)
    chunks = [records[i : i + BATCH] for i in range(0, len(records), BATCH)] * 5
    cases = [
        ("S2", "RingBuffer put/get", lambda: RingBuffer(CAPACITY), per_item(records)),
        ("S2", "queue.Queue put/get", lambda: queue.Queue(CAPACITY), per_item(records)),
        ("S2", "queue.SimpleQueue put/get", queue.SimpleQueue, per_item(records)),
        ("S4", "RingBuffer put_many/get_batch", lambda: RingBuffer(CAPACITY), batched(chunks, "get_batch")),
        ("S4", "RingBuffer put_many/get_many", lambda: RingBuffer(CAPACITY), batched(chunks, "get_many")),
        ("S4", "RingBuffer(16384) put_many/get_batch", lambda: RingBuffer(16384), batched(chunks, "get_batch")),
        ("S4", "queue.Queue (lists of 100)", lambda: queue.Queue(CAPACITY // BATCH), batched(chunks, "lists")),
        ("S4", "deque+Condition put_many/get_many", lambda: DequeQueue(CAPACITY), batched(chunks, "get_many")),
    ]
    if args.only == "ring":
        cases = [c for c in cases if c[1].startswith("RingBuffer")]

    build = ringbuf_build()
    print(f"ring buffer build: sha256 {build['sha256']}, built {build['built']}")
    print(f"median of {args.rounds} rounds after one warm-up; CPU = time.thread_time() of each thread\n")
    print("| group | queue | records/s | wall ms | producer CPU ms | consumer CPU ms | overlap | parks/round |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for group, label, make, shape in cases:
        m = measure(make, shape, args.rounds)
        parks = "-" if m["waits"] != m["waits"] else f"{m['waits']:,.0f}"
        print(f"| {group} | {label} | {m['rate'] / 1e6:.2f} M | {m['wall'] * 1e3:.1f} | {m['p'] * 1e3:.1f} "
              f"| {m['c'] * 1e3:.1f} | {(m['p'] + m['c']) / m['wall']:.2f} | {parks} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
