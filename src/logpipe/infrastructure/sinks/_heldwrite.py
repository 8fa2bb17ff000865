"""One ``write(2)`` to a regular file, keeping the GIL when that is cheaper.

``os.write`` lets the GIL go around every system call, and getting it back
from the producer or another worker costs more than writing a few KiB into
the page cache: at the spec's defaults (batches of about 4 KiB) keeping it
took the file sink from 1.25-1.36 M to 4.9-5.2 M logs/s
(``bench/bench_pipeline.py --batch-size 50 --channel-size 1500``). So a
write of up to ``HOLD_GIL_MAX_BYTES`` (64 KiB, the ring's own limit for
copies under the GIL) to a *regular* file goes through
``logpipe._filewrite.write_holding_gil`` instead.

Such a write can still be slow (dirty-page throttling, a network file
system); one that takes over ``SLOW_WRITE_NS`` (1 ms) sends every write of
the next ``RELEASE_AFTER_SLOW_NS`` (1 s) back to ``os.write``, so a slow
disk stalls the other threads for at most one write a second. Pipes,
FIFOs, terminals and devices always use ``os.write``: a write there can
wait for a reader, and the reader may need the GIL.

The file sink and the stdout sink (when standard output is a regular file,
``logpipe run --sink stdout > out.ndjson``) both write through a
:class:`HeldWrites`, and both keep the rest of a batch whose write failed
part-way in an :class:`UnfinishedBatch` (a full disk usually first shows as
a short write): the next write, the retry of that batch or any other,
completes it first, so retries neither duplicate the part already written
nor leave a torn line.

A *held* batch (``RingBuffer.get_batch(..., hold=True)``, which the workers
ask for when the sink says ``takes_held_batches``) is written straight from
the ring's memory with ``writev(2)`` (``HeldWrites.write_batch``,
``UnfinishedBatch.write_held``): one copy of every byte fewer than writing
the batch's own buffer, on the busiest thread of a file -> file run.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING

from logpipe._filewrite import write_holding_gil
from logpipe.exceptions import SinkError

if TYPE_CHECKING:
    from logpipe._ringbuf import Batch

__all__ = [
    "HOLD_GIL_MAX_BYTES",
    "RELEASE_AFTER_SLOW_NS",
    "SLOW_WRITE_NS",
    "HeldWrites",
    "UnfinishedBatch",
    "is_regular_file",
]

#: Writes up to this many bytes to a regular file keep the GIL (module doc).
HOLD_GIL_MAX_BYTES = 64 << 10
#: A GIL-keeping write slower than this ...
SLOW_WRITE_NS = 1_000_000
#: ... sends the writes of this long after it to ``os.write``.
RELEASE_AFTER_SLOW_NS = 1_000_000_000


def is_regular_file(fd: int) -> bool:
    """Whether ``fd`` is open on a regular file (False if it cannot be asked)."""
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


class HeldWrites:
    """The choice between ``write_holding_gil`` and ``os.write``, for one file at a time.

    Args:
        regular: whether the file is a regular one (only those may keep the
            GIL); set :attr:`regular` again when the file changes.
    """

    __slots__ = ("regular", "_release_until")

    def __init__(self, regular: bool = False) -> None:
        self.regular = regular
        self._release_until = 0  # monotonic_ns() before which writes let the GIL go

    def write(self, fd: int, view: memoryview) -> int:
        """One ``write(2)`` of ``view`` to ``fd``, as ``os.write``: bytes written, or OSError."""
        start = self._keep_gil_from(len(view))
        if not start:
            return os.write(fd, view)
        written = write_holding_gil(fd, view)
        self._timed(start)
        return written

    def write_batch(self, fd: int, batch: Batch) -> int:
        """:meth:`write` for a held batch, from the ring's memory (``Batch.write_to``):
        bytes written, short only if a write failed after progress; OSError if none."""
        start = self._keep_gil_from(batch.nbytes)
        if not start:
            return batch.write_to(fd)
        written = batch.write_to(fd, keep_gil=True)
        self._timed(start)
        return written

    def _keep_gil_from(self, nbytes: int) -> int:
        """monotonic_ns() now if a write of ``nbytes`` may keep the GIL; 0 if it lets it go."""
        if self.regular and nbytes <= HOLD_GIL_MAX_BYTES:
            start = monotonic_ns()
            if start >= self._release_until:
                return start
        return 0

    def _timed(self, start: int) -> None:
        """After a write that kept the GIL from ``start``: if it was slow, let the next second's go."""
        if monotonic_ns() - start > SLOW_WRITE_NS:
            self._release_until = start + RELEASE_AFTER_SLOW_NS


