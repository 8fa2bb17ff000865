"""The ``file:PATH`` sink: appends NDJSON to a file, one ``write(2)`` per batch.

The file is opened with ``O_APPEND`` (created if missing, never truncated),
so a run adds to what earlier runs wrote, and other appenders cannot
overwrite it. The directory must exist: a missing one is an error naming
it, not something created on the user's behalf.

Durability: each batch is handed to the kernel by ``write_batch`` itself
(there is no buffer in the process), so ``flush()`` has nothing to push;
``close()`` calls ``fsync`` before closing, so a run that ended cleanly is
on disk, not only in the page cache. With fsync on, every
``WRITEBACK_STEP`` (8 MiB) written, the sink asks the kernel to start
writing those bytes to disk without waiting (``_writeback``), so that the
fsync at the end has only the last few MiB left instead of the whole run.

Small writes keep the GIL: a write of up to 64 KiB to a regular file does
not let the GIL go, unless a recent one was slow (``HeldWrites`` of
``logpipe._filewrite``, shared with the stdout sink). Pipes, FIFOs,
terminals and devices (``file:/dev/stdout``) always let it go.

Held batches: on a regular file the sink says ``takes_held_batches``, so
workers hand it batches whose bytes are still in the ring, and each is
written from there with ``writev(2)`` instead of being copied out of the
ring first (``HeldWrites.write_batch``). A batch that needs more than the
plain write (the rest of a failed one pending, a rotation) is copied out
and written as any other.

A write that fails part-way (a full disk usually first shows as a short
write) keeps the batch's unwritten rest: the next write, the retry of that
batch or any other, completes it first, so retries neither duplicate the
part already written nor leave a torn line in the file.

Rotation (``--rotate-bytes N``, ``--rotate-keep K``): before a batch that
would take the file past N bytes, the file is renamed ``PATH.1`` (an
existing ``PATH.1`` becomes ``PATH.2``, and so on up to ``PATH.K``) and a
new, empty ``PATH`` is opened. A batch is never split across two files, so
a file exceeds N bytes only when one batch alone is larger (it is then the
file's only batch). Rotation runs under the lock that serialises the
writes, so no batch lands in a file being renamed.

Rotation deletes data by design: the rename onto ``PATH.K`` discards the
oldest file, so only the newest ``K`` rotated files (and ``PATH``) are
kept; a reader that must see every record has to collect the files before
K more rotations. Only the run ``PATH.1``, ``PATH.2``... up to the first
missing number is shifted (one rename per kept file); files beyond
``PATH.K`` or beyond a gap, left by an earlier run with a larger ``K`` or
by hand, are not touched. Each rotated file is synced to disk (when
``fsync`` is on) before the new one takes its place.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING, ClassVar

from logpipe._filewrite import HeldWrites
from logpipe.domain.records import frozen
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks._base import CountingSink
from logpipe.infrastructure.sinks._heldwrite import UnfinishedBatch
from logpipe.infrastructure.sinks._writeback import WRITEBACK_STEP, start_writeback

if TYPE_CHECKING:
    from logpipe._ringbuf import Batch
    from logpipe.domain.config import PipelineConfig

__all__ = ["FileSink", "FileSinkConfig"]

# Errors after which the same write may succeed later (a disk freed, a quota raised).
_TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EAGAIN, errno.EINTR, errno.EIO})
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


class FileSink(CountingSink):
    """Appends each batch to a file with one ``write(2)`` (looping on short writes).

    Args:
        path: the file; created if missing (mode 0666 minus the umask).
        fsync: whether :meth:`close` (and each rotation) syncs the file to disk first.
        rotate_bytes: rotate before a batch that would take the file past
            this many bytes; None never rotates.
        rotate_keep: how many rotated files (``PATH.1`` .. ``PATH.K``) to
            keep; the oldest beyond that is deleted.

    Raises:
        SinkError: the file cannot be opened; the message names the path
            and the reason (e.g. its directory does not exist).
        ValueError: rotate_bytes or rotate_keep is below 1.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = True,
        rotate_bytes: int | None = None,
        rotate_keep: int = 5,
    ) -> None:
        self.path = os.fspath(path)
        super().__init__(f"file:{self.path}")
        if rotate_bytes is not None and rotate_bytes < 1:
            raise ValueError(f"{self.name}: rotate_bytes {rotate_bytes!r} is out of range (must be >= 1)")
        if rotate_keep < 1:
            raise ValueError(f"{self.name}: rotate_keep {rotate_keep!r} is out of range (must be >= 1)")
        self._fsync = fsync
        self.rotate_bytes = rotate_bytes
        self.rotate_keep = rotate_keep
        self._rotations = 0
        self._unfinished = UnfinishedBatch()  # the rest of a batch whose write failed part-way
        self._fd = -1  # -1 only between a rotation and a successful reopen
        # Every write goes through it; regular and written (the current
        # file's size, which rotation is decided on) are set by _open.
        self._writes = HeldWrites()
        self._written_back = 0  # self._writes.written when writeback was last asked for
        self._open()

    @property
    def rotations(self) -> int:
        """How many times the file has been rotated by this sink."""
        return self._rotations

    def _open(self) -> None:
        try:
            fd = os.open(self.path, _FLAGS, 0o666)
        except FileNotFoundError as exc:
            parent = os.path.dirname(self.path) or "."
            if not os.path.isdir(parent):
                raise SinkError(
                    f"cannot open {self.name}: directory {parent!r} does not exist "
                    "(logpipe does not create it)"
                ) from exc
            raise SinkError(f"cannot open {self.name}: {exc.strerror}") from exc
        except OSError as exc:
            raise SinkError(f"cannot open {self.name}: {exc.strerror or exc}") from exc
        try:
            status = os.fstat(fd)
            self._writes.written = status.st_size  # appending: what is there counts
            self._writes.regular = stat.S_ISREG(status.st_mode)
        except OSError:
            self._writes.written, self._writes.regular = 0, False
        self._written_back = self._writes.written
        self._fd = fd

    @property
    def takes_held_batches(self) -> bool:
        """Whether workers should hand this sink held batches (``get_batch(hold=True)``).

        Yes for a regular file, whose writes return promptly: a held batch
        is written from the ring's memory, and keeps its slots only that
        long. Not for a pipe or a device, where a write may wait for a
        reader while the batch keeps its slots from the producers.
        """
        return self._writes.regular

    def _write(self, view: memoryview) -> None:
        # A batch that failed part-way has its rest written first, so the
        # line it cut stays whole. It belongs to the current file: rotation
        # waits until it is done.
        if self._unfinished.settle(view.obj, self._write_view):
            return
        if self._fd < 0:
            self._open()  # a rotation renamed the file but could not open the new one
        elif self._rotation_due(len(view)):
            self._rotate()
        self._write_view(view)

    def _write_held(self, batch: Batch) -> bool:
        # Only the plain case: a rest to finish, a rotation or a file to
        # reopen go through _write (the batch is copied out for it).
        if (
            self._unfinished.pending
            or self._fd < 0
            or not self._writes.regular
            or self._rotation_due(batch.nbytes)
        ):
            return False
        try:
            self._unfinished.write_held(self._writes, self._fd, batch, self.name)
        except OSError as exc:
            raise self._write_failed(exc) from exc
        self._write_back()
        return True

    def _rotation_due(self, nbytes: int) -> bool:
        size = self._writes.written  # bytes written before a failure count too: they are in the file
        return self.rotate_bytes is not None and size > 0 and size + nbytes > self.rotate_bytes

    def _rotate(self) -> None:
        """PATH.(K-1) -> PATH.K, ..., PATH -> PATH.1, then a new empty PATH."""
        old = self._fd
        try:
            if self._fsync:
                os.fsync(old)
            # The rotated files in use: PATH.1 .. PATH.n, up to the first gap.
            n = 0
            while n < self.rotate_keep and os.path.lexists(f"{self.path}.{n + 1}"):
                n += 1
            # Oldest first, so each rename lands on a name already moved on;
            # the rename onto PATH.K (when n == K) is what deletes the oldest file.
            for i in range(min(n, self.rotate_keep - 1), 0, -1):
                os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            os.rename(self.path, f"{self.path}.1")
        except OSError as exc:
            # Nothing lost: the current file stays open and is still PATH
            # (or PATH.1 if only the last step failed: the next write retries).
            raise SinkError(
                f"{self.name}: rotation failed ({exc.strerror or exc})",
                retryable=exc.errno in _TRANSIENT,
            ) from exc
        # From here on the open file is PATH.1: never write to it again.
        self._fd = -1
        self._rotations += 1
        try:
            os.close(old)
        except OSError:
            pass  # its data is synced (or handed to the kernel) already
        self._open()

    def _write_view(self, view: memoryview) -> None:
        """Write all of ``view``; on failure after progress, keep the rest as unfinished."""
        try:
            self._unfinished.write_all(self._writes, self._fd, view, self.name)
        except OSError as exc:
            raise self._write_failed(exc) from exc
        self._write_back()

    def _write_failed(self, exc: OSError) -> SinkError:
        return SinkError(f"{self.name}: write failed ({exc.strerror or exc})", retryable=exc.errno in _TRANSIENT)

    def _write_back(self) -> None:
        size = self._writes.written
        if self._fsync and size - self._written_back >= WRITEBACK_STEP:
            start_writeback(self._fd, self._written_back, size - self._written_back)
            self._written_back = size

    def _close(self) -> None:
        if self._fd < 0:
            return  # rotated, and the new file never opened: nothing to close
        try:
            if self._fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise SinkError(f"{self.name}: fsync failed ({exc.strerror or exc})") from exc
        finally:
            os.close(self._fd)


