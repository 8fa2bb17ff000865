"""The pipeline's decisions, as pure functions of numbers.

Nothing here reads a clock or a queue: the producer and the autoscaler read
occupancy and time, and ask these functions what to do. That keeps every
threshold testable at its exact edge.
"""

from __future__ import annotations

import enum
import math

__all__ = [
    "BACKPRESSURE_TABLE",
    "PacingSchedule",
    "ScaleDecision",
    "backpressure_headroom",
    "backpressure_sleep",
    "decide_scaling",
    "stabilize_scale_down",
]

# (usage strictly above, producer sleep in seconds), most severe first: the
# specification's table. The sleep grows with the pressure so the producer
# yields more the closer the queue is to full, before a put would block.
BACKPRESSURE_TABLE: tuple[tuple[float, float], ...] = (
    (0.95, 0.002),
    (0.90, 0.001),
    (0.80, 0.0005),
)


def backpressure_sleep(usage: float) -> float:
    """How long the producer sleeps before its next log, given queue usage.

    Args:
        usage: queue occupancy, ``len / capacity``, 0.0 to 1.0.

    Returns:
        2 ms above 95%, 1 ms above 90%, 500 µs above 80%, else 0. The bounds
        are strict: a queue exactly 80% full does not slow the producer.
    """
    for above, sleep in BACKPRESSURE_TABLE:
        if usage > above:
            return sleep
    return 0.0


def backpressure_headroom(length: int, capacity: int) -> int:
    """How many more records a queue holding ``length`` of ``capacity`` takes before the producer must sleep.

    The records that can go in one after another with no sleep before any
    of them: each sees the queue at or below the table's lowest bound (by
    the same comparison as :func:`backpressure_sleep`, on ``len /
    capacity``). 0 when the next record already needs a sleep.
    """
    lowest = BACKPRESSURE_TABLE[-1][0]
    room = max(0, int(lowest * capacity) - length + 1)  # the estimate; float rounding is settled below
    while room > 0 and backpressure_sleep((length + room - 1) / capacity):
        room -= 1
    while not backpressure_sleep((length + room) / capacity):
        room += 1
    return room


class ScaleDecision(enum.Enum):
    """What the autoscaler does this interval: one worker more, fewer, or none."""

    UP = "up"
    DOWN = "down"
    HOLD = "hold"


def decide_scaling(
    usage: float,
    workers: int,
    *,
    min_workers: int,
    max_workers: int,
    scale_up: float,
    scale_down: float,
    backpressure_sleeps: int = 0,
    external_pressure: bool = False,
    busy_workers: float | None = None,
) -> ScaleDecision:
    """Recommend adding or removing one worker, from one interval's numbers.

    Args:
        usage: queue occupancy now, 0.0 to 1.0.
        workers: workers running now.
        min_workers, max_workers: the pool's bounds.
        scale_up, scale_down: usage thresholds (0 < scale_down < scale_up <= 1).
        backpressure_sleeps: how many times the producer slept for
            backpressure during the interval that just ended.
        external_pressure: another sign that the pipeline is behind (e.g. a
            stream consumer's lag); counts as a sleep does.
        busy_workers: the interval's work in workers: seconds the workers
            spent writing batches, divided by the interval's length (3.2
            means the load kept 3.2 workers busy). None when unmeasured.

    Returns:
        UP when usage is above ``scale_up`` or the producer was slowed at all
        (or ``external_pressure``); DOWN when usage is below ``scale_down``,
        nothing pressed, and the pool left after removing one worker could
        carry ``busy_workers`` while busy less than ``scale_up`` of its time;
        HOLD otherwise, and HOLD where a step would cross a bound.

    Why the sleeps count: the producer's backpressure holds usage at about
    80%, which is the default scale-up threshold, so a scaler that looks at
    usage alone sees "not above 0.8" while the producer is being throttled,
    and never grows the pool that would relieve it. A sleep is direct
    evidence that the workers are not keeping up.

    Why the work is weighed before a scale-down: a low queue says the pool
    keeps up, not that a smaller one would. A load that needs between k-1
    and k workers drains the queue with k, and with usage alone k is then
    cut to k-1, which falls behind, fills the queue, is throttled and grown
    back to k: the pool flaps for as long as the load lasts. Kubernetes HPA
    avoids this by sizing the pool from the measured load (replicas =
    ceil(current * utilization / target)); here the same comparison keeps
    the worker: 4.1 workers' worth of work with 5 workers is no reason to
    go to 4 (4.1 / 4 > 0.8).

    A pool found outside its bounds (after the bounds changed) is stepped
    back toward them whatever the load, since no load justifies it.
    """
    if workers < min_workers:
        return ScaleDecision.UP
    if workers > max_workers:
        return ScaleDecision.DOWN
    if usage > scale_up or backpressure_sleeps > 0 or external_pressure:
        return ScaleDecision.UP if workers < max_workers else ScaleDecision.HOLD
    if usage < scale_down and workers > min_workers:
        if busy_workers is None or busy_workers < scale_up * (workers - 1):
            return ScaleDecision.DOWN
    return ScaleDecision.HOLD


