"""Tests for logpipe.application.autoscaler: one scaling step at a time, and the scaler thread.

The scaler reads a real RingBuffer filled to a chosen occupancy with put().
Its pool's workers consume a *different* ring, so they cannot change the
occupancy under test. The load tests drive that ring from a modelled
producer and modelled workers on the injected clock (see LoadModel).
"""

from __future__ import annotations

import io
import time

import pytest

from logpipe import RingBuffer
from logpipe.application.autoscaler import AutoScaler
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pool import WorkerPool
from logpipe.application.worker import Worker
from logpipe.domain.clock import FakeClock
from logpipe.domain.config import PipelineConfig
from logpipe.domain.policies import ScaleDecision, backpressure_sleep
from logpipe.application.pipeline import Pipeline
from _support import wait_until
from logpipe.infrastructure.sinks import NullSink

UP, DOWN, HOLD = ScaleDecision.UP, ScaleDecision.DOWN, ScaleDecision.HOLD
JOIN = 10.0
CAPACITY = 100


class Setup:
    """A watched ring, a pool (workers on another ring), metrics, a captured console, a scaler."""

    def __init__(
        self,
        *,
        min_workers: int = 1,
        max_workers: int = 3,
        interval: float = 60.0,
        capacity: int = CAPACITY,
        scale_down_window: int = 1,
        external_pressure=None,
        clock: FakeClock | None = None,
    ) -> None:
        self.ring = RingBuffer(capacity)
        self.clock = clock
        self.work_ring = RingBuffer(10)
        self.metrics = Metrics()
        self.out = io.StringIO()
        self.console = Console(self.out)
        self.built: list[Worker] = []
        self.pool = WorkerPool(self._make, min_workers=min_workers, max_workers=max_workers)
        self.pool.start()
        self.scaler = AutoScaler(
            self.ring,
            self.pool,
            metrics=self.metrics,
            console=self.console,
            interval=interval,
            scale_up=0.8,
            scale_down=0.2,
            scale_down_window=scale_down_window,
            external_pressure=external_pressure,
            clock=clock,
        )

    def _make(self, worker_id: int) -> Worker:
        worker = Worker(
            worker_id,
            self.work_ring,
            NullSink(),
            batch_size=10,
            batch_timeout=30.0,
            metrics=Metrics(),
            console=Console(io.StringIO()),
        )
        self.built.append(worker)
        return worker

    def occupy(self, records: int) -> None:
        """Set the watched ring's length to ``records`` exactly."""
        while len(self.ring) > records:
            self.ring.get_nowait()
        while len(self.ring) < records:
            self.ring.put(b"x")
        assert self.ring.usage == pytest.approx(records / self.ring.capacity)

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def teardown(self) -> None:
        self.scaler.stop(JOIN)
        assert not self.scaler._thread.is_alive()
        self.work_ring.close()
        assert self.pool.join_all(JOIN) == []
        assert not any(w.alive for w in self.built)


@pytest.fixture
def setups():
    made: list[Setup] = []

    def factory(**kwargs) -> Setup:
        setup = Setup(**kwargs)
        made.append(setup)
        return setup

    yield factory
    for setup in made:
        setup.teardown()


def test_above_scale_up_adds_a_worker(setups) -> None:
    """Usage 0.90 > 0.8: one worker more, the spec's line printed, scale_ups counted."""
    s = setups()
    s.occupy(90)
    assert s.scaler.step() is UP
    assert len(s.pool) == 2
    assert s.lines() == ["Scaler: scaling UP, workers = 2"]
    assert s.metrics.scale_ups.value == 1 and s.metrics.scale_downs.value == 0


def test_below_scale_down_removes_a_worker(setups) -> None:
    """Usage 0.10 < 0.2 with 3 workers: one fewer, 'Scaler: scaling Down, workers = 2' printed."""
    s = setups()
    s.pool.add()
    s.pool.add()
    s.occupy(10)
    assert s.scaler.step() is DOWN
    assert len(s.pool) == 2
    assert s.lines() == ["Scaler: scaling Down, workers = 2"]
    assert s.metrics.scale_downs.value == 1 and s.metrics.scale_ups.value == 0
    removed = [w for w in s.built if w not in s.pool.workers]
    assert len(removed) == 1 and not removed[0].alive


@pytest.mark.parametrize("records", [20, 50, 80])
def test_between_thresholds_holds(setups, records: int) -> None:
    """Usage in [0.2, 0.8] (edges included, bounds are strict) and no sleeps: no change, no line."""
    s = setups()
    s.pool.add()
    s.occupy(records)
    assert s.scaler.step() is HOLD
    assert len(s.pool) == 2
    assert s.lines() == []