class UnfinishedBatch:
    """The unwritten rest of the batch whose write failed part-way, if any.

    :meth:`write_all` stores ``rest`` when a write fails after progress (or
    while it was finishing an earlier rest); :meth:`settle`, called before
    each batch is written, writes that rest first.
    """

    __slots__ = ("rest", "_finished", "_owed")

    def __init__(self) -> None:
        self.rest: memoryview | None = None
        self._finished: list[object] = []  # batches whose rest another writer finished
        # A held batch cut short whose rest could not be copied out yet
        # (MemoryError): the batch and how much of it is in the file.
        self._owed: tuple[Batch, int] | None = None

    @property
    def pending(self) -> bool:
        """Whether the rest of a batch cut short is still to be written."""
        return self.rest is not None or self._owed is not None

    def settle(self, batch: object, write_all: Callable[[memoryview], None]) -> bool:
        """Finish any rest with ``write_all`` (which stores what is still unwritten if it fails);
        True if ``batch`` is complete now and must not be written again."""
        if self._owed is not None:
            owed_batch, written = self._owed
            self.rest = memoryview(owed_batch)[written:]  # MemoryError: still owed
            self._owed = None
        if self.rest is not None:
            owed_batch = self.rest.obj
            write_all(self.rest)
            self.rest = None
            if owed_batch is batch:
                return True  # the retry of that batch: it is complete now
            self._finished.append(owed_batch)
        for i, done in enumerate(self._finished):
            if done is batch:
                del self._finished[i]  # finished by an earlier writer
                return True
        return False

    def write_all(self, writes: HeldWrites, fd: int, view: memoryview, name: str,
                  wrote: Callable[[int], None] | None = None) -> None:  # fmt: skip
        """Write all of ``view`` to ``fd`` through ``writes``, calling ``wrote(n)`` after each write.

        Raises:
            OSError: a write failed; if it failed after progress (or while
                finishing a rest), what is left is kept as :attr:`rest`.
            SinkError: a write made no progress (``NAME: write made no progress``).
        """
        started = len(view)
        while view:
            try:
                written = writes.write(fd, view)
            except OSError:
                if len(view) < started or self.rest is not None:
                    self.rest = view
                raise
            if written <= 0:  # not seen for regular files; never spin
                self.rest = view
                raise SinkError(f"{name}: write made no progress")
            if wrote is not None:
                wrote(written)
            view = view[written:]

    def write_held(self, writes: HeldWrites, fd: int, batch: Batch, name: str,
                   wrote: Callable[[int], None] | None = None) -> None:  # fmt: skip
        """:meth:`write_all` for a held batch, written from the ring's memory.

        Call it only when nothing is :attr:`pending`. A write that failed before any
        byte raises and keeps nothing (the batch is still whole); one cut
        short goes on from a copy of the rest (``memoryview`` detaches the
        batch), which is kept as :attr:`rest` if it fails too.
        """
        written = writes.write_batch(fd, batch)
        if wrote is not None and written:
            wrote(written)
        if written < batch.nbytes:
            try:
                rest = memoryview(batch)[written:]
            except MemoryError:
                self._owed = (batch, written)  # settle() copies it out when it can
                raise
            try:
                self.write_all(writes, fd, rest, name, wrote)
            except BaseException:
                if self.rest is None:
                    self.rest = rest  # those bytes are owed, whatever stopped them
                raise
