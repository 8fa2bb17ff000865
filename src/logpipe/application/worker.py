"""A batch worker: ring -> batch -> sink, with its own stop signal.

A worker asks the ring for up to ``batch_size`` records, waiting at most
``batch_timeout`` (whichever comes first: the spec's flush rule), and writes
each batch to the sink in one call. It has its own StopSignal (the spec's
StopChan), so the pool can stop one worker while the others go on: the signal
wakes it out of its wait at once, it flushes what it holds, and leaves. When
the ring is closed it drains it, flushing as it goes, and leaves on Closed.

A sink that fails is retried with exponential backoff and jitter, holding the
batch: nothing is dropped, and while the worker waits the ring fills and
backpressure slows the producer. A failure the sink declares permanent
(``SinkError(retryable=False)``: the reader of a pipe went away) cannot be
retried: the worker reports it through ``on_fatal`` (the pipeline then shuts
down) and the batch is counted as not delivered, so the final report shows
the loss and the command exits non-zero instead of hanging (and as
undelivered, so the loss ledger knows where those records went).

When the sink says ``takes_held_batches`` (the file sink on a regular
file), the worker asks for held batches: their bytes stay in the ring and
the sink writes them from there, one copy fewer; the worker releases each
as soon as it is written, and copies one out before a retry's pause (see
``RingBuffer.get_batch``).

Every batch written is observed in the flush-duration and enqueue-to-flush
histograms, and every write's outcome in ``metrics.sink_health`` (what
``/health`` reports). ``holding`` and ``collecting`` tell the loss ledger
what a worker holds: see logpipe.application.metrics.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from time import monotonic

from logpipe._ringbuf import Batch, RingBuffer, StopSignal
from logpipe._waits import join_thread
from logpipe.application.checkpoint import FlushTracker
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.domain.ports import Sink
from logpipe.exceptions import Closed, SinkError

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
        on_fatal: called with a reason when the sink fails permanently.
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
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self._tracker = tracker
        self._on_fatal = on_fatal
        self._ring = ring
        self._sink = sink
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout
        self._io_latency = io_latency
        self._metrics = metrics
        self._console = console
        self.stop_signal = StopSignal(ring)
        # This thread's own parts of the shared figures: written with no lock
        # (one writer each), added up by whoever reads the metrics.
        self._processed = metrics.processed.shard()
        self._batches_flushed = metrics.batches_flushed.shard()
        self._flush_duration = metrics.flush_duration.shard()
        self._enqueue_to_flush = metrics.enqueue_to_flush.shard()
        self._health = metrics.sink_health
        self.processed = 0
        self.holding = 0  # records taken from the ring and not yet written
        self.collecting = 0  # the most records a get_batch in progress may have taken
        self._thread = threading.Thread(target=self._run, name=f"logpipe-worker-{worker_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask this worker alone to flush what it holds and leave."""
        self.stop_signal.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread (in slices, for the main thread's signals); True if it has ended."""
        return join_thread(self._thread, timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            for shard in (self._processed, self._batches_flushed, self._flush_duration, self._enqueue_to_flush):
                shard.retire()

    def _loop(self) -> None:
        # The hot path of every worker: each line here runs once per batch
        # (~20 us of work at the spec's defaults, where every Python call
        # costs ~0.1 us of it), so the common case makes no call it can do
        # without, touches this worker's own shards and builds no string
        # it does not print.
        ring, sink, stop = self._ring, self._sink, self.stop_signal
        batch_size, batch_timeout = self._batch_size, self._batch_timeout
        while True:
            # Held batches (written from the ring's memory, one copy fewer)
            # only for a sink that writes promptly, and not with a simulated
            # latency: a held batch keeps its slots from the producers until
            # it is written, which must not shrink the ring for long. (Asked
            # again for every batch: a file sink reopened on a pipe stops.)
            hold = not self._io_latency and getattr(sink, "takes_held_batches", False)
            # While get_batch collects, the records it has taken from the ring
            # are in no term the ledger can read: say how many there may be.
            self.collecting = batch_size
            try:
                batch = ring.get_batch(batch_size, batch_timeout, stop=stop, hold=hold)
            except Closed:
                self.collecting = 0
                return  # closed and drained: every record has been flushed
            except BaseException:
                self.collecting = 0
                raise
            self.holding = len(batch)  # before collecting drops, so the ledger always sees it
            self.collecting = 0
            if self.holding:
                self._flush(batch)
            if hold:
                # Give a held batch's slots back now, not when the next
                # get_batch replaces it: that call may wait. If the sink
                # still keeps a view of it (the rest of a write that failed
                # part-way, owed to the file), that view owns the memory
                # until the sink lets it go.
                try:
                    batch.release()
                except BufferError:
                    pass
            if stop.is_set():
                return

    def _flush(self, batch: Batch) -> None:
        started = monotonic()
        if self._io_latency:
            time.sleep(self._io_latency)
        try:
            self._sink.write_batch(batch)
        except Exception as exc:  # noqa: BLE001 - every failure is judged (and most retried) there
            if not self._write_again(batch, exc):
                # Undeliverable: left out of processed, so the report shows it
                # lost, and counted as undelivered, so the ledger knows where it went.
                self._metrics.undelivered.add(len(batch))
                self.holding = 0
                return
        else:
            self._health.succeeded()
        written = monotonic()
        # The whole flush (simulated latency and retries included), and how
        # long the batch's oldest record waited from entering the ring.
        self._flush_duration.observe(written - started)
        self._enqueue_to_flush.observe(max(written - batch.oldest_enqueue, 0.0))
        if self._tracker is not None:
            self._tracker.flushed(batch.positions)
        count = len(batch)
        self.processed += count
        self._processed.add(count)
        self.holding = 0
        self._batches_flushed.add()
        # Shutdown and scale-down flushes always print; the others in verbose mode.
        if self._ring.closed or self.stop_signal.is_set() or self._console.verbose:
            self._console.progress(f"Worker {self.worker_id} flushed batch of {count} logs")

    def _write_again(self, batch: Batch, failure: Exception) -> bool:
        """After ``failure`` writing ``batch``: retry until it is written (True) or the sink fails for good."""
        pause = RETRY_FIRST
        while True:
            if isinstance(failure, SinkError) and not failure.retryable:
                self._metrics.sink_errors.add()
                self._health.failed(monotonic(), str(failure))
                self._console.say(
                    f"Worker {self.worker_id}: sink failed for good ({failure}); {len(batch)} logs not delivered"
                )
                if self._on_fatal is not None:
                    self._on_fatal(f"sink failed ({failure})")
                return False
            self._retry_later(failure, batch, pause)
            pause = min(pause * 2, RETRY_MAX)
            try:
                self._sink.write_batch(batch)
            except Exception as exc:  # noqa: BLE001 - any sink failure is judged again
                failure = exc
                continue
            self._health.succeeded()
            return True

    def _retry_later(self, exc: Exception, batch: Batch, pause: float) -> None:
        # A held batch would keep its slots through the pause: copy it out
        # (MemoryError: it stays held, which is only slower to give back).
        try:
            batch.detach()
        except (MemoryError, BufferError):
            pass
        self._metrics.sink_errors.add()
        self._health.failed(monotonic(), str(exc))
        self._console.say(
            f"Worker {self.worker_id}: sink write failed ({exc}); "
            f"retrying {len(batch)} logs in {pause:.2f}s"
        )
        # Jitter keeps many workers from retrying in lockstep.
        import random  # only when a write failed: ~1 ms of every start-up

        time.sleep(pause * (0.5 + random.random() / 2))
