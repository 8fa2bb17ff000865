"""The pipeline: Producer -> RingBuffer -> WorkerPool -> Sink, and its lifecycle.

Shutdown always runs in this order, which is what makes it lose nothing:

1. the source is cancelled and joined: nothing new enters the ring;
2. the autoscaler is stopped: the pool stops changing;
3. the ring is closed: workers drain it, flushing as they go, and leave
   when it is empty (a closed ring reports Closed only once drained);
4. every worker is joined, the sink closed, and the report printed:
   lost = produced - processed - dropped, which must be 0, and the loss
   ledger (see logpipe.application.metrics), which must balance exactly.

A run ends when its source is exhausted (``count`` reached, end of input),
when ``duration`` has elapsed, or when request_stop() is called (the CLI
calls it on SIGINT / SIGTERM).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from logpipe._ringbuf import RingBuffer
from logpipe._waits import JOIN_SLICE, join_thread
from logpipe.application.autoscaler import AutoScaler
from logpipe.application.checkpoint import FlushTracker
from logpipe.application.console import Console
from logpipe.application.metrics import Ledger, Metrics, MetricsReporter, Snapshot
from logpipe.application.pool import WorkerPool
from logpipe.application.worker import Worker
from logpipe.domain.clock import Clock, SystemClock
from logpipe.domain.config import PipelineConfig
from logpipe.domain.durations import format_duration
from logpipe.domain.ports import Sink, Source
from logpipe.domain.records import fields, frozen

__all__ = ["JOIN_SLICE", "Pipeline", "Report"]

# JOIN_SLICE (from logpipe._waits, re-exported): every wait of the main
# thread lasts at most this long, so its signal handlers run.
# How often a resumable source is told how far its input has been written.
CHECKPOINT_INTERVAL = 1.0

# The ring's slot size: the largest of these whose slots take at most
# RING_SLOTS_MAX_BYTES. Log lines are mostly 60-300 bytes, longer than the
# 111 bytes a 128-byte slot holds inline, and each longer one costs a
# malloc and a free; with packed claims a larger slot costs reserved memory
# only, not cache traffic (docs/benchmarks.md, S5). 512-byte slots hold
# lines up to 495 bytes: 0.8 MB at the default channel size of 1500.
RING_SLOT_SIZES = (512, 256, 128)
RING_SLOTS_MAX_BYTES = 64 << 20


def ring_slot_size(channel_size: int) -> int:
    """The slot size of a pipeline ring of ``channel_size`` records."""
    for slot_size in RING_SLOT_SIZES:
        if channel_size * (slot_size + 4) <= RING_SLOTS_MAX_BYTES:
            return slot_size
    return RING_SLOT_SIZES[-1]


@frozen
class Report:
    """The final account of a run."""

    produced: int
    processed: int
    dropped: int
    lost: int
    elapsed: float
    backpressure_sleeps: int
    scale_ups: int
    scale_downs: int
    sink_errors: int
    peak_workers: int
    reason: str
    invalid: int = 0
    ledger: Ledger | None = None  # read after every thread was joined: exact

    @property
    def rate(self) -> float:
        """Records processed per second over the whole run."""
        return self.processed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Nothing lost, and the ledger (when there is one) balances exactly."""
        return self.lost == 0 and (self.ledger is None or self.ledger.exact)

    def line(self) -> str:
        """One parseable line: ``Report: produced=N processed=N ... lost=0 ...``."""
        return (
            f"Report: produced={self.produced} processed={self.processed} "
            f"dropped={self.dropped} invalid={self.invalid} lost={self.lost} elapsed={self.elapsed:.2f}s "
            f"rate={self.rate:.0f} logs/s backpressure_sleeps={self.backpressure_sleeps} "
            f"scale_ups={self.scale_ups} scale_downs={self.scale_downs} "
            f"sink_errors={self.sink_errors} peak_workers={self.peak_workers}"
        )

    def as_dict(self) -> dict[str, object]:
        """Every field, ``rate`` and ``ok``; the ledger as a dict of its terms."""
        values: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        values["ledger"] = self.ledger.as_dict() if self.ledger is not None else None
        return {**values, "rate": self.rate, "ok": self.ok}


