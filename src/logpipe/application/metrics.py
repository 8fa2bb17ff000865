"""The pipeline's one set of numbers, and the once-a-second [METRICS] line.

Every figure an operator sees (the console line, the final report, later the
Prometheus endpoint) is read from the same :class:`Metrics` object, so they
cannot disagree. Counters are bumped once per batch or per log under a lock:
cheap at those rates, and exact on any Python build.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from logpipe.application.console import Console

__all__ = ["Counter", "Metrics", "MetricsReporter", "Snapshot"]


class Counter:
    """A thread-safe, monotonically increasing integer."""

    __slots__ = ("_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self._value += amount

    @property
    def value(self) -> int:
        return self._value


@dataclass(frozen=True)
class Snapshot:
    """The numbers at one instant."""

    produced: int
    processed: int
    dropped: int
    queue_depth: int
    queue_capacity: int
    workers: int
    batches_flushed: int
    backpressure_sleeps: int
    scale_ups: int
    scale_downs: int
    sink_errors: int
    invalid: int = 0

    @property
    def lost(self) -> int:
        """Records that entered and neither reached the sink nor were dropped on purpose."""
        return self.produced - self.processed - self.dropped


class Metrics:
    """Counters written by the pipeline's threads; gauges read live.

    Args:
        produced: returns the records that entered the pipeline so far; the
            pipeline passes ``lambda: ring.pushed`` so that every source is
            counted the same way. Without it, the ``produced`` counter is used.
        queue_depth: returns the records in the ring now.
        queue_capacity: the ring's capacity.
        workers: returns the live worker count.
    """

    def __init__(
        self,
        *,
        produced: Callable[[], int] | None = None,
        queue_depth: Callable[[], int] = lambda: 0,
        queue_capacity: int = 0,
        workers: Callable[[], int] = lambda: 0,
    ) -> None:
        self.produced = Counter()
        self._produced = produced if produced is not None else (lambda: self.produced.value)
        self.processed = Counter()
        self.dropped = Counter()
        self.batches_flushed = Counter()
        self.backpressure_sleeps = Counter()
        self.scale_ups = Counter()
        self.scale_downs = Counter()
        self.sink_errors = Counter()
        self.invalid = Counter()  # lines a source rejected (malformed, oversized)
        self.bind(queue_depth=queue_depth, queue_capacity=queue_capacity, workers=workers)

    def bind(
        self,
        *,
        produced: Callable[[], int] | None = None,
        queue_depth: Callable[[], int] = lambda: 0,
        queue_capacity: int = 0,
        workers: Callable[[], int] = lambda: 0,
    ) -> None:
        """Attach the live gauges (the pipeline does, once its ring and pool exist).

        Lets a caller create the Metrics first and hand them to a source
        (which counts ``invalid``) before the pipeline is built.
        """
        if produced is not None:
            self._produced = produced
        self._queue_depth = queue_depth
        self._queue_capacity = queue_capacity
        self._workers = workers

    def snapshot(self) -> Snapshot:
        # Processed before produced: a record is produced before it is
        # processed, so this order never shows processed > produced.
        processed = self.processed.value
        dropped = self.dropped.value
        return Snapshot(
            produced=self._produced(),
            processed=processed,
            dropped=dropped,
            queue_depth=self._queue_depth(),
            queue_capacity=self._queue_capacity,
            workers=self._workers(),
            batches_flushed=self.batches_flushed.value,
            backpressure_sleeps=self.backpressure_sleeps.value,
            scale_ups=self.scale_ups.value,
            scale_downs=self.scale_downs.value,
            sink_errors=self.sink_errors.value,
            invalid=self.invalid.value,
        )


def metrics_line(previous: Snapshot, current: Snapshot, seconds: float) -> str:
    """The spec's line: rates over the interval, queue and workers now."""
    produced = (current.produced - previous.produced) / seconds
    processed = (current.processed - previous.processed) / seconds
    return (
        f"[METRICS] Produced={produced:.0f}/s | Processed={processed:.0f}/s | "
        f"Queue={current.queue_depth}/{current.queue_capacity} | Workers={current.workers}"
    )


class MetricsReporter:
    """A thread printing the [METRICS] line every ``interval`` seconds.

    Args:
        metrics: the numbers to print.
        console: where to print.
        interval: seconds between lines.
        monotonic: the clock (injectable for tests).
    """

    def __init__(
        self,
        metrics: Metrics,
        console: Console,
        *,
        interval: float = 1.0,
        monotonic: Callable[[], float],
    ) -> None:
        self._metrics = metrics
        self._console = console
        self._interval = interval
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logpipe-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        previous, since = self._metrics.snapshot(), self._monotonic()
        while not self._stop.wait(self._interval):
            current, now = self._metrics.snapshot(), self._monotonic()
            self._console.say(metrics_line(previous, current, max(now - since, 1e-9)))
            previous, since = current, now
