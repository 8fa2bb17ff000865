"""Tests for logpipe.application.autoscaler: one scaling step at a time, and the scaler thread.

The scaler reads a real RingBuffer filled to a chosen occupancy with put().
Its pool's workers consume a *different* ring, so they cannot change the
occupancy under test.
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
from logpipe.domain.policies import ScaleDecision
from _support import wait_until
from logpipe.infrastructure.sinks import NullSink

UP, DOWN, HOLD = ScaleDecision.UP, ScaleDecision.DOWN, ScaleDecision.HOLD
JOIN = 10.0
CAPACITY = 100


class Setup:
    """A watched ring, a pool (workers on another ring), metrics, a captured console, a scaler."""

    def __init__(self, *, min_workers: int = 1, max_workers: int = 3, interval: float = 60.0) -> None:
        self.ring = RingBuffer(CAPACITY)
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
        assert self.ring.usage == pytest.approx(records / CAPACITY)

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