@frozen
class FileSinkConfig:
    """Builds a :class:`FileSink`; spec ``file:PATH`` or ``file://PATH``.

    Attributes:
        path: the file to append to.
        fsync: whether closing (and each rotation) syncs it to disk.
        rotate_bytes: rotate before a batch would take the file past this
            many bytes (``--rotate-bytes``); None never rotates.
        rotate_keep: rotated files kept (``--rotate-keep``); older ones are deleted.
    """

    scheme: ClassVar[str] = "file"
    usage: ClassVar[str] = "file:PATH"
    takes_target: ClassVar[bool] = True

    path: str
    fsync: bool = True
    rotate_bytes: int | None = None
    rotate_keep: int = 5

    @classmethod
    def from_target(cls, target: str | None, settings: PipelineConfig | None = None) -> FileSinkConfig:
        """The config for ``file:<target>``; the registry has checked it is non-empty.

        Args:
            target: the path.
            settings: the run's PipelineConfig (its ``rotate_bytes`` and
                ``rotate_keep`` are taken), or None for no rotation.
        """
        if not target:
            raise ValueError("has no PATH")
        if settings is None:
            return cls(path=target)
        return cls(path=target, rotate_bytes=settings.rotate_bytes, rotate_keep=settings.rotate_keep)

    def build(self, options: PipelineConfig | None = None) -> FileSink:
        """Open the file for appending.

        Args:
            options: the run's PipelineConfig; when given, its
                ``rotate_bytes`` and ``rotate_keep`` replace this config's.

        Raises:
            SinkError: the file cannot be opened.
        """
        rotate_bytes, rotate_keep = self.rotate_bytes, self.rotate_keep
        if options is not None:
            rotate_bytes, rotate_keep = options.rotate_bytes, options.rotate_keep
        return FileSink(self.path, fsync=self.fsync, rotate_bytes=rotate_bytes, rotate_keep=rotate_keep)
