"""The autoscaler: every interval, one worker more, one fewer, or none.

It reads the ring's occupancy directly and the producer's backpressure
sleeps since its last look, and lets domain.decide_scaling choose. Counting
the sleeps as pressure matters: the producer's own backpressure holds the
queue near 80%, the very scale-up threshold, so a scaler looking at usage
alone can sit still while the producer is being slowed down.
"""

from __future__ import annotations

import threading

from logpipe._ringbuf import RingBuffer
from logpipe._waits import join_thread
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pool import WorkerPool
from logpipe.domain.policies import ScaleDecision, decide_scaling

__all__ = ["AutoScaler"]


class AutoScaler:
    """A thread that resizes a WorkerPool every ``interval`` seconds.

    Args:
        ring: whose occupancy is read.
        pool: the workers to resize.
        metrics: backpressure sleeps are read here; scale events counted here.
        console: where the ``Scaler: scaling UP, workers = N`` lines go.
        interval, scale_up, scale_down: the policy's parameters.
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
    ) -> None:
        self._ring = ring
        self._pool = pool
        self._metrics = metrics
        self._console = console
        self._interval = interval
        self._scale_up = scale_up
        self._scale_down = scale_down
        self._sleeps_seen = metrics.backpressure_sleeps.value
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logpipe-autoscaler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop scaling (shutdown has begun) and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            join_thread(self._thread, timeout)  # in slices: called from the main thread

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.step()

    def step(self) -> ScaleDecision:
        """Take one scaling decision now and act on it."""
        sleeps = self._metrics.backpressure_sleeps.value
        pressure, self._sleeps_seen = sleeps - self._sleeps_seen, sleeps
        decision = decide_scaling(
            self._ring.usage,
            len(self._pool),
            min_workers=self._pool.min_workers,
            max_workers=self._pool.max_workers,
            scale_up=self._scale_up,
            scale_down=self._scale_down,
            backpressure_sleeps=pressure,
        )
        if self._stop.is_set():
            return ScaleDecision.HOLD  # shutdown began while we decided
        if decision is ScaleDecision.UP and (count := self._pool.add()) is not None:
            self._metrics.scale_ups.add()
            self._console.say(f"Scaler: scaling UP, workers = {count}")
        elif decision is ScaleDecision.DOWN and (count := self._pool.remove()) is not None:
            self._metrics.scale_downs.add()
            self._console.say(f"Scaler: scaling Down, workers = {count}")
        return decision
