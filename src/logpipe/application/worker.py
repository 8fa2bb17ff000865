"""A batch worker: ring -> batch -> sink, with its own stop signal.

A worker asks the ring for up to ``batch_size`` records, waiting at most
``batch_timeout`` (whichever comes first: the spec's flush rule), and writes
each batch to the sink in one call. It has its own StopSignal (the spec's
StopChan), so the pool can stop one worker while the others go on: the signal
wakes it out of its wait at once, it flushes what it holds, and leaves. When
the ring is closed it drains it, flushing as it goes, and leaves on Closed.

A sink that fails is retried with exponential backoff and jitter, holding the
batch: nothing is dropped, and while the worker waits the ring fills and
backpressure slows the producer.
"""

from __future__ import annotations

import random
import threading
import time

from logpipe._ringbuf import Batch, RingBuffer, StopSignal
from logpipe.application.checkpoint import FlushTracker
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.domain.ports import Sink
from logpipe.exceptions import Closed

__all__ = ["Worker"]

RETRY_FIRST = 0.05  # seconds before the first retry of a failed write
RETRY_MAX = 2.0  # longest pause between retries


class Worker:
    """One batch worker thread.

    Args:
        worker_id: shown in its messages (``Worker 3 flushed batch of 7 logs``).
        ring: where records come from.
        sink: where batches go.
        batch_size, batch_timeout: the flush rule.
        io_latency: extra seconds per flush, to make backpressure observable.
        metrics, console: shared with the rest of the pipeline.
        tracker: told the ring positions of every batch written (for checkpoints).
    """

    def __init__(
        self,
        worker_id: int,
        ring: RingBuffer,
        sink: Sink,
        *,
        batch_size: int,
        batch_timeout: float,
        io_latency: float = 0.0,
        metrics: Metrics,
        console: Console,
        tracker: FlushTracker | None = None,
    ) -> None:
        self.worker_id = worker_id
        self._tracker = tracker
        self._ring = ring
        self._sink = sink
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout
        self._io_latency = io_latency
        self._metrics = metrics
        self._console = console
        self.stop_signal = StopSignal(ring)
        self.processed = 0
        self.holding = 0  # records taken from the ring and not yet written
        self._thread = threading.Thread(target=self._run, name=f"logpipe-worker-{worker_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask this worker alone to flush what it holds and leave."""
        self.stop_signal.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True if it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                batch = self._ring.get_batch(
                    self._batch_size, self._batch_timeout, stop=self.stop_signal
                )
            except Closed:
                return  # closed and drained: every record has been flushed
            if batch:
                self.holding = len(batch)
                self._flush(batch)
            if self.stop_signal.is_set():
                return

    def _flush(self, batch: Batch) -> None:
        if self._io_latency:
            time.sleep(self._io_latency)
        self._write_with_retry(batch)
        if self._tracker is not None:
            self._tracker.flushed(batch.positions)
        count = len(batch)
        self.processed += count
        self.holding = 0
        self._metrics.processed.add(count)
        self._metrics.batches_flushed.add()
        line = f"Worker {self.worker_id} flushed batch of {count} logs"
        if self._ring.closed or self.stop_signal.is_set():
            self._console.say(line)  # a shutdown (or scale-down) flush
        else:
            self._console.detail(line)

    def _write_with_retry(self, batch: Batch) -> None:
        pause = RETRY_FIRST
        while True:
            try:
                self._sink.write_batch(batch)
                return
            except Exception as exc:  # noqa: BLE001 - any sink failure is retried
                self._metrics.sink_errors.add()
                self._console.say(
                    f"Worker {self.worker_id}: sink write failed ({exc}); "
                    f"retrying {len(batch)} logs in {pause:.2f}s"
                )
                # Full jitter keeps many workers from retrying in lockstep.
                time.sleep(pause * (0.5 + random.random() / 2))
                pause = min(pause * 2, RETRY_MAX)
