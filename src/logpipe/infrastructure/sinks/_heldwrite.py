"""The rest of a batch whose write failed part-way.

The file sink and the stdout sink (when standard output is a regular file,
``logpipe run --sink stdout > out.ndjson``) both write through a
:class:`~logpipe._filewrite.HeldWrites` (compiled: a write of up to 64 KiB
to a regular file keeps the GIL, a slow one sends the next second's writes
back to releasing it; see ``logpipe/_filewrite.pyx``), and both keep the
rest of a batch whose write failed part-way in an :class:`UnfinishedBatch`
(a full disk usually first shows as a short write): the next write, the
retry of that batch or any other, completes it first, so retries neither
duplicate the part already written nor leave a torn line.

A *held* batch (``RingBuffer.get_batch(..., hold=True)``, which the workers
ask for when the sink says ``takes_held_batches``) is written straight from
the ring's memory with ``writev(2)`` (``HeldWrites.write_batch``,
``UnfinishedBatch.write_held``): one copy of every byte fewer than writing
the batch's own buffer, on the busiest thread of a file -> file run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from logpipe.exceptions import SinkError

if TYPE_CHECKING:
    from logpipe._filewrite import HeldWrites
    from logpipe._ringbuf import Batch

__all__ = ["UnfinishedBatch"]


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

    def write_all(self, writes: HeldWrites, fd: int, view: memoryview, name: str) -> None:
        """Write all of ``view`` to ``fd`` through ``writes`` (which counts what each write put in the file).

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
            view = view[written:]

    def write_held(self, writes: HeldWrites, fd: int, batch: Batch, name: str) -> None:
        """:meth:`write_all` for a held batch, written from the ring's memory.

        Call it only when nothing is :attr:`pending`. A write that failed before any
        byte raises and keeps nothing (the batch is still whole); one cut
        short goes on from a copy of the rest (``memoryview`` detaches the
        batch), which is kept as :attr:`rest` if it fails too.
        """
        written = writes.write_batch(fd, batch)
        if written < batch.nbytes:
            try:
                rest = memoryview(batch)[written:]
            except MemoryError:
                self._owed = (batch, written)  # settle() copies it out when it can
                raise
            try:
                self.write_all(writes, fd, rest, name)
            except BaseException:
                if self.rest is None:
                    self.rest = rest  # those bytes are owed, whatever stopped them
                raise