class Pipeline:
    """One run of the pipeline.

    Args:
        config: validated parameters.
        sink: where batches go (closed by the pipeline at the end).
        source: where records come from (default: the generator of the spec,
            with the config's rate, count, message and level).
        console: where the status lines go (default: stdout).
        clock: time source (injectable for tests).
        metrics: counters to use (default: new ones); pass the Metrics given
            to a source so that its ``invalid`` count is in the report.
        external_pressure: called by the autoscaler every interval; True
            counts as pressure the way a backpressure sleep does (e.g. a
            stream source whose consumer lags). None: the source's own
            ``upstream_pressure`` if it has one (the NATS source does),
            else only the ring counts.
    """

    def __init__(
        self,
        config: PipelineConfig,
        sink: Sink,
        *,
        source: Source | None = None,
        console: Console | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        external_pressure: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.console = console if console is not None else Console(verbose=config.verbose)
        self.clock = clock if clock is not None else SystemClock()
        self.ring = RingBuffer(
            config.channel_size, max_record_size=config.max_record_size,
            slot_size=ring_slot_size(config.channel_size),
        )
        self.pool = WorkerPool(self._make_worker, min_workers=config.min_workers, max_workers=config.max_workers)
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.bind(
            produced=lambda: self.ring.pushed,
            queue_depth=lambda: len(self.ring),
            queue_capacity=self.ring.capacity,
            workers=lambda: len(self.pool),
            queue_usage=lambda: self.ring.usage,
            ring_counts=self._ring_counts,
            in_batches=self.pool.pending,
            collecting=lambda: sum(worker.collecting for worker in self.pool.workers),
        )
        if source is None:
            from logpipe.application.producer import GeneratorSource  # only a generator run loads it

            source = GeneratorSource(
                rate=config.rate,
                count=config.count,
                message=config.message,
                level=config.level,
                metrics=self.metrics,
                clock=self.clock,
            )
        self.source = source
        # The flush watermark, only for a source that takes commits (a file
        # with a state directory, NATS): every flush reports its positions
        # to it, ~0.5 us of a batch of 50 that no other run needs to pay.
        takes_commits = hasattr(source, "commit") and getattr(source, "keeps_checkpoints", True)
        self.tracker = FlushTracker() if takes_commits else None
        self.scaler = AutoScaler(
            self.ring,
            self.pool,
            metrics=self.metrics,
            console=self.console,
            interval=config.scale_interval,
            scale_up=config.scale_up,
            scale_down=config.scale_down,
            scale_down_window=config.scale_down_window,
            external_pressure=(
                external_pressure if external_pressure is not None
                else getattr(self.source, "upstream_pressure", None)
            ),
            clock=self.clock,
        )
        self.reporter = MetricsReporter(
            self.metrics, self.console, interval=config.metrics_interval, monotonic=self.clock.monotonic
        )
        self._cancel = threading.Event()  # the producer's context
        # What the source is given: set with _cancel, or earlier when
        # --load-duration ends the load while the run goes on.
        self._producing_stop = threading.Event()
        # Ends the main wait at once when a stop is asked from another thread.
        # A SimpleQueue, not an Event: its put takes no lock, so request_stop()
        # is safe in a signal handler that interrupted the main thread anywhere.
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._stop_reason: str | None = None
        self.draining = False

    def _make_worker(self, worker_id: int) -> Worker:
        return Worker(
            worker_id,
            self.ring,
            self.sink,
            batch_size=self.config.batch_size,
            batch_timeout=self.config.batch_timeout,
            io_latency=self.config.io_latency,
            metrics=self.metrics,
            console=self.console,
            tracker=self.tracker,  # None unless the source takes commits
            on_fatal=self.request_stop,
        )

    # -- control ------------------------------------------------------------

    def request_stop(self, reason: str = "signal") -> None:
        """Begin shutdown; safe from a signal handler or any thread (takes no lock)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.put(None)

    def pending(self) -> int:
        """Records in the ring plus those held in workers' unwritten batches."""
        return len(self.ring) + self.pool.pending()

    def _ring_counts(self) -> tuple[int, int]:
        # popped first: read in this order, pushed - popped is never negative.
        popped = self.ring.popped
        return self.ring.pushed, popped

    # -- the run ------------------------------------------------------------

    def run(self) -> Report:
        """Run until the source ends, the duration elapses or a stop is requested."""
        started = self.clock.monotonic()
        self.pool.start()
        source_thread = threading.Thread(target=self._run_source, name="logpipe-source", daemon=True)
        source_thread.start()
        self.scaler.start()
        self.reporter.start()
        checkpointer = None
        if self.tracker is not None:
            checkpointer = threading.Thread(target=self._checkpoint_loop, name="logpipe-checkpoint", daemon=True)
            checkpointer.start()

        self._wait_for_stop()
        if self._stop_reason is None:
            self._stop_reason = "source finished" if not source_thread.is_alive() else "duration"
        self._announce_stop()

        self.draining = True
        self._cancel.set()
        self._producing_stop.set()
        self._join(source_thread)
        self.scaler.stop()
        self.ring.close()
        self._join_workers()
        self.reporter.stop()
        self.sink.close()
        if checkpointer is not None:
            self._join(checkpointer)
        self._commit()  # everything is written now: the final checkpoint
        self._close_source()

        report = self._report(
            self.metrics.snapshot(), self.clock.monotonic() - started, self.metrics.ledger(final=True)
        )
        self.console.say("Program finished")
        self.console.say(report.line())
        if report.ledger is not None and not report.ledger.exact:
            self.console.say(report.ledger.line())
        if report.lost:
            self.console.say(f"ERROR: {report.lost} logs were lost")
        return report

    def _wait_for_stop(self) -> None:
        """Until a stop is requested or ``duration`` has elapsed, in slices.

        One unbounded wait here once let a run go on after SIGINT: the kernel
        gave the signal to another thread, and CPython runs the handler only
        in the main thread, once it runs bytecode again.
        """
        deadline = None if self.config.duration is None else time.monotonic() + self.config.duration
        while self._stop_reason is None:
            timeout = JOIN_SLICE
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return
            try:
                self._wake.get(timeout=timeout)
            except queue.Empty:
                pass

    def _commit(self) -> None:
        # Sources that can resume (a file tail) record how far the written
        # prefix of their input reaches; the rest have no tracker (no
        # commit(), or no checkpoints kept).
        if self.tracker is not None:
            self.source.commit(self.tracker.watermark)  # type: ignore[attr-defined]

    def _checkpoint_loop(self) -> None:
        # A source that acknowledges upstream (NATS) asks for a faster pace:
        # its unacknowledged messages count against a limit until then.
        interval = getattr(self.source, "commit_interval", CHECKPOINT_INTERVAL)
        while not self.draining:
            self._commit()
            self._cancel.wait(interval)

    def _close_source(self) -> None:
        # After the final commit: a source holding a connection (NATS) gives
        # back what was not written and disconnects. close() is idempotent.
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def _run_source(self) -> None:
        load_timer = None
        if self.config.load_duration is not None:
            load_timer = threading.Timer(self.config.load_duration, self._producing_stop.set)
            load_timer.daemon = True
            load_timer.start()
        try:
            self.source.run(self.ring, self._producing_stop)
            if load_timer is not None:
                # The load is over, the run is not: idle until shutdown, so
                # the pool can be watched scaling back down.
                self.console.say("Load finished; idling until the run ends")
                self._cancel.wait()
        finally:
            if load_timer is not None:
                load_timer.cancel()
            self.request_stop("source finished")

    def _announce_stop(self) -> None:
        reason = self._stop_reason
        if reason == "signal":
            self.console.say("Shutdown signal received!")
        elif reason == "duration":
            self.console.say(f"Shutdown: --duration {format_duration(self.config.duration or 0)} elapsed")
        else:
            self.console.say(f"Shutdown: {reason}")

    def _join(self, thread: threading.Thread) -> None:
        join_thread(thread)  # in slices: the main thread keeps handling signals

    def _join_workers(self) -> None:
        # Each worker's join is bounded by JOIN_SLICE: signals are handled between them.
        while self.pool.join_all(JOIN_SLICE):
            pass

    def _report(self, snap: Snapshot, elapsed: float, ledger: Ledger | None = None) -> Report:
        return Report(
            produced=snap.produced,
            processed=snap.processed,
            dropped=snap.dropped,
            lost=snap.lost,
            elapsed=elapsed,
            backpressure_sleeps=snap.backpressure_sleeps,
            scale_ups=snap.scale_ups,
            scale_downs=snap.scale_downs,
            sink_errors=snap.sink_errors,
            peak_workers=self.pool.peak,
            reason=self._stop_reason or "",
            invalid=snap.invalid,
            ledger=ledger,
        )
