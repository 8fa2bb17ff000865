"""Tests for logpipe.application.metrics: counters, snapshots, the [METRICS] line and its reporter."""

from __future__ import annotations

import io
import itertools
import re
import sys
import threading
import time

import pytest

from logpipe.application.console import Console
from logpipe.application.metrics import Counter, Metrics, MetricsReporter, Snapshot, metrics_line
from _support import wait_until

JOIN = 5.0
LINE = re.compile(
    r"\[METRICS\] Produced=(\d+)/s \| Processed=(\d+)/s \| Queue=(\d+)/(\d+) \| Workers=(\d+)"
)


def snap(**values: int) -> Snapshot:
    base = dict(
        produced=0,
        processed=0,
        dropped=0,
        queue_depth=0,
        queue_capacity=1500,
        workers=1,
        batches_flushed=0,
        backpressure_sleeps=0,
        scale_ups=0,
        scale_downs=0,
        sink_errors=0,
    )
    return Snapshot(**(base | values))


def test_counter_is_exact_under_concurrent_adds() -> None:
    """8 threads adding 20,000 times each to one Counter: exactly 160,000."""
    counter = Counter()

    def bump() -> None:
        for _ in range(20_000):
            counter.add()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads)
    assert counter.value == 160_000


def test_counter_adds_amounts() -> None:
    """add(n) adds n; a new counter is 0."""
    counter = Counter()
    assert counter.value == 0
    counter.add(5)
    counter.add()
    assert counter.value == 6


@pytest.mark.parametrize(
    ("produced", "processed", "dropped", "lost"),
    [(0, 0, 0, 0), (100, 100, 0, 0), (100, 90, 4, 6), (100, 60, 40, 0)],
)
def test_snapshot_lost_is_produced_minus_processed_minus_dropped(
    produced: int, processed: int, dropped: int, lost: int
) -> None:
    """lost = produced - processed - dropped, from a Snapshot and from live Metrics."""
    assert snap(produced=produced, processed=processed, dropped=dropped).lost == lost
    metrics = Metrics()
    metrics.produced.add(produced)
    metrics.processed.add(processed)
    metrics.dropped.add(dropped)
    assert metrics.snapshot().lost == lost


def test_snapshot_reads_every_counter_and_the_live_gauges() -> None:
    """A snapshot holds each counter's value and the queue/worker gauges read at that moment."""
    depth, workers = [7], [3]
    metrics = Metrics(queue_depth=lambda: depth[0], queue_capacity=1500, workers=lambda: workers[0])
    for i, name in enumerate(
        ["produced", "processed", "dropped", "batches_flushed", "backpressure_sleeps",
         "scale_ups", "scale_downs", "sink_errors"],
        start=1,
    ):
        getattr(metrics, name).add(i * 10)
    first = metrics.snapshot()
    assert first == snap(
        produced=10, processed=20, dropped=30, batches_flushed=40, backpressure_sleeps=50,
        scale_ups=60, scale_downs=70, sink_errors=80, queue_depth=7, queue_capacity=1500, workers=3,
    )
    depth[0], workers[0] = 1277, 2
    second = metrics.snapshot()
    assert (second.queue_depth, second.workers) == (1277, 2)


def test_snapshot_never_shows_processed_above_produced() -> None:
    """While a producer and a consumer count concurrently, no snapshot has processed > produced."""
    metrics = Metrics()
    stop = threading.Event()

    def pipeline() -> None:
        while not stop.is_set():
            metrics.produced.add()
            metrics.processed.add()

    thread = threading.Thread(target=pipeline)
    thread.start()
    try:
        for _ in range(20_000):
            s = metrics.snapshot()
            assert s.processed <= s.produced and s.lost >= 0
    finally:
        stop.set()
        thread.join(JOIN)
    assert not thread.is_alive()


def test_snapshot_reads_processed_before_produced() -> None:
    """A record produced and processed between the snapshot's reads cannot make processed exceed produced."""
    metrics = Metrics()

    class ReadHook(Counter):
        """A produced counter: the moment it is read, one more record goes all the way through."""

        @property
        def value(self) -> int:
            seen = self._value
            metrics.produced.add()
            metrics.processed.add()
            return seen

    metrics.produced = ReadHook()
    for _ in range(3):
        s = metrics.snapshot()
        assert s.processed <= s.produced and s.lost >= 0, s


def test_counter_is_exact_with_a_tiny_switch_interval() -> None:
    """Forcing thread switches every microsecond, 4 threads x 20,000 adds still total exactly 80,000."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        counter = Counter()

        def bump() -> None:
            for _ in range(20_000):
                counter.add()

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(JOIN)
    finally:
        sys.setswitchinterval(old)
    assert not any(t.is_alive() for t in threads)
    assert counter.value == 80_000


def test_metrics_line_matches_the_spec_exactly() -> None:
    """Rates over the interval, queue and workers now: the spec's example line, character for character."""
    previous = snap(produced=1000, processed=500)
    current = snap(produced=1000 + 2 * 1477, processed=500 + 2 * 150, queue_depth=1277, workers=2)
    line = metrics_line(previous, current, 2.0)
    assert line == "[METRICS] Produced=1477/s | Processed=150/s | Queue=1277/1500 | Workers=2"
    assert LINE.fullmatch(line)


