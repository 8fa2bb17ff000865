"""The autoscaler: every interval, one worker more, one fewer, or none.

It reads the ring's occupancy directly, the producer's backpressure sleeps
since its last look, an optional external pressure signal, and how much
work the workers did, and lets domain.decide_scaling recommend; a
scale-down is then held back by domain.stabilize_scale_down until it has
been recommended ``scale_down_window`` intervals running.

Counting the sleeps as pressure matters: the producer's own backpressure
holds the queue near 80%, the very scale-up threshold, so a scaler looking
at usage alone can sit still while the producer is being slowed down.
Weighing the work before a scale-down matters as much: without it a load
between k-1 and k workers' worth makes the pool flap between the two (see
decide_scaling and docs/backpressure-and-scaling.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from logpipe._ringbuf import RingBuffer
from logpipe._waits import join_thread
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pool import WorkerPool
from logpipe.domain.clock import Clock, SystemClock
from logpipe.domain.policies import ScaleDecision, decide_scaling, stabilize_scale_down

__all__ = ["AutoScaler"]


class AutoScaler:
    """A thread that resizes a WorkerPool every ``interval`` seconds.

    Args:
        ring: whose occupancy is read.
        pool: the workers to resize.
        metrics: backpressure sleeps and the workers' flush time (the sum of
            ``flush_duration``: their busy time) are read here; scale events
            counted here.
        console: where the ``Scaler: scaling UP, workers = N`` lines go.
        interval, scale_up, scale_down: the policy's parameters.
        scale_down_window: consecutive intervals a scale-down must be
            recommended before a worker is removed (1: at once).
        external_pressure: called once per step; True counts as pressure
            the way a backpressure sleep does (grow, never shrink). For
            sources that see the backlog elsewhere, e.g. a stream's lag.
        clock: measures each interval's length (injectable for tests).
    """

    def __init__(
        self,
        ring: RingBuffer,
        pool: WorkerPool,
        *,
        metrics: Metrics,
        console: Console,
        interval: float,
        scale_up: float,
        scale_down: float,
        scale_down_window: int = 1,
        external_pressure: Callable[[], bool] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if scale_down_window < 1:
            raise ValueError(f"scale_down_window must be >= 1 interval, not {scale_down_window!r}")
        self._ring = ring
        self._pool = pool
        self._metrics = metrics
        self._console = console
        self._interval = interval
        self._scale_up = scale_up
        self._scale_down = scale_down
        self._window = scale_down_window
        self._external_pressure = external_pressure
        self._clock = clock if clock is not None else SystemClock()
        self._down_streak = 0
        self._external_failed = False  # said once, not every interval
        self._mark()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logpipe-autoscaler", daemon=True)

    def _mark(self) -> None:
        """Start a new interval: what happened before now is history."""
        self._sleeps_seen = self._metrics.backpressure_sleeps.value
        self._busy_seen = self._metrics.flush_duration.snapshot().sum
        self._since = self._clock.monotonic()

    def start(self) -> None:
        self._mark()  # time between construction and start is no interval
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop scaling (shutdown has begun) and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            join_thread(self._thread, timeout)  # in slices: called from the main thread

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.step()

    def _read_external_pressure(self) -> bool:
        if self._external_pressure is None:
            return False
        try:
            return bool(self._external_pressure())
        except Exception as exc:  # noqa: BLE001 - a broken signal must not stop the scaling
            if not self._external_failed:
                self._external_failed = True
                self._console.say(f"Scaler: external pressure unreadable ({exc!r}); counted as none")
            return False

    def step(self) -> ScaleDecision:
        """Take one scaling decision now and act on it."""
        sleeps = self._metrics.backpressure_sleeps.value
        busy = self._metrics.flush_duration.snapshot().sum
        now = self._clock.monotonic()
        pressure, self._sleeps_seen = sleeps - self._sleeps_seen, sleeps
        elapsed, self._since = now - self._since, now
        worked, self._busy_seen = busy - self._busy_seen, busy
        external = self._read_external_pressure()
        recommendation = decide_scaling(
            self._ring.usage,
            len(self._pool),
            min_workers=self._pool.min_workers,
            max_workers=self._pool.max_workers,
            scale_up=self._scale_up,
            scale_down=self._scale_down,
            backpressure_sleeps=pressure,
            external_pressure=external,
            # A flush is counted when it ends: one spanning the boundary
            # lands in the next interval, a small error at these lengths.
            busy_workers=worked / elapsed if elapsed > 0 else None,
        )
        decision, self._down_streak = stabilize_scale_down(
            recommendation, self._down_streak, window=self._window
        )
        if self._stop.is_set():
            return ScaleDecision.HOLD  # shutdown began while we decided
        if decision is ScaleDecision.UP and (count := self._pool.add()) is not None:
            self._metrics.scale_ups.add()
            self._console.progress(f"Scaler: scaling UP, workers = {count}")
        elif decision is ScaleDecision.DOWN and (count := self._pool.remove()) is not None:
            self._metrics.scale_downs.add()
            self._console.progress(f"Scaler: scaling Down, workers = {count}")
        return decision
