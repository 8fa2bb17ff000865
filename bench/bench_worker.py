"""A worker's Python cost per batch, next to the bare minimum, in one run.

    python bench/bench_worker.py [--batches 20000] [--batch-size 50]

One thread, no waiting: a ring is filled and closed, then drained batch by
batch until Closed, two ways, with the same records and a NullSink:

- bare: ``sink.write_batch(ring.get_batch(n, timeout))`` in a loop, the least
  any worker can do per batch;
- Worker: the pipeline's ``Worker._run`` loop, the code every worker thread
  runs (its stop signal, the ledger's holding/collecting marks, metrics
  counters, the flush-duration and enqueue-to-flush histograms, the
  flush line that only verbose mode prints); once as for the generator,
  once with the checkpoint tracker that file and NATS sources use.

It prints the thread CPU time per batch of each and the difference: the
Python work a worker adds to every flush (issue 9's anchor: at most ~5 us).
Thread CPU time (time.thread_time) rather than wall time, so that a busy
machine moves the numbers less; still read the difference, not the totals.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from logpipe import Closed, RingBuffer
from logpipe.application.checkpoint import FlushTracker
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.worker import Worker
from logpipe.infrastructure.sinks.null import NullSink

RECORD = b'{"msg":"hello from producer","level":"INFO","ts":1712345678123456,"seq":1}'


def filled_ring(records: int) -> RingBuffer:
    ring = RingBuffer(records)
    chunk = [RECORD] * 1000
    left = records
    while left > 0:
        left -= ring.put_many(chunk[: min(left, 1000)])
    ring.close()
    return ring


def bare(batches: int, batch_size: int) -> float:
    ring, sink = filled_ring(batches * batch_size), NullSink()
    get_batch, write = ring.get_batch, sink.write_batch
    start = time.thread_time()
    try:
        while True:
            write(get_batch(batch_size, 0.5))
    except Closed:
        pass
    elapsed = time.thread_time() - start
    assert sink.records == batches * batch_size
    return elapsed / batches


def through_worker(batches: int, batch_size: int, tracker: FlushTracker | None = None) -> float:
    ring, sink = filled_ring(batches * batch_size), NullSink()
    worker = Worker(1, ring, sink, batch_size=batch_size, batch_timeout=0.5, metrics=Metrics(),
                    console=Console(io.StringIO()), tracker=tracker)
    start = time.thread_time()
    worker._run()  # in this thread: it drains the closed ring and returns
    elapsed = time.thread_time() - start
    assert sink.records == worker.processed == batches * batch_size
    return elapsed / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {"bare": [], "worker": [], "checkpointing": []}
    for _ in range(args.repeat):  # interleaved, so drift hits all alike
        rows["bare"].append(bare(args.batches, args.batch_size))
        rows["worker"].append(through_worker(args.batches, args.batch_size))
        rows["checkpointing"].append(through_worker(args.batches, args.batch_size, FlushTracker()))
    us = {name: statistics.median(times) * 1e6 for name, times in rows.items()}
    print(f"batch size {args.batch_size}, {args.batches} batches, median of {args.repeat} (thread CPU time)")
    print(f"  bare get_batch + write_batch          : {us['bare']:7.2f} us/batch")
    for name, label in (("worker", "Worker._run loop"), ("checkpointing", "Worker._run, checkpointing source")):
        print(f"  {label:<38}: {us[name]:7.2f} us/batch, adds {us[name] - us['bare']:5.2f} us "
              f"({us[name] / us['bare']:.2f}x the bare loop)")


if __name__ == "__main__":
    main()
