"""The worker pool: add and remove workers safely, within [min, max].

The autoscaler adds and removes while the pipeline's shutdown may be joining,
so every change happens under one lock; a removed worker is stopped through
its own signal (the others go on) and joined outside the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from logpipe.application.worker import Worker

__all__ = ["WorkerPool"]


class WorkerPool:
    """A bounded set of running workers.

    Args:
        make_worker: builds a (not yet started) worker given its id.
        min_workers, max_workers: the bounds; the pool never leaves them.
    """

    def __init__(self, make_worker: Callable[[int], Worker], *, min_workers: int, max_workers: int) -> None:
        if not 1 <= min_workers <= max_workers:
            raise ValueError(f"need 1 <= min_workers <= max_workers, got {min_workers}, {max_workers}")
        self._make_worker = make_worker
        self.min_workers = min_workers
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self._retired: list[Worker] = []
        self._next_id = 1
        self.peak = 0

    def __len__(self) -> int:
        return len(self._workers)

    @property
    def workers(self) -> list[Worker]:
        """The running workers (a copy)."""
        with self._lock:
            return list(self._workers)

    def start(self) -> None:
        """Start the minimum number of workers."""
        while len(self._workers) < self.min_workers:
            self.add()

    def add(self) -> int | None:
        """Start one more worker; return the new count, or None at the maximum."""
        with self._lock:
            if len(self._workers) >= self.max_workers:
                return None
            worker = self._make_worker(self._next_id)
            self._next_id += 1
            worker.start()
            self._workers.append(worker)
            self.peak = max(self.peak, len(self._workers))
            return len(self._workers)

    def remove(self, join_timeout: float = 10.0) -> int | None:
        """Stop the newest worker; return the new count, or None at the minimum."""
        with self._lock:
            if len(self._workers) <= self.min_workers:
                return None
            worker = self._workers.pop()
            self._retired.append(worker)
            count = len(self._workers)
        worker.stop()
        if worker.join(join_timeout):
            with self._lock:
                self._retired.remove(worker)
        return count

    def pending(self) -> int:
        """Records the workers hold in batches not yet written."""
        with self._lock:
            return sum(w.holding for w in self._workers + self._retired)

    def join_all(self, timeout: float) -> list[Worker]:
        """Wait for every worker (after the ring is closed); return those still running."""
        with self._lock:
            everyone = self._workers + self._retired
        stuck = []
        for worker in everyone:
            if not worker.join(timeout):
                stuck.append(worker)
        return stuck
