"""Tests for logpipe.domain.policies: backpressure, scaling and pacing, with numbers alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logpipe.domain.clock import FakeClock
from logpipe.domain.policies import (
    PacingSchedule,
    ScaleDecision,
    backpressure_headroom,
    backpressure_sleep,
    decide_scaling,
    stabilize_scale_down,
)

UP, DOWN, HOLD = ScaleDecision.UP, ScaleDecision.DOWN, ScaleDecision.HOLD


# --- backpressure sleep table ------------------------------------------------


@given(capacity=st.integers(1, 100_000), data=st.data())
def test_headroom_is_every_record_that_needs_no_sleep_before_it(capacity: int, data: st.DataObject) -> None:
    """backpressure_headroom(length, capacity) records go in without a sleep, and the next one needs one."""
    length = data.draw(st.integers(0, capacity))
    room = backpressure_headroom(length, capacity)
    assert room >= 0
    assert all(backpressure_sleep((length + k) / capacity) == 0 for k in (0, room - 1) if 0 <= k < room)
    assert backpressure_sleep((length + room) / capacity) > 0


@pytest.mark.parametrize(("length", "capacity", "room"), [
    (0, 1500, 1201), (1200, 1500, 1), (1201, 1500, 0), (0, 10, 9), (0, 1, 1), (1, 1, 0), (0, 3, 3), (3, 3, 0),
])  # fmt: skip
def test_headroom_at_the_bounds(length: int, capacity: int, room: int) -> None:
    """80% of 1500 is 1200: a queue of 1200 takes one more (1200/1500 is not above 80%), not two."""
    assert backpressure_headroom(length, capacity) == room



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


def test_scale_down_only_if_the_smaller_pool_carries_the_work() -> None:
    """DOWN needs busy_workers < scale_up * (workers - 1): 4.1 workers' worth of work keeps 5 (4.1/4 > 0.8)."""

    def with_work(busy: float, workers: int) -> ScaleDecision:
        return decide_scaling(
            0.0, workers, min_workers=1, max_workers=10, scale_up=0.8, scale_down=0.2, busy_workers=busy
        )

    assert with_work(4.1, 5) is HOLD
    assert with_work(4.1, 6) is HOLD  # 4.1 / 5 = 0.82: still too busy
    assert with_work(4.1, 7) is DOWN  # 4.1 / 6 = 0.68
    assert with_work(3.2, 5) is HOLD  # exactly 0.8 of the smaller pool: the bound is strict
    assert with_work(3.19, 5) is DOWN
    assert with_work(0.0, 2) is DOWN  # no work at all: the queue's word is enough
    assert with_work(0.0, 1) is HOLD  # still never below min


def test_unmeasured_work_leaves_the_usage_rule() -> None:
    """busy_workers=None (nothing measured) scales down on usage alone, as the spec's rule says."""
    assert decide_scaling(0.1, 5, min_workers=1, max_workers=10, scale_up=0.8, scale_down=0.2) is DOWN


def test_work_never_blocks_a_scale_up() -> None:
    """Measured work is weighed only before a scale-down: pressure still adds a worker."""
    assert decide_scaling(
        0.9, 3, min_workers=1, max_workers=10, scale_up=0.8, scale_down=0.2, busy_workers=0.1
    ) is UP


def test_external_pressure_counts_like_a_sleep() -> None:
    """external_pressure=True: UP at any usage, never DOWN, and never above max."""

    def pressed(usage: float, workers: int, hi: int = 10) -> ScaleDecision:
        return decide_scaling(
            usage, workers, min_workers=1, max_workers=hi, scale_up=0.8, scale_down=0.2,
            external_pressure=True,
        )  # fmt: skip

    assert pressed(0.5, 3) is UP
    assert pressed(0.0, 3) is UP  # an empty ring with a lagging consumer is not idle
    assert pressed(0.0, 10) is HOLD
    assert pressed(1.0, 4, hi=4) is HOLD


# --- the scale-down stabilization window -------------------------------------------


def run_window(recommendations: list[ScaleDecision], window: int) -> list[ScaleDecision]:
    streak, acted = 0, []
    for recommendation in recommendations:
        decision, streak = stabilize_scale_down(recommendation, streak, window=window)
        acted.append(decision)
    return acted


def test_window_holds_a_down_until_it_has_lasted() -> None:
    """With window 3 the first two DOWNs hold, the third acts, and each DOWN after it acts too."""
    assert run_window([DOWN] * 6, 3) == [HOLD, HOLD, DOWN, DOWN, DOWN, DOWN]


@pytest.mark.parametrize("interruption", [UP, HOLD])
def test_any_other_recommendation_restarts_the_window(interruption: ScaleDecision) -> None:
    """An UP or HOLD between DOWNs resets the count: DOWN DOWN x DOWN DOWN DOWN acts on the last only."""
    acted = run_window([DOWN, DOWN, interruption, DOWN, DOWN, DOWN], 3)
    assert acted == [HOLD, HOLD, interruption, HOLD, HOLD, DOWN]


def test_window_never_delays_a_scale_up() -> None:
    """UP passes at once whatever the window and the streak before it."""
    assert stabilize_scale_down(UP, 0, window=10) == (UP, 0)
    assert stabilize_scale_down(UP, 9, window=10) == (UP, 0)
    assert stabilize_scale_down(HOLD, 9, window=10) == (HOLD, 0)