def test_metrics_line_rounds_rates_to_whole_numbers() -> None:
    """Rates are whole logs per second: 1000 logs in 3 s prints 333/s, nothing in 1 s prints 0/s."""
    assert metrics_line(snap(), snap(produced=1000, processed=0), 3.0).startswith(
        "[METRICS] Produced=333/s | Processed=0/s |"
    )


def test_reporter_prints_lines_using_the_injected_clock() -> None:
    """Each line's rates divide by the injected monotonic's elapsed time (2 s a line), not the real one."""
    metrics = Metrics(queue_depth=lambda: 12, queue_capacity=1500, workers=lambda: 4)
    out = io.StringIO()
    fake_now = itertools.count(start=0.0, step=2.0)  # every reading: two "seconds" later
    reporter = MetricsReporter(metrics, Console(out), interval=0.01, monotonic=lambda: next(fake_now))

    def rates() -> list[tuple[int, int]]:
        lines = out.getvalue().splitlines()
        return [tuple(map(int, LINE.fullmatch(line).groups()[:2])) for line in lines]  # type: ignore[union-attr]

    reporter.start()
    try:
        assert wait_until(lambda: len(rates()) >= 1)
        metrics.produced.add(300)  # each add lands whole in one line's interval
        metrics.processed.add(100)
        assert wait_until(lambda: sum(q for _, q in rates()) == 50), out.getvalue()
    finally:
        reporter.stop(JOIN)
    assert not reporter._thread.is_alive()
    lines = out.getvalue().splitlines()
    assert all(LINE.fullmatch(line) for line in lines), lines
    assert all(line.endswith("| Queue=12/1500 | Workers=4") for line in lines)
    # 300 produced and 100 processed over 2-"second" intervals: 150/s and 50/s
    assert sorted(p for p, _ in rates() if p) == [150]
    assert sorted(q for _, q in rates() if q) == [50]


def test_reporter_stop_ends_the_thread_and_the_lines() -> None:
    """After stop() the reporter's thread is dead and no further line is printed."""
    out = io.StringIO()
    reporter = MetricsReporter(Metrics(), Console(out), interval=0.01, monotonic=time.monotonic)
    reporter.start()
    assert wait_until(lambda: len(out.getvalue().splitlines()) >= 2)
    reporter.stop(JOIN)
    assert not reporter._thread.is_alive()
    printed = out.getvalue()
    time.sleep(0.05)
    assert out.getvalue() == printed


def test_reporter_stopped_before_its_first_interval_prints_nothing() -> None:
    """A reporter stopped within its interval leaves without a line."""
    out = io.StringIO()
    reporter = MetricsReporter(Metrics(), Console(out), interval=60.0, monotonic=time.monotonic)
    reporter.start()
    reporter.stop(JOIN)
    assert not reporter._thread.is_alive()
    assert out.getvalue() == ""


# -- shards: the workers' lock-free parts of a counter or histogram --------------


def test_counter_shards_add_up_exactly_while_read_and_retired():
    """8 writers, each on its own shard, and a reader: every read is between the
    last read and the final total (never a lost or doubled add, also while
    shards retire), and the total is exact once all have retired."""
    counter = Counter()
    counter.add(5)  # a plain add before any shard
    writers, adds = 8, 20_000
    start = threading.Barrier(writers + 1)
    finished = threading.Event()
    reads: list[int] = []

    def write(index: int) -> None:
        shard = counter.shard()
        start.wait()
        for _ in range(adds):
            shard.add(index + 1)
        shard.retire()

    def read() -> None:
        start.wait()
        while not finished.is_set():
            reads.append(counter.value)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    reader = threading.Thread(target=read)
    for t in [*threads, reader]:
        t.start()
    for t in threads:
        t.join(JOIN)
    finished.set()
    reader.join(JOIN)
    assert not any(t.is_alive() for t in [*threads, reader])
    total = 5 + adds * sum(range(1, writers + 1))
    assert counter.value == total
    assert counter._shards == ()  # retired shards leave the list readers walk
    assert all(a <= b for a, b in zip(reads, reads[1:])), "a read went backwards"
    assert all(5 <= r <= total for r in reads)


def test_histogram_shards_fold_into_the_snapshot():
    """Observations on shards show in the snapshot (buckets, sum, count agree)
    before and after the shards retire, alongside plain observe() calls."""
    metrics = Metrics()
    histogram = metrics.flush_duration
    first, second = histogram.shard(), histogram.shard()
    for value in (0.00005, 0.003, 0.003, 100.0):
        first.observe(value)
    second.observe(0.2)
    histogram.observe(0.003)
    live = histogram.snapshot()
    first.retire()
    second.retire()
    retired = histogram.snapshot()
    assert live == retired
    assert retired.count == 6 == retired.cumulative[-1]
    assert retired.sum == pytest.approx(0.00005 + 0.003 * 3 + 100.0 + 0.2)
    by_bound = dict(zip(retired.bounds, retired.cumulative))
    assert by_bound[0.0001] == 1 and by_bound[0.0025] == 1 and by_bound[0.005] == 4
    assert by_bound[0.25] == 5 and by_bound[float("inf")] == 6  # 100 s only in +Inf


def test_a_retired_shard_is_counted_once():
    """Retiring twice (a worker's finally after an error) does not count twice."""
    counter = Counter()
    shard = counter.shard()
    shard.add(7)
    shard.retire()
    shard.retire()
    assert counter.value == 7
