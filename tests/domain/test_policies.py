"""Tests for logpipe.domain.policies: backpressure, scaling and pacing, with numbers alone."""

from __future__ import annotations

import pytest

from logpipe.domain.clock import FakeClock
from logpipe.domain.policies import (
    PacingSchedule,
    ScaleDecision,
    backpressure_sleep,
    decide_scaling,
)

UP, DOWN, HOLD = ScaleDecision.UP, ScaleDecision.DOWN, ScaleDecision.HOLD


# --- backpressure sleep table ------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "sleep"),
    [
        (0.0, 0.0),
        (0.5, 0.0),
        (0.80, 0.0),
        (0.8000001, 0.0005),
        (0.85, 0.0005),
        (0.90, 0.0005),
        (0.9000001, 0.001),
        (0.95, 0.001),
        (0.9500001, 0.002),
        (1.0, 0.002),
    ],
)
def test_backpressure_sleep_table(usage: float, sleep: float) -> None:
    """The spec's table: 2 ms above 95%, 1 ms above 90%, 500 µs above 80%, strictly above."""
    assert backpressure_sleep(usage) == sleep


def test_backpressure_at_exactly_80_percent_of_a_ring() -> None:
    """A 1500-record queue holding 1200 (usage exactly 0.8) does not slow the producer."""
    assert backpressure_sleep(1200 / 1500) == 0.0
    assert backpressure_sleep(1201 / 1500) == 0.0005


# --- scaling decision ----------------------------------------------------------


def decide(usage: float, workers: int, sleeps: int = 0, lo: int = 1, hi: int = 10) -> ScaleDecision:
    return decide_scaling(
        usage,
        workers,
        min_workers=lo,
        max_workers=hi,
        scale_up=0.8,
        scale_down=0.2,
        backpressure_sleeps=sleeps,
    )


def test_scale_up_above_threshold() -> None:
    """Usage above scale-up adds a worker."""
    assert decide(0.81, 3) is UP


def test_scale_up_stops_at_max() -> None:
    """At max workers, even a full queue holds."""
    assert decide(1.0, 10) is HOLD
    assert decide(1.0, 9) is UP


def test_usage_exactly_at_threshold_holds_without_sleeps() -> None:
    """Usage of exactly 0.8 and no backpressure is not a reason to grow."""
    assert decide(0.8, 3) is HOLD


def test_backpressure_sleeps_scale_up_below_threshold() -> None:
    """A producer slowed in the interval means UP though usage sits at 0.8 (the Go stall)."""
    assert decide(0.8, 3, sleeps=1) is UP
    assert decide(0.5, 3, sleeps=40) is UP


def test_backpressure_sleeps_respect_max() -> None:
    """Backpressure never takes the pool above max workers."""
    assert decide(0.8, 10, sleeps=100) is HOLD


def test_scale_down_below_threshold() -> None:
    """Usage below scale-down, with no backpressure, removes a worker."""
    assert decide(0.1, 3) is DOWN


def test_scale_down_stops_at_min() -> None:
    """At min workers an idle queue holds."""
    assert decide(0.0, 1) is HOLD
    assert decide(0.0, 3, lo=3) is HOLD
    assert decide(0.0, 4, lo=3) is DOWN


def test_no_scale_down_while_producer_is_slowed() -> None:
    """Sleeps in the interval forbid scaling down even if the queue looks empty now."""
    assert decide(0.1, 3, sleeps=1) is UP
    assert decide(0.1, 10, sleeps=1) is HOLD


@pytest.mark.parametrize("usage", [0.2, 0.5, 0.79])
def test_between_thresholds_holds(usage: float) -> None:
    """Usage from scale-down (inclusive) to scale-up (inclusive) changes nothing."""
    assert decide(usage, 3) is HOLD


def test_pool_outside_bounds_steps_back() -> None:
    """A pool below min steps up and above max steps down, whatever the load."""
    assert decide(0.0, 0, lo=1) is UP
    assert decide(1.0, 12, hi=10, sleeps=5) is DOWN


def test_min_equals_max_always_holds() -> None:
    """With min = max there is nothing to decide."""
    assert decide(1.0, 4, sleeps=3, lo=4, hi=4) is HOLD
    assert decide(0.0, 4, lo=4, hi=4) is HOLD


def test_throttled_producer_stalls_usage_only_scaler() -> None:
    """Usage pinned at 0.8 by backpressure: usage alone never scales up; counting sleeps does."""
    workers_usage_only = workers_with_sleeps = 1
    for _ in range(20):  # 20 scaler intervals of a producer held at 80%
        if decide(0.8, workers_usage_only) is UP:
            workers_usage_only += 1
        if decide(0.8, workers_with_sleeps, sleeps=500) is UP:
            workers_with_sleeps += 1
    assert workers_usage_only == 1
    assert workers_with_sleeps == 10