def test_at_max_a_full_queue_changes_nothing(setups) -> None:
    """At max_workers, usage 1.0 is HOLD: the pool stays at max and nothing is printed."""
    s = setups(max_workers=2)
    s.pool.add()
    s.occupy(100)
    assert s.scaler.step() is HOLD
    assert len(s.pool) == 2
    assert s.lines() == [] and s.metrics.scale_ups.value == 0


def test_at_min_an_empty_queue_changes_nothing(setups) -> None:
    """At min_workers, usage 0.0 is HOLD: the pool stays at min and nothing is printed."""
    s = setups(min_workers=1)
    s.occupy(0)
    assert s.scaler.step() is HOLD
    assert len(s.pool) == 1
    assert s.lines() == [] and s.metrics.scale_downs.value == 0


def test_repeated_steps_climb_to_max_then_hold(setups) -> None:
    """Under steady pressure successive steps print workers = 2, 3, then hold at max."""
    s = setups(max_workers=3)
    s.occupy(95)
    assert [s.scaler.step() for _ in range(4)] == [UP, UP, HOLD, HOLD]
    assert s.lines() == ["Scaler: scaling UP, workers = 2", "Scaler: scaling UP, workers = 3"]


def test_backpressure_sleeps_count_as_pressure(setups) -> None:
    """The flaw fix: usage 0.79 (not above 0.8) but new producer sleeps -> UP; no new sleeps at 0.5 -> HOLD."""
    s = setups()
    s.occupy(79)
    s.metrics.backpressure_sleeps.add(12)
    assert s.scaler.step() is UP
    assert len(s.pool) == 2
    assert s.lines() == ["Scaler: scaling UP, workers = 2"]
    s.occupy(50)  # the sleeps counted so far are history now
    assert s.scaler.step() is HOLD
    assert len(s.pool) == 2
    s.occupy(79)
    assert s.scaler.step() is HOLD  # the same 0.79 without fresh sleeps holds
    s.metrics.backpressure_sleeps.add(1)
    assert s.scaler.step() is UP
    assert len(s.pool) == 3


def test_sleeps_before_the_scaler_existed_are_not_pressure(setups) -> None:
    """Sleeps counted before the scaler was built do not trigger its first step."""
    s = setups()
    s.metrics.backpressure_sleeps.add(100)
    s.scaler = AutoScaler(
        s.ring, s.pool, metrics=s.metrics, console=s.console, interval=60.0, scale_up=0.8, scale_down=0.2
    )
    s.occupy(50)
    assert s.scaler.step() is HOLD
    assert len(s.pool) == 1


def test_fresh_sleeps_block_a_scale_down(setups) -> None:
    """An almost empty queue while the producer was still being slowed is not a reason to shrink."""
    s = setups()
    s.pool.add()
    s.occupy(5)
    s.metrics.backpressure_sleeps.add(3)
    assert s.scaler.step() is not DOWN
    assert len(s.pool) >= 2


def test_thread_scales_every_interval(setups) -> None:
    """Started, the scaler steps on its own every interval: usage 0.9 takes the pool to max."""
    s = setups(max_workers=3, interval=0.01)
    s.occupy(90)
    s.scaler.start()
    assert wait_until(lambda: len(s.pool) == 3)
    assert wait_until(lambda: len(s.lines()) == 2)
    assert s.lines() == ["Scaler: scaling UP, workers = 2", "Scaler: scaling UP, workers = 3"]


def test_stop_joins_the_thread_and_no_scaling_follows(setups) -> None:
    """After stop() the thread is dead and neither its loop nor step() changes the pool."""
    s = setups(max_workers=3, interval=0.01)
    s.pool.add()
    s.occupy(50)
    s.scaler.start()
    time.sleep(0.05)
    assert len(s.pool) == 2 and s.lines() == []
    s.scaler.stop(JOIN)
    assert not s.scaler._thread.is_alive()
    s.occupy(0)  # would be a scale-down
    time.sleep(0.1)  # ten intervals
    assert s.scaler.step() is HOLD
    s.occupy(100)  # would be a scale-up
    s.metrics.backpressure_sleeps.add(5)
    assert s.scaler.step() is HOLD
    assert len(s.pool) == 2
    assert s.lines() == []
    assert s.metrics.scale_ups.value == 0 and s.metrics.scale_downs.value == 0


# --- the scale-down window, in steps ----------------------------------------------