def test_window_of_one_is_the_unstabilized_rule() -> None:
    """window=1 acts on every DOWN at once (the behaviour before the window existed)."""
    assert run_window([DOWN, HOLD, DOWN, DOWN], 1) == [DOWN, HOLD, DOWN, DOWN]


@pytest.mark.parametrize("window", [0, -1])
def test_window_below_one_is_refused(window: int) -> None:
    """A window under one interval is a programming error, named in the message."""
    with pytest.raises(ValueError, match=r"scale-down window must be >= 1 interval, not -?\d"):
        stabilize_scale_down(DOWN, 0, window=window)


# --- the policy against a modelled load ---------------------------------------------
#
# A fluid model in 1 ms slices: a producer due `rate` logs/s that consults
# the real backpressure table (while it sleeps, it writes one log per sleep),
# a 1500-record queue, and workers that each write `per_worker` records/s
# while there is work (2450/s is 50-record batches with 20.4 ms flushes, the
# README's `--io-latency 20ms`). Every 500 ms the policy decides, from the
# same numbers the autoscaler reads: usage, sleeps, work done.

SLICE = 0.001


def simulate(
    rates: list[float], per_worker: float, *, window: int, weigh_work: bool = True, interval: float = 0.5
) -> list[int]:
    """The pool's size after each interval; ``rates[i]`` is the load during interval i."""
    capacity, queue, workers, streak, sizes = 1500, 0.0, 1, 0, []
    for rate in rates:
        sleeps, written = 0, 0.0
        for _ in range(round(interval / SLICE)):
            pause = backpressure_sleep(queue / capacity)
            sleeps += pause > 0
            queue = min(capacity, queue + (SLICE / pause if pause else rate * SLICE))
            served = min(queue, workers * per_worker * SLICE)
            queue -= served
            written += served
        recommendation = decide_scaling(
            queue / capacity, workers, min_workers=1, max_workers=10, scale_up=0.8, scale_down=0.2,
            backpressure_sleeps=sleeps,
            busy_workers=written / per_worker / interval if weigh_work else None,
        )  # fmt: skip
        decision, streak = stabilize_scale_down(recommendation, streak, window=window)
        workers += {UP: 1, DOWN: -1}.get(decision, 0)
        sizes.append(workers)
    return sizes


def changes(sizes: list[int]) -> int:
    return sum(a != b for a, b in zip(sizes, sizes[1:]))


@pytest.mark.parametrize("window", [1, 6])
@pytest.mark.parametrize(("rate", "per_worker", "needed"), [(10_000, 2450, 5), (6000, 2450, 3), (10_000, 1300, 8)])
def test_steady_load_settles(rate: float, per_worker: float, needed: int, window: int) -> None:
    """A steady load that needs k workers: within k + 3 intervals the pool is at k +- 1 and stays, changing at most once in 30."""
    sizes = simulate([rate] * (needed + 3 + 30), per_worker, window=window)
    settled = sizes[needed + 2 :]
    assert all(needed - 1 <= n <= needed + 1 for n in settled), sizes
    assert changes(settled) <= 1, sizes


def test_usage_alone_flaps_under_the_same_load() -> None:
    """The cause, reproduced: without weighing the work, 10,000 logs/s at 2450/worker cycles 3-4-5-4-3 for ever."""
    sizes = simulate([10_000] * 40, 2450, window=1, weigh_work=False)
    assert changes(sizes[8:38]) >= 20, sizes
    assert set(sizes[8:]) == {3, 4, 5}, sizes


def test_a_window_alone_only_slows_the_flapping() -> None:
    """A 6-interval window without weighing the work still drops to k-1 every ~9 intervals: it treats the symptom."""
    sizes = simulate([10_000] * 40, 2450, window=6, weigh_work=False)
    assert changes(sizes[8:38]) > 1, sizes


def test_step_up_then_down_is_followed() -> None:
    """1500/s -> 10,000/s -> 1500/s: one step UP per interval at once, DOWN only after the window, then one per interval."""
    window = 6
    sizes = simulate([1500] * 5 + [10_000] * 15 + [1500] * 20, 2450, window=window)
    assert sizes[:5] == [1] * 5
    assert sizes[5:9] == [2, 3, 4, 5]  # promptly: the first interval of the load adds a worker
    assert sizes[9:20] == [5] * 11
    assert sizes[20 : 20 + window - 1] == [5] * (window - 1)  # held while the window lasts
    assert sizes[20 + window - 1 : 20 + window + 3] == [4, 3, 2, 1]
    assert sizes[20 + window + 3 :] == [1] * (20 - window - 3)


def test_a_lull_shorter_than_the_window_keeps_the_pool() -> None:
    """Two quiet intervals inside a steady load cost no worker with a 6-interval window (and cost at least one without it)."""
    rates = [10_000] * 12 + [1500] * 2 + [10_000] * 12
    with_window = simulate(rates, 2450, window=6)
    assert changes(with_window[6:]) == 0, with_window
    without = simulate(rates, 2450, window=1)
    assert min(without[12:14]) < 5, without


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
