"""Tests for logpipe.application.pool: the bounded, thread-safe WorkerPool.

Workers are real Worker threads on a real RingBuffer. Every test closes its
ring and asserts that every worker it ever created has ended.
"""

from __future__ import annotations

import gc
import io
import random
import threading
import time
import weakref

import pytest

from logpipe import RingBuffer
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pool import WorkerPool
from logpipe.application.worker import Worker
from _support import wait_until
from logpipe.infrastructure.sinks import NullSink

JOIN = 10.0


class GateSink:
    """Blocks every write until ``gate`` is set; ``entered`` is set when a write is waiting."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.written = 0

    def write_batch(self, batch) -> None:
        self.entered.set()
        assert self.gate.wait(JOIN)
        self.written += len(batch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Harness:
    """A ring, a pool of real workers on it, and every worker the pool ever built."""

    def __init__(self, *, min_workers: int, max_workers: int, sink=None, batch_size: int = 50) -> None:
        self.ring = RingBuffer(1000)
        self.sink = sink if sink is not None else NullSink()
        self.metrics = Metrics()
        self.built: list[Worker] = []
        self._built_lock = threading.Lock()
        self.batch_size = batch_size
        self.pool = WorkerPool(self.make, min_workers=min_workers, max_workers=max_workers)

    def make(self, worker_id: int) -> Worker:
        worker = Worker(
            worker_id,
            self.ring,
            self.sink,
            batch_size=self.batch_size,
            batch_timeout=30.0,
            metrics=self.metrics,
            console=Console(io.StringIO()),
        )
        with self._built_lock:
            self.built.append(worker)
        return worker

    def shutdown(self) -> None:
        self.ring.close()
        assert self.pool.join_all(JOIN) == []
        assert not [w.worker_id for w in self.built if w.alive]


@pytest.fixture
def harnesses():
    made: list[Harness] = []

    def factory(**kwargs) -> Harness:
        harness = Harness(**kwargs)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        if isinstance(harness.sink, GateSink):
            harness.sink.gate.set()
        harness.shutdown()


@pytest.mark.parametrize(("low", "high"), [(0, 3), (3, 2), (-1, 1)])
def test_bounds_are_validated(low: int, high: int) -> None:
    """A pool needs 1 <= min_workers <= max_workers."""
    with pytest.raises(ValueError, match="min_workers"):
        WorkerPool(lambda i: None, min_workers=low, max_workers=high)  # type: ignore[arg-type, return-value]


def test_start_starts_the_minimum(harnesses) -> None:
    """start() brings the pool to min_workers running workers, ids 1..min."""
    h = harnesses(min_workers=3, max_workers=5)
    h.pool.start()
    assert len(h.pool) == 3
    assert [w.worker_id for w in h.pool.workers] == [1, 2, 3]
    assert all(w.alive for w in h.pool.workers)
    assert h.pool.peak == 3


def test_add_and_remove_stop_at_the_bounds(harnesses) -> None:
    """add() returns the new count up to max then None; remove() down to min then None."""
    h = harnesses(min_workers=2, max_workers=4)
    h.pool.start()
    assert h.pool.add() == 3
    assert h.pool.add() == 4
    assert h.pool.add() is None
    assert len(h.pool) == 4 and h.pool.peak == 4
    assert len(h.built) == 4  # no worker was built for the refused add
    assert h.pool.remove() == 3
    assert h.pool.remove() == 2
    assert h.pool.remove() is None
    assert len(h.pool) == 2
    survivors = {w.worker_id for w in h.pool.workers}
    assert survivors == {1, 2}  # the newest are removed first
    removed = [w for w in h.built if w.worker_id not in survivors]
    assert [w.worker_id for w in removed] == [3, 4]
    assert not any(w.alive for w in removed)  # remove() joins the worker it stops
    assert all(w.alive for w in h.pool.workers)


def test_concurrent_add_remove_never_leaves_the_bounds(harnesses) -> None:
    """8 threads x 200 random add/remove: len(pool) always within [2, 5]; every removed worker joined."""
    low, high = 2, 5
    h = harnesses(min_workers=low, max_workers=high)
    h.pool.start()
    seen: set[int] = set()
    bad: list[str] = []
    done = threading.Event()

    def monitor() -> None:
        while not done.is_set():
            n = len(h.pool)
            seen.add(n)
            if not low <= n <= high:
                bad.append(f"len(pool) = {n}")
            time.sleep(0)  # let the churners run

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(200):
                if rng.random() < 0.5:
                    count = h.pool.add()
                    if count is not None and not low <= count <= high:
                        bad.append(f"add() -> {count}")
                else:
                    count = h.pool.remove(join_timeout=JOIN)
                    if count is not None and not low <= count <= high:
                        bad.append(f"remove() -> {count}")
        except Exception as exc:  # noqa: BLE001
            bad.append(repr(exc))

    watcher = threading.Thread(target=monitor)
    watcher.start()
    churners = [threading.Thread(target=churn, args=(seed,)) for seed in range(8)]
    for t in churners:
        t.start()
    for t in churners:
        t.join(60)
    done.set()
    watcher.join(JOIN)
    assert not any(t.is_alive() for t in churners + [watcher])
    assert bad == []
    assert seen and min(seen) >= low and max(seen) <= high
    assert low <= h.pool.peak <= high
    running = {id(w) for w in h.pool.workers}
    assert len(running) == len(h.pool)
    removed = [w for w in h.built if id(w) not in running]
    assert len(removed) == len(h.built) - len(h.pool)
    assert not [w.worker_id for w in removed if w.alive]  # every removed worker was joined
    assert all(w.alive for w in h.pool.workers)
    assert len({w.worker_id for w in h.built}) == len(h.built)  # ids are never reused


def test_pending_counts_records_held_by_workers(harnesses) -> None:
    """pending() is the records workers hold in batches not yet written (here, stuck in the sink)."""
    sink = GateSink()
    h = harnesses(min_workers=1, max_workers=2, sink=sink, batch_size=10)
    h.pool.start()
    assert h.pool.pending() == 0
    for i in range(10):
        h.ring.put(b"r%d" % i)
    assert sink.entered.wait(JOIN)
    assert h.pool.pending() == 10
    sink.gate.set()
    assert wait_until(lambda: sink.written == 10)
    assert wait_until(lambda: h.pool.pending() == 0)


def test_join_all_after_close_returns_no_stuck_workers(harnesses) -> None:
    """Once the ring is closed, join_all() waits for every worker, retired ones too, and returns []."""
    h = harnesses(min_workers=1, max_workers=3)
    h.pool.start()
    h.pool.add()
    h.pool.add()
    h.pool.remove()
    h.ring.close()
    assert h.pool.join_all(JOIN) == []
    assert not any(w.alive for w in h.built)


def test_removed_workers_are_not_retained(harnesses) -> None:
    """A removed worker that has been joined is released: scaling churn must not grow memory."""
    h = harnesses(min_workers=1, max_workers=2)
    h.pool.start()
    refs = []
    for _ in range(20):
        h.pool.add()
        refs.append(weakref.ref(h.pool.workers[-1]))
        assert h.pool.remove() == 1
    h.built.clear()  # the harness's own references
    gc.collect()
    retained = sum(ref() is not None for ref in refs)
    assert retained == 0, f"{retained} of 20 removed (and joined) workers are still referenced"
