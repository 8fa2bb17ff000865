"""Which prefix of the input has been written: the flush watermark.

Workers flush batches out of order (worker 2 may write records 100-149
before worker 1 writes 50-99), so "records processed" does not say which
records are safe. Every record has a ring position (0, 1, 2... in the order
it entered the ring; ``Batch.positions`` lists them), and the watermark is
the length of the longest prefix of positions whose records have all been
written. A source that can resume (the file tail) checkpoints the input
offset of that prefix, so a restart re-reads at most the unwritten tail:
at-least-once, with no gap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

__all__ = ["FlushTracker"]


class FlushTracker:
    """Collects written position runs and advances the watermark."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watermark = 0
        self._ahead: dict[int, int] = {}  # start -> end of runs written past a gap

    def flushed(self, runs: Iterable[tuple[int, int]]) -> None:
        """Record that the positions of ``runs`` ([(start, count), ...]) are written."""
        with self._lock:
            for start, count in runs:
                if start == self._watermark and not self._ahead:
                    self._watermark += count  # the usual case: the next run in order
                elif count:
                    self._ahead[start] = start + count
            # Runs tile the positions exactly, so each gap is closed by a run
            # that starts where the watermark stands.
            while self._watermark in self._ahead:
                self._watermark = self._ahead.pop(self._watermark)

    @property
    def watermark(self) -> int:
        """Every position below this has been written."""
        return self._watermark