def stabilize_scale_down(
    recommendation: ScaleDecision, down_streak: int, *, window: int
) -> tuple[ScaleDecision, int]:
    """Act on a DOWN only once it has been recommended ``window`` intervals running.

    Kubernetes HPA's scale-down stabilization window, counted in intervals:
    one quiet interval (a lull in the load, a burst just drained) is no
    reason to give a worker up. UP is never delayed: falling behind costs
    more than an idle worker.

    Args:
        recommendation: :func:`decide_scaling`'s answer for this interval.
        down_streak: the consecutive DOWN recommendations before this one
            (0 at the start); the caller keeps it between intervals.
        window: how many DOWNs in a row it takes, >= 1 (1: at once).

    Returns:
        The decision to act on and the streak to pass next time. A DOWN
        acted on does not reset the streak: while every interval keeps
        recommending DOWN, the pool then shrinks by one per interval, as an
        HPA whose whole window recommended fewer replicas does.
    """
    if window < 1:
        raise ValueError(f"the scale-down window must be >= 1 interval, not {window!r}")
    if recommendation is not ScaleDecision.DOWN:
        return recommendation, 0
    down_streak += 1
    return (ScaleDecision.DOWN if down_streak >= window else ScaleDecision.HOLD), down_streak


class PacingSchedule:
    """When the producer's logs are due, at a fixed rate, by schedule.

    A sleep per log cannot pace 10,000 logs/s: the OS rounds short sleeps up
    to about 1 ms, so "sleep 100 µs, log, repeat" delivers ~1,000 logs/s (the
    Go original reaches ~1,100/s for the same reason). Instead log ``k`` is
    due at ``origin + k * interval``; the producer asks how many are due now,
    writes them all, then sleeps until the next one. However long each sleep
    really is, the average rate is the configured one.

    A stall (a paused process, a long GC) would leave a large debt that a
    naive schedule pays back in one burst; the debt is capped at
    ``max_catchup`` seconds' worth of logs and the rest is forgotten
    (counted in :attr:`skipped`), as a Go ticker drops ticks.

    Args:
        interval: seconds between logs, > 0. (A rate of 0, "as fast as
            possible", needs no schedule.)
        start: the clock's ``monotonic()`` now; the first log is due then.
        max_catchup: the largest burst, in seconds of logs (at least one log).

    The schedule holds no clock: every call is given ``now``.
    """

    __slots__ = ("_cap", "_interval", "_next", "_origin", "skipped")

    # Absorbs float error in (now - origin) / interval, in intervals, so the
    # count of logs due is not one short because 1.0 / 1e-4 came out 9999.99.
    _EPSILON = 1e-6

    def __init__(self, interval: float, *, start: float, max_catchup: float = 1.0) -> None:
        if not interval > 0 or not math.isfinite(interval):
            raise ValueError(f"interval must be a finite number of seconds > 0, not {interval!r}")
        if not max_catchup >= 0:
            raise ValueError(f"max_catchup must be >= 0 seconds, not {max_catchup!r}")
        self._interval = float(interval)
        self._cap = max(1, int(max_catchup / interval))
        self._origin = float(start)
        self._next = 0  # index of the next log not yet handed out
        self.skipped = 0  # logs dropped from the schedule by the catch-up cap

    @property
    def interval(self) -> float:
        """Seconds between logs."""
        return self._interval

    @property
    def max_burst(self) -> int:
        """The most logs :meth:`take` hands out at once."""
        return self._cap

    def due(self, now: float) -> int:
        """How many logs are due at ``now`` (capped), without taking them."""
        return min(self._backlog(now), self._cap)

    def take(self, now: float, limit: int | None = None) -> int:
        """Claim the logs due at ``now``: the caller writes that many.

        Args:
            now: the clock's ``monotonic()``.
            limit: claim at most this many; the rest stay due.

        Returns:
            How many logs to write now, 0 if none is due yet.
        """
        backlog = self._backlog(now)
        if backlog > self._cap:
            # Restart the schedule so exactly `cap` logs are due now.
            self.skipped += backlog - self._cap
            self._origin = now - (self._cap - 1) * self._interval
            self._next = 0
            backlog = self._cap
        count = backlog if limit is None else max(0, min(backlog, limit))
        self._next += count
        return count

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the next log is due; 0 if one is due."""
        # Positive exactly when _backlog() is 0 (same float expression), and
        # now + wait lands on the due time, so a loop sleeping it never spins.
        return max(0.0, self._next_due() - now)

    def postpone(self, seconds: float) -> None:
        """Shift every future due time ``seconds`` later.

        For backpressure: time the producer slept because the queue was
        filling is meant to lower its rate, so it must not come back as debt
        that the schedule then pays in a burst.
        """
        if seconds < 0:
            raise ValueError(f"cannot postpone by a negative time ({seconds!r} s)")
        self._origin += seconds

    def _next_due(self) -> float:
        return self._origin + self._next * self._interval

    def _backlog(self, now: float) -> int:
        """Logs due by ``now`` and not yet taken, uncapped."""
        if now < self._next_due():
            return 0
        due_by_now = math.floor((now - self._origin) / self._interval + self._EPSILON) + 1
        # The division can round below the exact comparison above; trust that.
        return max(1, due_by_now - self._next)

    def __repr__(self) -> str:
        return f"PacingSchedule(interval={self._interval!r}, max_burst={self._cap})"
