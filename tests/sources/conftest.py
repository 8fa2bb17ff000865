"""Shared helpers for the source tests: contexts, a ring consumer, and the
``logpipe`` command as a subprocess (for kill -9 and stdin)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logpipe import RingBuffer
from logpipe.application.metrics import Metrics
from logpipe.exceptions import Closed, Empty
from logpipe.infrastructure.deadletter import DeadLetter
from logpipe.infrastructure.sources.context import SourceContext


@pytest.fixture
def make_context(tmp_path: Path) -> Callable[..., SourceContext]:
    """SourceContext(format, max_line, fresh Metrics, a dead letter in tmp_path, ...)."""

    def make(**overrides: object) -> SourceContext:
        values: dict[str, object] = {
            "format": "raw",
            "max_line": 1 << 20,
            "metrics": Metrics(),
            "dead_letter": DeadLetter(str(tmp_path / "dead-letter.ndjson")),
        }
        values.update(overrides)
        return SourceContext(**values)  # type: ignore[arg-type]

    return make


class Collector:
    """A consumer thread that pops every record of a ring into ``records``."""

    def __init__(self, ring: RingBuffer) -> None:
        self.ring = ring
        self.records: list[bytes] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="test-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                items = self.ring.get_many(512, timeout=0.02)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Closed:
                return
            with self._lock:
                self.records.extend(items)

    def count(self) -> int:
        with self._lock:
            return len(self.records)

    def stop(self) -> list[bytes]:
        """Drain what is left, stop, join; the records popped."""
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "collector did not stop"
        return self.records


@pytest.fixture
def collectors() -> Iterator[Callable[[RingBuffer], Collector]]:
    """Start Collectors; every one is stopped and joined at the end of the test."""
    started: list[Collector] = []

    def start(ring: RingBuffer) -> Collector:
        collector = Collector(ring)
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.stop()


@pytest.fixture
def logpipe_command() -> list[str]:
    """argv prefix that runs the real ``logpipe`` command; append ``run --source ...``."""
    return [sys.executable, "-m", "logpipe"]


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """The environment for child interpreters (unbuffered output)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
