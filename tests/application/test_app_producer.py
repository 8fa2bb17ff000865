"""Tests for logpipe.application.producer: GeneratorSource's records, pacing, backpressure and exits.

Pacing is driven with a FakeClock: the producer reads the schedule's time
from clock.monotonic() (its real waits are short stop.wait() calls), so the
test moves time forward and checks exactly how many logs came due.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from logpipe import RingBuffer
from logpipe.application.metrics import Metrics
from logpipe.application.producer import GeneratorSource
from logpipe.domain.clock import FakeClock
from _support import wait_until

JOIN = 5.0
STOP_WITHIN = 0.5  # the producer's promise is ~10 ms; this is generous


def drain(ring: RingBuffer) -> list[dict]:
    records = []
    while len(ring):
        records.extend(orjson.loads(r) for r in ring.get_many(1000, block=False))
    return records


class Runner:
    """Runs ``source.run(ring, stop)`` in a thread and keeps what it raised."""

    def __init__(self, source: GeneratorSource, ring: RingBuffer) -> None:
        self.source, self.ring = source, ring
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.source.run(self.ring, self.stop)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def start(self) -> Runner:
        self.thread.start()
        return self

    def finish(self, timeout: float = JOIN) -> None:
        """Join; the thread must be dead and must not have raised."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "producer thread still running"
        assert self.error is None, repr(self.error)


@pytest.fixture
def runners():
    made: list[Runner] = []

    def factory(source: GeneratorSource, ring: RingBuffer) -> Runner:
        runner = Runner(source, ring)
        made.append(runner)
        return runner.start()

    yield factory
    for runner in made:
        runner.stop.set()
        runner.ring.close()
        runner.thread.join(JOIN)
        assert not runner.thread.is_alive()


# --- full speed --------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 1024, 2500])
def test_count_at_full_speed_puts_exactly_count_records(runners, count: int) -> None:
    """rate 0, count N: exactly N records, seq 0..N-1 in order, with msg, level and a µs ts of now."""
    ring, metrics = RingBuffer(4096), Metrics()
    source = GeneratorSource(rate=0, count=count, metrics=metrics)
    before_us = time.time_ns() // 1000
    runners(source, ring).finish()
    after_us = time.time_ns() // 1000
    records = drain(ring)
    assert [r["seq"] for r in records] == list(range(count))
    assert all(set(r) == {"msg", "level", "ts", "seq"} for r in records)
    assert all(r["msg"] == "hello from producer" and r["level"] == "INFO" for r in records)
    assert all(before_us - 1_000_000 <= r["ts"] <= after_us + 1_000_000 for r in records)
    assert abs(records[0]["ts"] - before_us) < 1_000_000
    assert source.produced == count == ring.pushed
    assert metrics.backpressure_sleeps.value == 0  # the ring never got above 80%


def test_message_and_level_are_json_escaped(runners) -> None:
    """msg and level are written as JSON strings, quotes and non-ASCII included."""
    ring = RingBuffer(16)
    source = GeneratorSource(rate=0, count=3, message='say "hi" \u00e9\n', level="WARN")
    runners(source, ring).finish()
    records = drain(ring)
    assert [(r["msg"], r["level"]) for r in records] == [('say "hi" \u00e9\n', "WARN")] * 3


def test_count_larger_than_the_ring_is_delivered_to_a_consumer(runners) -> None:
    """With a consumer draining a small ring, count=20,000 arrives complete and in order."""
    ring, metrics = RingBuffer(500), Metrics()
    source = GeneratorSource(rate=0, count=20_000, metrics=metrics)
    runner = runners(source, ring)
    seqs: list[int] = []
    while len(seqs) < 20_000:
        batch = ring.get_batch(200, 1.0)
        assert batch, f"no records for 1 s after {len(seqs)}"
        seqs.extend(orjson.loads(r)["seq"] for r in batch)
    runner.finish()
    assert seqs == list(range(20_000))
    assert len(ring) == 0
    assert source.produced == ring.pushed == 20_000


# --- paced, with a fake clock ------------------------------------------------


def test_paced_rate_follows_the_fake_clock_exactly(runners) -> None:
    """rate 1/128 s: at fake time T exactly floor(T * 128) + 1 logs exist, and none early."""
    tick = 1 / 128  # binary-exact, so fake times land exactly on due times
    clock = FakeClock(start=0.0)
    ring = RingBuffer(10_000)
    source = GeneratorSource(rate=tick, clock=clock)
    runners(source, ring)
    elapsed = 0.0
    steps = [(0.0, 1), (tick / 2, 1), (tick / 2, 2), (32 * tick, 34), (64 * tick, 98), (31 * tick, 129)]
    for step, expected in steps:
        clock.advance(step)
        elapsed += step
        assert wait_until(lambda: source.produced >= expected), (elapsed, source.produced)
        time.sleep(0.03)  # several of the producer's real waits: nothing more may come
        assert source.produced == expected, f"at fake t={elapsed:.4f}s"
    records = drain(ring)
    assert [r["seq"] for r in records] == list(range(129))
    # ts comes from the same clock: every stamp lies within the fake second that elapsed
    epoch = 1_700_000_000_000_000
    assert all(epoch <= r["ts"] <= epoch + 1_000_000 for r in records)
    assert records[0]["ts"] == epoch


