"""A worker's Python cost per batch, next to the bare minimum, in one run.

    python bench/bench_worker.py [--batches 20000] [--batch-size 50] [--sinks null,file] [--dir DIR]

One thread, no waiting: a ring is filled (and left open, as in a running
pipeline), then drained batch by batch, with the same records, through two
sinks: a NullSink, and a FileSink appending to a file in ``--dir`` (held
batches, written from the ring, as the pipeline's workers do for a regular
file). For each sink:

- bare: ``get_batch`` and one write per batch in a loop, the least any
  worker can do: ``sink.write_batch(batch)`` for the null sink,
  ``batch.write_to(fd, keep_gil=True)`` and ``release()`` on a file
  descriptor for the file sink (one ``write(2)``, no Python around it);
- sink (file sink only): the bare loop calling ``sink.write_batch(batch)``
  and ``release()`` instead of the bare write: the sink's own Python;
- Worker: the pipeline's ``Worker._run`` loop, the code every worker thread
  runs (its stop signal, the ledger's holding/collecting marks, metrics
  counters, the flush-duration and enqueue-to-flush histograms, the sink's
  own bookkeeping); once as for the generator, once with the checkpoint
  tracker that file and NATS sources use.

Each loop ends when the last record is written (a wrapper around the sink
sets the stop signal; both loops pay for it), so that no flush runs on a
closed ring: flushes of a shutdown print a line each, which a running
pipeline's do not.

It prints the thread CPU time per batch of each and the difference: the
Python work a worker adds to every flush (issue 9's anchor: at most ~5 us).
Thread CPU time (time.thread_time) rather than wall time, so that a busy
machine moves the numbers less; still read the difference, not the totals.
The file rows include the kernel's write, the same in both.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from logpipe import RingBuffer, StopSignal
from logpipe.application.checkpoint import FlushTracker
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pipeline import ring_slot_size
from logpipe.application.worker import Worker
from logpipe.infrastructure.sinks.file import FileSinkConfig
from logpipe.infrastructure.sinks.null import NullSink

RECORD = b'{"msg":"hello from producer","level":"INFO","ts":1712345678123456,"seq":1}'


def filled_ring(records: int) -> RingBuffer:
    """An open ring holding ``records`` copies of RECORD, laid out as the pipeline's (its slot size)."""
    ring = RingBuffer(records, slot_size=ring_slot_size(1500))
    chunk = [RECORD] * 1000
    left = records
    while left > 0:
        left -= ring.put_many(chunk[: min(left, 1000)])
    return ring


class StopWhenWritten:
    """A sink that writes batches with ``write`` and sets ``stop`` once ``records`` are written."""

    def __init__(self, write: Callable[[Any], object], records: int, stop: StopSignal,
                 takes_held_batches: bool = False) -> None:  # fmt: skip
        self.write, self.left, self.stop = write, records, stop
        self.takes_held_batches = takes_held_batches

    def write_batch(self, batch: Any) -> None:
        self.left -= len(batch)  # before the write, which may release the batch
        self.write(batch)
        if self.left <= 0:
            self.stop.set()


class Sinks:
    """Builds the sink of a row: ``null``, or ``file`` (a new file in ``directory``)."""

    def __init__(self, kind: str, directory: str) -> None:
        self.kind, self.path = kind, os.path.join(directory, "bench_worker.out")

    def build(self) -> object:
        if self.kind == "null":
            return NullSink()
        if os.path.exists(self.path):
            os.unlink(self.path)
        return FileSinkConfig.from_target(self.path).build()

    def close(self, sink: object) -> None:
        sink.close()
        if self.kind == "file":
            os.unlink(self.path)