def test_window_holds_the_first_downs_then_removes_one_per_step(setups) -> None:
    """scale_down_window=3 at usage 0.1: HOLD, HOLD, then Down to 2 and Down to 1, one line each."""
    s = setups(scale_down_window=3)
    s.pool.add()
    s.pool.add()
    s.occupy(10)
    assert [s.scaler.step() for _ in range(5)] == [HOLD, HOLD, DOWN, DOWN, HOLD]
    assert s.lines() == ["Scaler: scaling Down, workers = 2", "Scaler: scaling Down, workers = 1"]
    assert s.metrics.scale_downs.value == 2


def test_a_busy_interval_restarts_the_window(setups) -> None:
    """One interval between thresholds in the middle of a quiet spell restarts the window's count."""
    s = setups(scale_down_window=2)
    s.pool.add()
    s.occupy(10)
    assert s.scaler.step() is HOLD
    s.occupy(50)
    assert s.scaler.step() is HOLD
    s.occupy(10)
    assert s.scaler.step() is HOLD  # counting again from one
    assert s.scaler.step() is DOWN
    assert len(s.pool) == 1


def test_work_that_needs_the_pool_blocks_a_scale_down(setups) -> None:
    """An empty queue, but the workers flushed 1.8 s per second of the fake clock: 2 workers stay (1.8 > 0.8 * 1)."""
    clock = FakeClock()
    s = setups(clock=clock)
    s.pool.add()
    s.occupy(0)
    for _ in range(3):
        clock.advance(1.0)
        for _ in range(36):
            s.metrics.flush_duration.observe(0.05)  # 36 flushes of 50 ms in the second
        assert s.scaler.step() is HOLD
    assert len(s.pool) == 2
    clock.advance(1.0)
    s.metrics.flush_duration.observe(0.05)  # the load is gone: 0.05 workers' worth
    assert s.scaler.step() is DOWN
    assert len(s.pool) == 1


# --- external pressure -------------------------------------------------------------


def test_external_pressure_adds_workers_and_blocks_scale_down(setups) -> None:
    """external_pressure() True: UP even with an empty ring; False again: the usual rule (DOWN at 0.0)."""
    lagging = [True]
    calls = []

    def pressure() -> bool:
        calls.append(1)
        return lagging[0]

    s = setups(external_pressure=pressure)
    s.occupy(0)
    assert s.scaler.step() is UP
    assert s.scaler.step() is UP
    assert len(s.pool) == 3 and len(calls) == 2  # asked once per step
    assert s.scaler.step() is HOLD  # at max_workers
    lagging[0] = False
    assert s.scaler.step() is DOWN
    assert len(s.pool) == 2
    assert s.lines() == [
        "Scaler: scaling UP, workers = 2",
        "Scaler: scaling UP, workers = 3",
        "Scaler: scaling Down, workers = 2",
    ]


def test_a_failing_external_pressure_is_reported_once_and_counts_as_none(setups) -> None:
    """A hook that raises does not stop the scaling: one line names the error, and the ring decides."""

    def broken() -> bool:
        raise ConnectionError("lag unknown: server down")

    s = setups(external_pressure=broken)
    s.occupy(90)
    assert s.scaler.step() is UP
    s.occupy(50)
    assert s.scaler.step() is HOLD
    assert s.lines() == [
        "Scaler: external pressure unreadable (ConnectionError('lag unknown: server down')); counted as none",
        "Scaler: scaling UP, workers = 2",
    ]


def test_pipeline_hands_its_external_pressure_to_the_scaler() -> None:
    """Pipeline(external_pressure=...) reaches the autoscaler: True there adds a worker with an empty ring."""
    pipeline = Pipeline(
        PipelineConfig(scale_down_window=4), NullSink(), console=Console(io.StringIO()), external_pressure=lambda: True
    )
    pipeline.pool.start()
    try:
        assert pipeline.scaler.step() is UP
        assert len(pipeline.pool) == 2
    finally:
        pipeline.ring.close()
        assert pipeline.pool.join_all(JOIN) == []


def test_scale_down_window_below_one_is_refused() -> None:
    """AutoScaler(scale_down_window=0) is a one-line ValueError naming the rule."""
    ring = RingBuffer(10)
    pool = WorkerPool(lambda i: None, min_workers=1, max_workers=2)  # never started
    with pytest.raises(ValueError, match=r"scale_down_window must be >= 1 interval, not 0"):
        AutoScaler(ring, pool, metrics=Metrics(), console=Console(io.StringIO()), interval=1.0,
                   scale_up=0.8, scale_down=0.2, scale_down_window=0)  # fmt: skip


# --- under a modelled load, on the injected clock ------------------------------------

RECORD = b'{"msg": "hello from producer", "level": "INFO", "ts": 1712345678123456, "seq": 123456}'
SLICE = 0.001  # seconds of the fake clock per model step