def test_paced_count_stops_at_count(runners) -> None:
    """Paced with count=10, however much time passes, exactly 10 logs and run() returns."""
    clock = FakeClock()
    ring = RingBuffer(100)
    source = GeneratorSource(rate=0.001, count=10, clock=clock)
    runner = runners(source, ring)
    for _ in range(5):
        clock.advance(0.004)
        time.sleep(0.005)
    runner.finish()
    assert [r["seq"] for r in drain(ring)] == list(range(10))


def test_paced_run_stops_promptly_when_nothing_is_due(runners) -> None:
    """A paced producer waiting for its next log (fake time frozen) ends soon after stop.set()."""
    clock = FakeClock()
    ring = RingBuffer(100)
    source = GeneratorSource(rate=5.0, clock=clock)  # next log due in 5 s of fake time
    runner = runners(source, ring)
    assert wait_until(lambda: source.produced == 1)
    runner.stop.set()
    runner.finish(STOP_WITHIN)
    assert source.produced == 1


# --- backpressure and exits --------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.0001])
def test_backpressure_sleeps_counted_and_stop_ends_a_blocked_put(runners, rate: float) -> None:
    """Ring at 96% with no consumer: sleeps are counted, the put blocks on full, stop ends run() < 0.5 s."""
    ring, metrics = RingBuffer(100), Metrics()
    for _ in range(96):
        ring.put(b"prefill")
    source = GeneratorSource(rate=rate, metrics=metrics)
    runner = runners(source, ring)
    assert wait_until(lambda: metrics.backpressure_sleeps.value > 0)
    assert wait_until(lambda: len(ring) == 100)
    time.sleep(0.05)
    assert runner.thread.is_alive()  # blocked on the full ring, not finished
    stopped = time.monotonic()
    runner.stop.set()
    runner.finish(STOP_WITHIN)
    assert time.monotonic() - stopped < STOP_WITHIN
    assert len(ring) == 100
    # produced counts exactly what entered the ring
    assert source.produced == ring.pushed - 96 == 4


@pytest.mark.parametrize(("rate", "sleeps"), [(1e-6, 30), (0.0, 1)])
def test_backpressure_sleeps_per_log_when_paced_and_per_chunk_at_full_speed(
    runners, rate: float, sleeps: int
) -> None:
    """Above 95% usage each paced log waits 2 ms first (30 logs: 30 sleeps, >= 60 ms); full speed once per chunk."""
    ring, metrics = RingBuffer(1000), Metrics()
    for _ in range(960):
        ring.put(b"prefill")
    source = GeneratorSource(rate=rate, count=30, metrics=metrics)
    started = time.monotonic()
    runners(source, ring).finish()
    elapsed = time.monotonic() - started
    assert len(ring) == 990 and source.produced == 30
    assert metrics.backpressure_sleeps.value == sleeps
    assert elapsed >= 0.9 * sleeps * 0.002  # the sleeps really happened (a lower bound only)


def test_no_backpressure_below_80_percent(runners) -> None:
    """A ring never above 80% full slows nothing: zero backpressure sleeps."""
    ring, metrics = RingBuffer(1000), Metrics()
    runners(GeneratorSource(rate=0, count=800, metrics=metrics), ring).finish()
    assert len(ring) == 800
    assert metrics.backpressure_sleeps.value == 0


@pytest.mark.parametrize("rate", [0.0, 0.0001])
@pytest.mark.parametrize("full", [False, True])
def test_ring_close_ends_run_without_error(runners, rate: float, full: bool) -> None:
    """Closing the ring, blocked on full or not, ends run() normally; produced == records in the ring."""
    ring, metrics = RingBuffer(100), Metrics()
    source = GeneratorSource(rate=rate, metrics=metrics)
    runner = runners(source, ring)
    if full:
        assert wait_until(lambda: len(ring) == 100)
    else:
        assert wait_until(lambda: source.produced > 0)
        taken = len(ring.get_many(100, block=False))  # make room so it is not blocked
    ring.close()
    runner.finish(STOP_WITHIN)
    assert source.produced == ring.pushed == (0 if full else taken) + len(ring)


def test_closed_ring_from_the_start_is_not_an_error(runners) -> None:
    """A source given an already closed ring returns at once, having produced nothing."""
    ring = RingBuffer(10)
    ring.close()
    source = GeneratorSource(rate=0)
    runners(source, ring).finish(STOP_WITHIN)
    assert source.produced == 0
