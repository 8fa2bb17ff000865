"""The spec's producer: synthetic JSON logs, paced, slowed by backpressure.

Each log is ``{"msg": ..., "level": ..., "ts": <Unix µs>, "seq": <n>}``; seq
runs 0, 1, 2... so a sink's output can be checked for loss and duplicates.

Two modes:

* paced (``rate > 0``): logs are due on a schedule (domain.PacingSchedule),
  not after a sleep per log, so 100 µs really means 10,000 logs/s. Before
  each log the backpressure table is consulted with the ring's occupancy.
  The producer sleeps at least ``PACE_SLICE`` (1 ms) between looks, and
  pushes the logs that came due meanwhile with one encoder call, as many
  of them at once as go in without a backpressure sleep before any
  (domain.backpressure_headroom): the same logs at the same average rate,
  with a wake-up a millisecond instead of one per log (at the spec's
  100 µs, 10,000 sleeps and encoder calls a second took ~0.4 s of CPU a
  second; docs/benchmarks.md, issue 9's thirteenth round).
* as fast as possible (``rate == 0``): chunks of logs are formatted and
  pushed by the nogil batch encoder; backpressure is consulted per chunk.

Either way the producer never blocks for longer than ~10 ms without looking
at its stop flag, and ``produced`` counts exactly what entered the ring.
"""

from __future__ import annotations

import threading

import orjson

from logpipe._encoder import put_logs
from logpipe._ringbuf import RingBuffer
from logpipe._waits import wait_event
from logpipe.application.metrics import Metrics
from logpipe.domain.clock import Clock, SystemClock
from logpipe.domain.policies import PacingSchedule, backpressure_headroom, backpressure_sleep
from logpipe.exceptions import Closed

__all__ = ["GeneratorSource"]

# Logs per encoder call at full speed: large enough to amortise the Python
# call, small enough that their shared timestamp stays within ~100 µs.
FULL_SPEED_CHUNK = 1024
# Longest a blocked put waits before looking at the stop flag again.
STOP_CHECK = 0.01
# Shortest sleep of a paced producer between looks at its schedule: the logs
# due meanwhile go in together when it wakes (a burst of 10 at 100 µs).
PACE_SLICE = 0.001


class GeneratorSource:
    """Writes synthetic logs into a ring until stopped or ``count`` is reached.

    Args:
        rate: seconds between logs; 0 means as fast as possible.
        count: stop after this many logs (None: until stopped).
        message, level: the ``msg`` and ``level`` fields.
        metrics: where ``backpressure_sleeps`` are counted. (What was
            produced is read off the ring, ``ring.pushed``, for every source.)
        clock: time source (injectable for tests).
    """

    name = "generator"

    def __init__(
        self,
        *,
        rate: float,
        count: int | None = None,
        message: str = "hello from producer",
        level: str = "INFO",
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.rate = rate
        self.count = count
        self._msg = orjson.dumps(message)
        self._level = orjson.dumps(level)
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock = clock if clock is not None else SystemClock()
        self._next_seq = 0

    @property
    def produced(self) -> int:
        """Logs that entered the ring so far."""
        return self._next_seq

    def _remaining(self) -> int | None:
        return None if self.count is None else self.count - self._next_seq

    def run(self, ring: RingBuffer, stop: threading.Event) -> None:
        """Produce until ``stop`` is set, ``count`` is reached, or the ring closes."""
        try:
            if self.rate > 0:
                self._run_paced(ring, stop)
            else:
                self._run_full_speed(ring, stop)
        except Closed:
            pass  # the pipeline closed the ring: nothing more can go in

    def _backpressure(self, ring: RingBuffer, stop: threading.Event) -> float:
        """Sleep as the table says for the ring's occupancy; return the time slept."""
        pause = backpressure_sleep(ring.usage)
        if pause:
            self.metrics.backpressure_sleeps.add()
            stop.wait(pause)
        return pause

    def _push(self, ring: RingBuffer, stop: threading.Event, count: int) -> None:
        """Push ``count`` logs with the next seqs, waiting while full, until stopped."""
        # Imported here, not at the top: only the generator needs numpy, and
        # runs of the other sources start ~70 ms sooner without its import.
        import numpy as np  # noqa: PLC0415

        while count > 0 and not stop.is_set():
            seqs = np.arange(self._next_seq, self._next_seq + count, dtype=np.uint64)
            ts = np.full(count, self._clock.time_us(), dtype=np.int64)
            taken = put_logs(ring, seqs, ts, self._msg, self._level, STOP_CHECK)
            self._next_seq += taken
            count -= taken

    def _run_full_speed(self, ring: RingBuffer, stop: threading.Event) -> None:
        while not stop.is_set():
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return
            self._backpressure(ring, stop)
            chunk = FULL_SPEED_CHUNK if remaining is None else min(FULL_SPEED_CHUNK, remaining)
            self._push(ring, stop, chunk)

    def _run_paced(self, ring: RingBuffer, stop: threading.Event) -> None:
        schedule = PacingSchedule(self.rate, start=self._clock.monotonic())
        while not stop.is_set():
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return
            now = self._clock.monotonic()
            due = schedule.take(now, limit=remaining)
            if due == 0:
                # In slices: run() may be on the main thread.
                wait_event(stop, max(schedule.wait(now), PACE_SLICE))
                continue
            while due > 0:
                if stop.is_set():
                    return
                slept = self._backpressure(ring, stop)
                if slept:
                    # Time slept under pressure lowers the rate; it must not
                    # come back as a burst of overdue logs.
                    schedule.postpone(slept)
                    burst = 1
                else:
                    # These logs would each find no pressure before them either.
                    burst = min(due, max(1, backpressure_headroom(len(ring), ring.capacity)))
                self._push(ring, stop, burst)
                due -= burst
