"""What every sink shares: one lock, the counters, and the closed state.

Workers call ``write_batch`` from several threads at once. The lock makes
each batch one uninterrupted write (records of two batches never interleave
in the target) and keeps the counters exact; it is uncontended when one
worker runs, and the write it guards is one system call per batch anyway.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from logpipe.domain.ports import FramedBatch
from logpipe.exceptions import SinkError

if TYPE_CHECKING:
    from logpipe._ringbuf import Batch

__all__ = ["CountingSink"]


class CountingSink:
    """Base of the built-in sinks: serialised writes, counted records and bytes.

    A subclass implements :meth:`_write` (and optionally :meth:`_write_held`,
    :meth:`_flush`, :meth:`_close`); they always run with the lock held,
    never after close.

    Attributes:
        name: the sink as a spec would name it, e.g. ``"file:/tmp/out.ndjson"``.
    """

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._closed = False
        self._records = 0
        self._batches = 0
        self._nbytes = 0

    @property
    def records(self) -> int:
        """Records written so far (``len(batch)`` summed)."""
        return self._records

    @property
    def batches(self) -> int:
        """Calls to :meth:`write_batch` that succeeded."""
        return self._batches

    @property
    def nbytes(self) -> int:
        """Framed bytes written so far, newlines included."""
        return self._nbytes

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def write_batch(self, batch: FramedBatch) -> None:
        """Write every record of ``batch`` as one write; thread-safe.

        Args:
            batch: newline-framed records (``logpipe.Batch``, or any
                contiguous buffer); ``len(batch)`` counts as its records.

        Raises:
            SinkError: the target refused the write, or the sink is closed.
        """
        if getattr(batch, "held", False):
            # A held logpipe.Batch: its bytes are still in the ring. A sink
            # that can write them from there does; the buffer path below
            # copies them out first.
            with self._lock:
                self._check_open()
                if self._write_held(batch):
                    self._count(len(batch), batch.nbytes)  # type: ignore[attr-defined]
                    return
        with memoryview(batch) as view:  # type: ignore[arg-type]  # no copy (a held batch: one)
            if view.ndim != 1 or view.format != "B":
                view = view.cast("B")
            with self._lock:
                self._check_open()
                if view.nbytes:
                    self._write(view)
                self._count(len(batch), view.nbytes)

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError(f"{self.name}: write after close", retryable=False)

    def _count(self, records: int, nbytes: int) -> None:
        self._records += records
        self._batches += 1
        self._nbytes += nbytes

    def flush(self) -> None:
        """Push what the sink buffers to its target (see each sink for what that means)."""
        with self._lock:
            if not self._closed:
                self._flush()

    def close(self) -> None:
        """Flush and release the target; later calls do nothing, later writes raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<{type(self).__name__} {self.name} {state} records={self._records}>"

    def _write(self, view: memoryview) -> None:
        raise NotImplementedError

    def _write_held(self, batch: Batch) -> bool:
        """Write a held batch from the ring's memory; False: not here, copy it and call _write."""
        return False

    def _flush(self) -> None:
        """Nothing buffered by default."""

    def _close(self) -> None:
        """Nothing to release by default."""
