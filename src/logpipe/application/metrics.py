"""The pipeline's one set of numbers, and the once-a-second [METRICS] line.

Every figure an operator sees (the console line, the final report, the
Prometheus endpoint) is read from the same :class:`Metrics` object, so they
cannot disagree. Counters are bumped once per batch or per log under a lock:
cheap at those rates, and exact on any Python build. The per-flush figures
of the workers (processed, batches, the two histograms) are the exception:
each worker writes its own *shard* (``Counter.shard()``,
``Histogram.shard()``) with no lock at all, since it is the only writer, and
readers add the shards up under the counter's lock. A flush then costs a few
attribute updates instead of four lock round trips. A worker that leaves
folds its shard back into the total (``retire``), so scaling up and down
for days does not grow the list readers walk.

The loss ledger (:meth:`Metrics.ledger`) accounts for every record received::

    received = produced + invalid
             = delivered + in ring + in worker batches + dropped{reason}
               + invalid + undelivered

``undelivered`` are the records of batches a sink refused for good (a
permanent SinkError): known losses, which make the report's ``lost`` non-zero
but keep the ledger balanced. An unbalanced ledger means a record went
somewhere the pipeline does not know about: a bug, reported loudly.

One term cannot be seen live: a worker's ``get_batch`` takes records out of
the ring while it waits for the rest of its batch (up to ``batch_timeout``),
and only when it returns does the worker know what it holds. A worker's
``collecting`` is its batch size while it is in that call (the pipeline binds
their sum), so a live ledger balances when ``0 <= received - accounted <=
collecting``. Once every worker has been joined the check is exact.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence

from logpipe._waits import join_thread
from logpipe.application.console import Console
from logpipe.domain.records import field, frozen, replace

__all__ = [
    "ENQUEUE_TO_FLUSH_BUCKETS",
    "FLUSH_DURATION_BUCKETS",
    "Counter",
    "CounterShard",
    "DropCounter",
    "Histogram",
    "HistogramShard",
    "HistogramSnapshot",
    "Ledger",
    "Metrics",
    "MetricsReporter",
    "SinkHealth",
    "Snapshot",
    "UpstreamLag",
    "check_ledger",
]

# Upper bounds, in seconds, of the histograms' buckets (+Inf is implied).
FLUSH_DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
ENQUEUE_TO_FLUSH_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
# A live ledger reading that does not balance is read again this many times
# (records move between its terms while they are read) before it counts.
LEDGER_ATTEMPTS = 6


class Counter:
    """A thread-safe, monotonically increasing integer.

    ``add`` takes a lock. A thread that adds often takes a :meth:`shard`
    instead and adds to it without one; ``value`` includes every shard.
    """

    __slots__ = ("_lock", "_value", "_shards")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0
        self._shards: tuple[CounterShard, ...] = ()

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self._value += amount

    @property
    def value(self) -> int:
        if not self._shards:
            return self._value
        with self._lock:  # against a retire moving a shard's count into _value
            return self._value + sum(shard.value for shard in self._shards)

    def shard(self) -> CounterShard:
        """A part of this counter for one writing thread (see CounterShard)."""
        shard = CounterShard(self)
        with self._lock:
            self._shards = (*self._shards, shard)
        return shard

    def _retire(self, shard: CounterShard) -> None:
        with self._lock:
            if shard in self._shards:
                self._value += shard.value
                self._shards = tuple(s for s in self._shards if s is not shard)
                shard.value = 0


class CounterShard:
    """One thread's part of a Counter: ``add`` without a lock.

    Only one thread may add to a shard (that is what makes it lock-free:
    a single writer's ``+=`` cannot lose an update). ``retire()`` when that
    thread is done: its count moves into the counter and stays counted.
    """

    __slots__ = ("_counter", "value")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self.value = 0

    def add(self, amount: int = 1) -> None:
        self.value += amount

    def retire(self) -> None:
        self._counter._retire(self)


class DropCounter(Counter):
    """Records discarded on purpose, counted by reason (``value`` is the total).

    Only records that entered the ring count here (``lost = produced -
    processed - dropped``), so the ledger's ``received`` needs no drop term.
    """

    __slots__ = ("_by_reason",)

    def __init__(self) -> None:
        super().__init__()
        self._by_reason: dict[str, int] = {}

    def add(self, amount: int = 1, reason: str = "unspecified") -> None:
        with self._lock:
            self._value += amount
            self._by_reason[reason] = self._by_reason.get(reason, 0) + amount

    def by_reason(self) -> dict[str, int]:
        """Reason -> records dropped for it (a copy)."""
        with self._lock:
            return dict(self._by_reason)


@frozen
class HistogramSnapshot:
    """A histogram at one instant, cumulative like Prometheus's.

    Attributes:
        bounds: the buckets' upper bounds, increasing, then ``inf``.
        cumulative: observations <= each bound (the last is ``count``).
        sum: the sum of all observations.
        count: how many observations.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


class Histogram:
    """A thread-safe histogram with fixed buckets (upper bounds in seconds).

    Args:
        bounds: strictly increasing finite upper bounds; ``+Inf`` is added.
    """

    __slots__ = ("_lock", "bounds", "_counts", "_sum", "_count", "_shards")

    def __init__(self, bounds: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in bounds)
        if not bounds or any(not math.isfinite(b) for b in bounds) or any(
            a >= b for a, b in zip(bounds, bounds[1:])
        ):
            raise ValueError(f"histogram bounds must be finite and strictly increasing, got {bounds}")
        self._lock = threading.Lock()
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last is the +Inf bucket
        self._sum = 0.0
        self._count = 0
        self._shards: tuple[HistogramShard, ...] = ()

    def observe(self, value: float) -> None:
        """Count one observation (in the first bucket whose bound is >= value)."""
        index = bisect_left(self.bounds, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value
            self._count += 1

    def shard(self) -> HistogramShard:
        """A part of this histogram for one observing thread (see HistogramShard)."""
        shard = HistogramShard(self)
        with self._lock:
            self._shards = (*self._shards, shard)
        return shard

    def _retire(self, shard: HistogramShard) -> None:
        with self._lock:
            if shard in self._shards:
                self._fold(shard)
                self._shards = tuple(s for s in self._shards if s is not shard)

    def _fold(self, shard: HistogramShard) -> None:
        counts = list(shard.counts)  # one read of the list, then add it up
        for index, n in enumerate(counts):
            self._counts[index] += n
        self._sum += shard.sum
        self._count += sum(counts)

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
            for shard in self._shards:
                for index, n in enumerate(list(shard.counts)):
                    counts[index] += n
                total += shard.sum
        count = sum(counts)  # from the buckets read, so count and buckets agree
        cumulative, running = [], 0
        for n in counts:
            running += n
            cumulative.append(running)
        return HistogramSnapshot((*self.bounds, math.inf), tuple(cumulative), total, count)


class HistogramShard:
    """One thread's part of a Histogram: ``observe`` without a lock.

    Single writer, as for CounterShard. A reader may see an observation's
    bucket a moment before its sum; the buckets and the count always agree.
    """

    __slots__ = ("_histogram", "_bounds", "counts", "sum")

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._bounds = histogram.bounds
        self.counts = [0] * (len(histogram.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value

    def retire(self) -> None:
        """Fold this shard into its histogram (its thread observes no more)."""
        self._histogram._retire(self)


class SinkHealth:
    """Whether the sink is failing: consecutive failed writes since the last success.

    Workers report every failed write (``failed``) and every successful one
    (``succeeded``); ``failing_for`` is how long the current run of failures
    has lasted, 0.0 when the last write succeeded.
    """

    __slots__ = ("_lock", "_since", "_failures", "last_error")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._failures = 0
        self.last_error = ""

    def failed(self, now: float, error: str = "") -> None:
        with self._lock:
            if self._since is None:
                self._since = now
            self._failures += 1
            self.last_error = error

    def succeeded(self) -> None:
        if self._since is None:
            return  # the common case: no lock on the write path
        with self._lock:
            self._since = None
            self._failures = 0

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def failing_for(self, now: float) -> float:
        """Seconds since the first of the current run of failed writes; 0.0 if none."""
        since = self._since
        return 0.0 if since is None else max(now - since, 0.0)


@frozen
class Ledger:
    """Where every record received is, at one instant.

    ``received`` (produced into the ring, plus the lines sources rejected)
    must equal ``accounted``: delivered + in_ring + in_batches + dropped +
    invalid + undelivered, give or take the records in batches still being
    collected: ``balanced`` means ``0 <= difference <= collecting_max``, and
    ``exact`` means ``difference == 0`` (what a final ledger must show, with
    ``collecting_max`` 0).
    """

    produced: int
    invalid: int
    delivered: int
    in_ring: int
    in_batches: int
    dropped: Mapping[str, int] = field(default_factory=dict)
    undelivered: int = 0
    collecting_max: int = 0

    @property
    def received(self) -> int:
        return self.produced + self.invalid

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def accounted(self) -> int:
        return (
            self.delivered + self.in_ring + self.in_batches + self.dropped_total
            + self.invalid + self.undelivered
        )

    @property
    def difference(self) -> int:
        """received - accounted: records missing from the terms (negative: counted twice).

        Live, up to ``collecting_max`` of them may be in batches a worker is
        still collecting; beyond that, or below 0, the ledger does not balance.
        """
        return self.received - self.accounted

    @property
    def exact(self) -> bool:
        return self.difference == 0

    @property
    def balanced(self) -> bool:
        return 0 <= self.difference <= self.collecting_max

    def line(self) -> str:
        """One line with every term; starts ``LEDGER IMBALANCE:`` when it does not balance."""
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(self.dropped.items()))
        head = "Ledger balanced:" if self.balanced else "LEDGER IMBALANCE:"
        return (
            f"{head} received={self.received} delivered={self.delivered} in_ring={self.in_ring} "
            f"in_batches={self.in_batches} dropped={self.dropped_total}"
            f"{'{' + reasons + '}' if reasons else ''} invalid={self.invalid} "
            f"undelivered={self.undelivered} difference={self.difference}"
            f"{f' (up to {self.collecting_max} in batches being collected)' if self.collecting_max else ''}"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "produced": self.produced,
            "delivered": self.delivered,
            "in_ring": self.in_ring,
            "in_batches": self.in_batches,
            "dropped": self.dropped_total,
            "dropped_by_reason": dict(sorted(self.dropped.items())),
            "invalid": self.invalid,
            "undelivered": self.undelivered,
            "difference": self.difference,
            "collecting_max": self.collecting_max,
            "balanced": self.balanced,
            "exact": self.exact,
        }


@frozen
class UpstreamLag:
    """How far behind its upstream a consuming source is (the NATS source).

    Attributes:
        pending: messages in the stream the consumer group has not been
            delivered yet (JetStream's ``num_pending``).
        ack_pending: messages delivered and not yet acknowledged, by every
            process sharing the consumer (``num_ack_pending``).
        redelivered: messages this process received more than once
            (duplicates after a consumer crashed or an ack was lost).
    """

    pending: int
    ack_pending: int
    redelivered: int = 0


@frozen
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
    upstream: UpstreamLag | None = None  # only with a consuming source

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

    Besides the counters: ``flush_duration`` and ``enqueue_to_flush``
    (histograms, seconds, one observation per batch written),
    ``sink_health`` (how long the sink has been failing), ``undelivered``
    (records of batches a sink refused for good) and ``ledger_alarms``
    (live ledger checks that did not balance).
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
        self.dropped = DropCounter()
        self.undelivered = Counter()
        self.batches_flushed = Counter()
        self.backpressure_sleeps = Counter()
        self.scale_ups = Counter()
        self.scale_downs = Counter()
        self.sink_errors = Counter()
        self.invalid = Counter()  # lines a source rejected (malformed, oversized)
        self.ledger_alarms = Counter()
        self.flush_duration = Histogram(FLUSH_DURATION_BUCKETS)
        self.enqueue_to_flush = Histogram(ENQUEUE_TO_FLUSH_BUCKETS)
        self.sink_health = SinkHealth()
        self._ring_counts: Callable[[], tuple[int, int]] | None = None
        self._in_batches: Callable[[], int] = lambda: 0
        self._collecting: Callable[[], int] = lambda: 0
        self._queue_usage: Callable[[], float] | None = None
        self._upstream: Callable[[], UpstreamLag | None] | None = None
        self.bind(queue_depth=queue_depth, queue_capacity=queue_capacity, workers=workers)

    def bind(
        self,
        *,
        produced: Callable[[], int] | None = None,
        queue_depth: Callable[[], int] = lambda: 0,
        queue_capacity: int = 0,
        workers: Callable[[], int] = lambda: 0,
        queue_usage: Callable[[], float] | None = None,
        ring_counts: Callable[[], tuple[int, int]] | None = None,
        in_batches: Callable[[], int] | None = None,
        collecting: Callable[[], int] | None = None,
    ) -> None:
        """Attach the live gauges (the pipeline does, once its ring and pool exist).

        Lets a caller create the Metrics first and hand them to a source
        (which counts ``invalid``) before the pipeline is built.

        Args:
            queue_usage: the ring's occupancy, 0.0-1.0 (default: depth / capacity).
            ring_counts: returns ``(pushed, popped)`` of the ring, popped read
                first; the ledger's produced and in-ring terms come from one call.
            in_batches: returns the records workers hold in unwritten batches.
            collecting: returns the most records workers' get_batch calls in
                progress may have taken (the sum of their ``collecting``).
        """
        if produced is not None:
            self._produced = produced
        self._queue_depth = queue_depth
        self._queue_capacity = queue_capacity
        self._workers = workers
        if queue_usage is not None:
            self._queue_usage = queue_usage
        if ring_counts is not None:
            self._ring_counts = ring_counts
        if in_batches is not None:
            self._in_batches = in_batches
        if collecting is not None:
            self._collecting = collecting

    def bind_upstream(self, lag: Callable[[], UpstreamLag | None]) -> None:
        """Attach a consuming source's lag (the NATS source does, when it is built).

        Once bound, snapshots carry it, the [METRICS] line shows it and the
        Prometheus endpoint exports it; ``lag`` returns None while unknown.
        """
        self._upstream = lag

    def upstream(self) -> UpstreamLag | None:
        """The bound source's lag now; None without one, or while it is unknown."""
        return self._upstream() if self._upstream is not None else None

    @property
    def has_ledger(self) -> bool:
        """Whether a ring is bound, so the ledger's in-ring term is live (the pipeline binds one)."""
        return self._ring_counts is not None

    def queue_usage(self) -> float:
        """The ring's occupancy now, 0.0-1.0."""
        if self._queue_usage is not None:
            return self._queue_usage()
        return self._queue_depth() / self._queue_capacity if self._queue_capacity else 0.0

    def _read_ledger(self) -> Ledger:
        # Downstream terms first. The produced and invalid values are used on
        # both sides of the equation, so only records moving between popped,
        # in-batches and delivered/dropped while this reads can unbalance it.
        delivered = self.processed.value
        dropped = self.dropped.by_reason()
        undelivered = self.undelivered.value
        in_batches = self._in_batches()
        collecting = self._collecting()
        if self._ring_counts is not None:
            pushed, popped = self._ring_counts()
            in_ring = pushed - popped
        else:
            pushed, in_ring = self._produced(), self._queue_depth()
        return Ledger(
            produced=pushed,
            invalid=self.invalid.value,
            delivered=delivered,
            in_ring=in_ring,
            in_batches=in_batches,
            dropped=dropped,
            undelivered=undelivered,
            collecting_max=max(collecting, 0),
        )

    def ledger(self, attempts: int = LEDGER_ATTEMPTS, *, final: bool = False) -> Ledger:
        """The loss ledger now: the first balanced reading of up to ``attempts``.

        Records move between the terms while they are read (a worker has
        written a batch and not yet counted it), so a live reading that
        does not balance is taken again, after a pause that lets the moving
        threads run (1, 2, 4... ms). With every thread joined, one attempt is
        exact. Returns the last reading when none balanced.

        Args:
            attempts: readings to take at most.
            final: every worker has been joined: one reading, with no
                allowance for batches being collected (it must be exact).
        """
        if final:
            return replace(self._read_ledger(), collecting_max=0)
        reading = self._read_ledger()
        pause = 0.001
        for _ in range(attempts - 1):
            if reading.balanced:
                break
            time.sleep(pause)
            pause *= 2
            reading = self._read_ledger()
        return reading

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
            upstream=self.upstream(),
        )


def metrics_line(previous: Snapshot, current: Snapshot, seconds: float) -> str:
    """The spec's line: rates over the interval, queue and workers now."""
    produced = (current.produced - previous.produced) / seconds
    processed = (current.processed - previous.processed) / seconds
    line = (
        f"[METRICS] Produced={produced:.0f}/s | Processed={processed:.0f}/s | "
        f"Queue={current.queue_depth}/{current.queue_capacity} | Workers={current.workers}"
    )
    if current.upstream is not None:  # only a consuming source (NATS) has an upstream
        lag = current.upstream
        line += f" | Upstream pending={lag.pending} ack_pending={lag.ack_pending}"
    return line


class MetricsReporter:
    """A thread printing the [METRICS] line every ``interval`` seconds.

    When a ring is bound it also checks the loss ledger each time, and prints a
    ``LEDGER IMBALANCE: ...`` line (counting ``metrics.ledger_alarms``)
    whenever a reading fails to balance after its retries with a difference
    not already reported.

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
            join_thread(self._thread, timeout)  # in slices: called from the main thread

    def _run(self) -> None:
        previous, since = self._metrics.snapshot(), self._monotonic()
        reported = 0  # the imbalance last printed, so a stuck one is not repeated every second
        while not self._stop.wait(self._interval):
            current, now = self._metrics.snapshot(), self._monotonic()
            self._console.say(metrics_line(previous, current, max(now - since, 1e-9)))
            previous, since = current, now
            if self._metrics.has_ledger:
                reported = check_ledger(self._metrics, self._console, reported)


def check_ledger(metrics: Metrics, console: Console, reported: int = 0) -> int:
    """Read the ledger live; on an imbalance not yet reported, count it and say so.

    Returns the difference now (0 when balanced), to pass as ``reported`` next time.
    """
    ledger = metrics.ledger()
    if ledger.balanced:
        return 0
    if ledger.difference != reported:
        metrics.ledger_alarms.add()
        console.say(ledger.line())
    return ledger.difference