# --- pacing schedule -------------------------------------------------------------


def run_paced(schedule: PacingSchedule, clock: FakeClock, until: float, *, tick: float) -> int:
    """Drive a schedule like the producer does, with sleeps rounded up to ``tick``."""
    produced = 0
    while clock.monotonic() < until:
        produced += schedule.take(clock.monotonic())
        clock.sleep(max(schedule.wait(clock.monotonic()), tick))
    return produced


@pytest.mark.parametrize("start", [0.0, 123_456.789])
def test_pacing_sustains_10000_per_second_with_1ms_sleeps(start: float) -> None:
    """At 100us, over one simulated second of ~1 ms sleeps, 10,000 logs are due, not ~1,000."""
    clock = FakeClock(start)
    schedule = PacingSchedule(100e-6, start=clock.monotonic())
    produced = run_paced(schedule, clock, start + 1.0, tick=0.001)
    assert 9_990 <= produced <= 10_001
    assert len(clock.sleeps) <= 1_001  # one sleep per ~10 logs, not one per log
    # Logs are due at 0, 100us, ..., 1s: exactly 10,001 by the end of the second.
    assert produced + schedule.take(start + 1.0) == 10_001
    assert schedule.skipped == 0


def test_pacing_first_log_is_due_at_start() -> None:
    """The first log is due at once; the next one interval later."""
    schedule = PacingSchedule(0.001, start=10.0)
    assert schedule.take(10.0) == 1
    assert schedule.take(10.0) == 0
    assert schedule.wait(10.0) == pytest.approx(0.001)
    assert schedule.wait(10.0004) == pytest.approx(0.0006)
    assert schedule.take(10.001) == 1


def test_pacing_nothing_due_before_start() -> None:
    """Before the start time nothing is due, and wait says how long until it is."""
    schedule = PacingSchedule(0.001, start=10.0)
    assert schedule.due(9.5) == 0
    assert schedule.wait(9.5) == pytest.approx(0.5)


def test_pacing_due_does_not_consume() -> None:
    """due() reports without claiming; take() claims."""
    schedule = PacingSchedule(0.01, start=0.0)
    assert schedule.due(0.095) == 10
    assert schedule.due(0.095) == 10
    assert schedule.take(0.095) == 10
    assert schedule.due(0.095) == 0


def test_pacing_take_limit_leaves_the_rest_due() -> None:
    """take(limit=n) hands out at most n; the remainder stays due."""
    schedule = PacingSchedule(0.01, start=0.0)
    assert schedule.take(0.095, limit=4) == 4
    assert schedule.take(0.095) == 6
    assert schedule.wait(0.095) == pytest.approx(0.005)


def test_pacing_catch_up_is_capped() -> None:
    """After a 5 s stall at 100us, at most 1 s worth (10,000) is due; the rest is skipped."""
    schedule = PacingSchedule(100e-6, start=0.0, max_catchup=1.0)
    assert schedule.max_burst == 10_000
    assert schedule.take(0.0) == 1
    assert schedule.take(5.0) == 10_000
    assert schedule.skipped == 40_000
    # Back on schedule: one interval later, one more log.
    assert schedule.take(5.0) == 0
    assert schedule.take(5.0 + 100e-6) == 1


def test_pacing_cap_is_at_least_one_log() -> None:
    """A catch-up cap shorter than the interval still lets one log through."""
    schedule = PacingSchedule(1.0, start=0.0, max_catchup=0.0)
    assert schedule.max_burst == 1
    assert schedule.take(10.0) == 1
    assert schedule.skipped == 10


def test_pacing_postpone_does_not_create_debt() -> None:
    """Time slept for backpressure, passed to postpone, is not paid back as a burst."""
    schedule = PacingSchedule(0.001, start=0.0)
    assert schedule.take(0.0) == 1
    schedule.postpone(0.002)  # the producer slept 2 ms for backpressure
    assert schedule.take(0.0025) == 0
    assert schedule.take(0.003) == 1


@pytest.mark.parametrize("start", [987_654.321, 1e8 + 0.7])
@pytest.mark.parametrize("interval", [100e-6, 3e-5, 1e-6])
def test_pacing_sleeping_wait_always_makes_progress(start: float, interval: float) -> None:
    """wait() is 0 only when a log is due, and sleeping it reaches the next log: no spinning."""
    schedule = PacingSchedule(interval, start=start)
    now = start
    for _ in range(2_000):
        assert schedule.take(now) >= 1
        delay = schedule.wait(now)
        assert delay > 0 or schedule.due(now) > 0
        now += delay


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan"), float("inf")])
def test_pacing_rejects_bad_interval(interval: float) -> None:
    """An interval must be finite and > 0 (rate 0 runs unpaced, without a schedule)."""
    with pytest.raises(ValueError, match="interval"):
        PacingSchedule(interval, start=0.0)
