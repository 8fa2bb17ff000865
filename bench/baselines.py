"""Pure-Python baselines and shared helpers for the ring buffer benchmarks.

Only the benchmarks import this module; it is not part of the logpipe package.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["RECORD_SIZE", "DequeQueue", "dispose", "make_records", "ringbuf_build"]

#: Every benchmark record is a JSON log line of exactly this many bytes.
RECORD_SIZE = 70

_PREFIX = b'{"msg": "hello from producer", "level": "INFO", "seq": '


def make_records(n: int) -> list[bytes]:
    """Return n distinct 70-byte JSON log lines (``{"msg": ..., "seq": 000...42}``)."""
    digits = RECORD_SIZE - len(_PREFIX) - 1
    fmt = _PREFIX + b"%0" + str(digits).encode() + b"d}"
    records = [fmt % i for i in range(n)]
    assert all(len(r) == RECORD_SIZE for r in records[:1] + records[-1:])
    return records


class DequeQueue:
    """A bounded FIFO: a collections.deque guarded by two threading.Conditions.

    This is what one writes by hand when queue.Queue feels too slow: the same
    lock-plus-conditions design as queue.Queue, without its task_done
    bookkeeping and extra method layers, plus batch calls that move many items
    under one lock acquisition (``put_many`` extends the deque with as many
    items as fit, ``get_many`` pops up to ``max_items`` at once).

    Args:
        maxsize: most items held at once (>= 1).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._items: deque[Any] = deque()
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _deadline(block: bool, timeout: float | None) -> float | None:
        if not block or timeout is None:
            return None
        if timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        return time.monotonic() + timeout

    @staticmethod
    def _wait(cond: threading.Condition, block: bool, deadline: float | None, exc: type) -> None:
        if not block:
            raise exc
        if deadline is None:
            cond.wait()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise exc
        cond.wait(remaining)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Append one item, waiting while the queue is full."""
        deadline = self._deadline(block, timeout)
        with self._not_full:
            while len(self._items) >= self.maxsize:
                self._wait(self._not_full, block, deadline, queue.Full)
            self._items.append(item)
            self._not_empty.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Pop the oldest item, waiting while the queue is empty."""
        deadline = self._deadline(block, timeout)
        with self._not_empty:
            while not self._items:
                self._wait(self._not_empty, block, deadline, queue.Empty)
            item = self._items.popleft()
            self._not_full.notify()
            return item

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> int:
        """Append items in order, as many per lock hold as fit; return how many were taken."""
        items = items if isinstance(items, list) else list(items)
        deadline = self._deadline(block, timeout)
        taken = 0
        total = len(items)
        with self._not_full:
            while taken < total:
                room = self.maxsize - len(self._items)
                if room <= 0:
                    try:
                        self._wait(self._not_full, block, deadline, queue.Full)
                    except queue.Full:
                        return taken
                    continue
                part = items[taken : taken + room] if taken or room < total else items
                self._items.extend(part)
                taken += len(part)
                self._not_empty.notify(len(part))
        return taken

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Pop 1..max_items items as soon as at least one is there."""
        deadline = self._deadline(block, timeout)
        with self._not_empty:
            while not self._items:
                self._wait(self._not_empty, block, deadline, queue.Empty)
            items = self._items
            if len(items) <= max_items:
                out = list(items)
                items.clear()
            else:
                popleft = items.popleft
                out = [popleft() for _ in range(max_items)]
            self._not_full.notify(len(out))
            return out


def dispose(q: object) -> None:
    """Release what a queue holds outside the heap after a benchmark round.

    multiprocessing.Queue owns a pipe and a feeder thread; a RingBuffer is
    closed so that nothing stays parked on it. The others need nothing.
    """
    if hasattr(q, "join_thread"):  # multiprocessing.Queue
        q.close()  # type: ignore[attr-defined]
        q.join_thread()  # type: ignore[attr-defined]
    elif hasattr(q, "get_batch"):  # logpipe.RingBuffer
        q.close()  # type: ignore[attr-defined]


def ringbuf_build() -> dict[str, str]:
    """Which compiled ring buffer is imported: its path, sha256 prefix and build time.

    The core changes often; a number means something only next to the build
    that made it.
    """
    from logpipe import _ringbuf

    so = Path(_ringbuf.__file__)
    return {
        "file": str(so),
        "sha256": hashlib.sha256(so.read_bytes()).hexdigest()[:16],
        "built": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(so.stat().st_mtime)),
    }