class LoadModel:
    """A producer and workers acting on the scaler's real ring, 1 ms of fake time at a time.

    The producer is due ``rate`` logs/s and consults the real backpressure
    table before each log, as GeneratorSource does: while it sleeps it
    writes one log per sleep (counted in backpressure_sleeps). The workers
    (``len(pool)`` of them) each write ``per_worker`` records/s while the
    ring holds any; every slice's work is observed in flush_duration, as a
    worker's flush is. Every ``interval`` the scaler takes one step.
    """

    def __init__(self, s: Setup, clock: FakeClock, *, per_worker: float, interval: float = 0.5) -> None:
        self.s, self.clock = s, clock
        self.per_worker = per_worker
        self.interval = interval
        self._due = self._capacity = 0.0  # fractions of a log / of a record carried over
        self.sizes: list[int] = []
        self.decisions: list[ScaleDecision] = []

    def run(self, rate: float, intervals: int) -> None:
        for _ in range(intervals):
            for _ in range(round(self.interval / SLICE)):
                self._slice(rate)
            self.decisions.append(self.s.scaler.step())
            self.sizes.append(len(self.s.pool))

    def _slice(self, rate: float) -> None:
        ring, metrics = self.s.ring, self.s.metrics
        pause = backpressure_sleep(ring.usage)
        if pause:
            metrics.backpressure_sleeps.add()
        self._due += SLICE / pause if pause else rate * SLICE
        logs = int(self._due)
        if logs:
            self._due -= ring.put_many([RECORD] * logs, block=False)  # a full ring makes it wait
        self._capacity += len(self.s.pool) * self.per_worker * SLICE
        records = min(len(ring), int(self._capacity))
        if records:
            taken = len(ring.get_batch(records, timeout=0))
            self._capacity -= taken
            metrics.flush_duration.observe(taken / self.per_worker)
        if len(ring) == 0:
            self._capacity = min(self._capacity, 1.0)  # idle workers bank no time
        self.clock.advance(SLICE)


def changes(sizes: list[int]) -> int:
    return sum(a != b for a, b in zip(sizes, sizes[1:]))


@pytest.mark.parametrize("window", [1, PipelineConfig().scale_down_window])
@pytest.mark.parametrize(("rate", "per_worker", "needed"), [(10_000, 2450, 5), (6000, 2450, 3)])
def test_steady_load_settles_and_stays(setups, rate: float, per_worker: float, needed: int, window: int) -> None:
    """A load that needs k workers: within k + 3 intervals the pool is at k +- 1, then changes at most once in 30.

    10,000 logs/s at 2450 records/s per worker (50-record batches, 20.4 ms
    flushes) is the README's main command; before the scale-down weighed the
    work, the same model went 3 -> 4 -> 5 -> 4 -> 3 every four intervals.
    Weighing the work settles it even without a window (window 1).
    """
    clock = FakeClock()
    s = setups(max_workers=10, capacity=1500, scale_down_window=window, clock=clock)
    model = LoadModel(s, clock, per_worker=per_worker)
    model.run(rate, needed + 3 + 30)
    settled = model.sizes[needed + 2 :]
    assert all(needed - 1 <= n <= needed + 1 for n in settled), model.sizes
    assert changes(settled) <= 1, model.sizes
    ups = sum(line.startswith("Scaler: scaling UP") for line in s.lines())
    downs = sum(line.startswith("Scaler: scaling Down") for line in s.lines())
    assert ups - downs == model.sizes[-1] - 1  # every change printed, in the spec's words


def test_load_step_up_and_down_is_followed(setups) -> None:
    """1500/s, then 10,000/s, then 1500/s again: UP from the first loaded interval, DOWN only after the 6-interval window."""
    window = 6
    clock = FakeClock()
    s = setups(max_workers=10, capacity=1500, scale_down_window=window, clock=clock)
    model = LoadModel(s, clock, per_worker=2450)
    model.run(1500, 5)
    assert model.sizes == [1] * 5
    model.run(10_000, 15)
    assert model.sizes[5] == 2  # promptly: the first interval of the load adds a worker
    assert 4 <= model.sizes[-1] <= 6 and changes(model.sizes[12:]) <= 1, model.sizes
    peak = model.sizes[-1]
    model.run(1500, window + peak + 5)
    after = model.sizes[20:]
    assert after[: window - 1] == [peak] * (window - 1), model.sizes  # the window holds
    assert after[window - 1] == peak - 1, model.sizes  # then one worker per interval
    assert after[window + peak - 2 :] == [1] * (len(after) - window - peak + 2), model.sizes