def drain(ring: RingBuffer, write: Callable[[Any], object], batches: int, batch_size: int, hold: bool) -> float:
    """Thread CPU time per batch of taking every batch from ``ring`` and handing it to ``write``."""
    stop = StopSignal(ring)
    get_batch = ring.get_batch
    write_batch = StopWhenWritten(write, batches * batch_size, stop).write_batch
    start = time.thread_time()
    while not stop.is_set():
        write_batch(get_batch(batch_size, 0.5, hold=hold))
    return (time.thread_time() - start) / batches


def bare(sinks: Sinks, batches: int, batch_size: int) -> float:
    ring, sink = filled_ring(batches * batch_size), sinks.build()
    hold = sinks.kind == "file"
    if hold:
        fd = os.open(sinks.path, os.O_WRONLY | os.O_APPEND)

        def write(batch: Any) -> None:
            batch.write_to(fd, keep_gil=True)
            batch.release()
    else:
        write = sink.write_batch
    per_batch = drain(ring, write, batches, batch_size, hold)
    if hold:
        os.close(fd)
    sinks.close(sink)
    return per_batch


def through_sink(sinks: Sinks, batches: int, batch_size: int) -> float:
    """The bare loop with ``sink.write_batch`` as its write: what the sink's own Python adds."""
    ring, sink = filled_ring(batches * batch_size), sinks.build()
    hold = getattr(sink, "takes_held_batches", False)

    def write(batch: Any) -> None:
        sink.write_batch(batch)
        if hold:
            batch.release()

    per_batch = drain(ring, write, batches, batch_size, hold)
    assert sink.records == batches * batch_size
    sinks.close(sink)
    return per_batch


def through_worker(sinks: Sinks, batches: int, batch_size: int, tracker: FlushTracker | None = None) -> float:
    ring, sink = filled_ring(batches * batch_size), sinks.build()
    worker = Worker(1, ring, sink, batch_size=batch_size, batch_timeout=0.5, metrics=Metrics(),
                    console=Console(io.StringIO()), tracker=tracker)
    worker._sink = StopWhenWritten(sink.write_batch, batches * batch_size, worker.stop_signal,
                                   getattr(sink, "takes_held_batches", False))
    start = time.thread_time()
    worker._run()  # in this thread: it returns once the last record is written
    elapsed = time.thread_time() - start
    assert sink.records == worker.processed == batches * batch_size
    sinks.close(sink)
    return elapsed / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sinks", default="null,file", help="comma-separated: null, file")
    parser.add_argument("--dir", default=None, help="where the file sink writes (default: the temp directory)")
    args = parser.parse_args()
    directory = args.dir or tempfile.gettempdir()
    print(f"batch size {args.batch_size}, {args.batches} batches, median of {args.repeat} (thread CPU time)")
    for kind in args.sinks.split(","):
        sinks = Sinks(kind, directory)
        rows: dict[str, list[float]] = {"bare": [], "sink": [], "worker": [], "checkpointing": []}
        for _ in range(args.repeat):  # interleaved, so drift hits all alike
            rows["bare"].append(bare(sinks, args.batches, args.batch_size))
            if kind != "null":  # the null sink's bare loop is its write_batch already
                rows["sink"].append(through_sink(sinks, args.batches, args.batch_size))
            rows["worker"].append(through_worker(sinks, args.batches, args.batch_size))
            rows["checkpointing"].append(through_worker(sinks, args.batches, args.batch_size, FlushTracker()))
        us = {name: statistics.median(times) * 1e6 for name, times in rows.items() if times}
        print(f"{kind} sink")
        print(f"  bare get_batch + write                : {us['bare']:7.2f} us/batch")
        labels = (("sink", "sink.write_batch alone"), ("worker", "Worker._run loop"),
                  ("checkpointing", "Worker._run, checkpointing source"))  # fmt: skip
        for name, label in (row for row in labels if row[0] in us):
            print(f"  {label:<38}: {us[name]:7.2f} us/batch, adds {us[name] - us['bare']:5.2f} us "
                  f"({us[name] / us['bare']:.2f}x the bare loop)")


if __name__ == "__main__":
    main()
