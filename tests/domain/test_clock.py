"""Tests for logpipe.domain.clock: the real clock and the fake one for tests."""

from __future__ import annotations

import threading
import time

import pytest

from logpipe.domain.clock import Clock, FakeClock, SystemClock


def test_clocks_satisfy_the_protocol() -> None:
    """Both clocks provide monotonic, sleep and time_us."""
    assert isinstance(SystemClock(), Clock)
    assert isinstance(FakeClock(), Clock)


def test_system_clock_reads_real_time() -> None:
    """SystemClock's wall time is Unix microseconds, and its monotonic time never goes back."""
    clock = SystemClock()
    assert abs(clock.time_us() - time.time() * 1_000_000) < 1_000_000
    first = clock.monotonic()
    clock.sleep(0.001)
    assert clock.monotonic() - first >= 0.001


def test_fake_clock_starts_where_told() -> None:
    """FakeClock's monotonic and wall time begin at the given start and epoch."""
    clock = FakeClock(5.0, epoch_us=1_000)
    assert clock.monotonic() == 5.0
    assert clock.time_us() == 1_000


def test_fake_sleep_advances_and_is_recorded() -> None:
    """A fake sleep moves time forward at once and is recorded in sleeps."""
    clock = FakeClock()
    started = time.monotonic()
    clock.sleep(3600.0)
    clock.sleep(0.0005)
    assert time.monotonic() - started < 1.0
    assert clock.monotonic() == 3600.0005
    assert clock.sleeps == [3600.0, 0.0005]


def test_fake_advance_is_not_a_sleep() -> None:
    """advance moves time without recording a sleep."""
    clock = FakeClock()
    clock.advance(2.5)
    assert clock.monotonic() == 2.5
    assert clock.sleeps == []


def test_fake_wall_time_follows_monotonic_time() -> None:
    """time_us moves by the same amount as monotonic time, in microseconds."""
    clock = FakeClock(10.0, epoch_us=1_700_000_000_000_000)
    clock.advance(1.5)
    assert clock.time_us() == 1_700_000_001_500_000


@pytest.mark.parametrize("method", ["sleep", "advance"])
def test_fake_clock_refuses_to_go_back(method: str) -> None:
    """A negative sleep or advance is an error, as time.sleep(-1) is."""
    clock = FakeClock(1.0)
    with pytest.raises(ValueError):
        getattr(clock, method)(-0.1)
    assert clock.monotonic() == 1.0


def test_fake_clock_is_thread_safe() -> None:
    """Sleeps from several threads at once are all counted and all recorded."""
    clock = FakeClock()

    def sleeper() -> None:
        for _ in range(1_000):
            clock.sleep(0.25)  # exact in binary, so the sum is exact

    threads = [threading.Thread(target=sleeper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert clock.monotonic() == 1_000.0
    assert len(clock.sleeps) == 4_000
