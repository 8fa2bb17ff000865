"""Time as an object, so pacing and scaling can be tested without sleeping.

Everything that waits or stamps takes a :class:`Clock`. Production code gets
:class:`SystemClock`; tests get :class:`FakeClock`, whose ``sleep`` moves its
time forward at once, so a simulated second of a 10,000 logs/s producer runs
in milliseconds and gives the same answer every time.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time and a way to wait."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (>= 0)."""
        ...

    def time_us(self) -> int:
        """Wall-clock Unix time in microseconds (the ``ts`` of a log)."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.sleep``, ``time.time_ns``."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def time_us(self) -> int:
        return time.time_ns() // 1_000

    def __repr__(self) -> str:
        return "SystemClock()"


class FakeClock:
    """A clock that moves only when told to: by :meth:`advance` or :meth:`sleep`.

    Args:
        start: the initial ``monotonic()`` value.
        epoch_us: the ``time_us()`` value at ``start``; wall time moves with
            monotonic time, as it does on a well-behaved host.

    Every requested sleep is recorded in :attr:`sleeps`, so a test can check
    what a component *would* have waited. Safe to share between threads.
    """

    def __init__(self, start: float = 0.0, *, epoch_us: int = 1_700_000_000_000_000) -> None:
        self._now = float(start)
        self._start = self._now
        self._epoch_us = epoch_us
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        # Same contract as time.sleep, so a negative sleep is a bug, not a no-op.
        if seconds < 0:
            raise ValueError(f"sleep length must be non-negative, not {seconds!r}")
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0) without recording a sleep."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards ({seconds!r} s)")
        with self._lock:
            self._now += seconds

    def time_us(self) -> int:
        with self._lock:
            return self._epoch_us + round((self._now - self._start) * 1_000_000)

    def __repr__(self) -> str:
        return f"FakeClock(now={self.monotonic()!r})"
