"""The ``stdout`` sink: NDJSON to standard output, one write per batch.

Batches go to ``sys.stdout.buffer`` (the binary layer under ``print``), so
they keep their order with whatever else the process has flushed there. A
batch larger than the stream's buffer is written straight from the batch's
memory; a smaller one is copied into the buffer and flushed at once.

When standard output is a regular file (``logpipe run --sink stdout >
out.ndjson``, systemd's ``StandardOutput=file:``), the stream is flushed and
each batch goes to its file descriptor with the file sink's writes
(``HeldWrites`` of ``logpipe._filewrite``): up to 64 KiB without letting
the GIL go, as the file sink does, which at the spec's defaults moves
several times the logs a second of a write through the stream
(``bench/bench_pipeline.py --writes both``).
A write that fails part-way there (a full disk) is completed first by the
next one, as in the file sink: retries neither duplicate nor tear a line.
There, too, the workers hand the sink held batches, written straight from
the ring's memory (``takes_held_batches``; see the file sink).

When the reader goes away (``logpipe run --sink stdout | head``) the write
fails with a :class:`~logpipe.exceptions.SinkError` naming the broken pipe,
and the process's stdout is pointed at /dev/null so that nothing printed
later (nor the interpreter's final flush) dies on the same broken pipe.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, BinaryIO, ClassVar

from logpipe._filewrite import HeldWrites
from logpipe.domain.records import frozen
from logpipe.exceptions import SinkError
from logpipe.infrastructure._files import is_regular_file
from logpipe.infrastructure.sinks._base import CountingSink
from logpipe.infrastructure.sinks._heldwrite import UnfinishedBatch

if TYPE_CHECKING:
    from logpipe._ringbuf import Batch

__all__ = ["StdoutSink", "StdoutSinkConfig"]

_BROKEN = "stdout: the reader has closed the pipe (broken pipe)"


def _write_failed(exc: OSError) -> SinkError:
    return SinkError(f"stdout: write failed ({exc.strerror or exc})")


def _regular_file_fd(stream: BinaryIO) -> int:
    """The stream's file descriptor if it is open on a regular file, else -1."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return -1
    return fd if is_regular_file(fd) else -1


class StdoutSink(CountingSink):
    """Writes each batch to a binary stream and flushes it.

    Args:
        stream: where to write; default ``sys.stdout.buffer`` as it is
            when the sink is made.
    """

    def __init__(self, stream: BinaryIO | None = None) -> None:
        super().__init__("stdout")
        self._stream: BinaryIO = stream if stream is not None else sys.stdout.buffer
        self._broken = False
        # The stream's descriptor when it is a regular file: batches then go
        # straight to it (module doc); -1 for pipes, terminals, in-memory streams.
        self._file_fd = _regular_file_fd(self._stream)
        self._writes = HeldWrites(regular=True)
        self._unfinished = UnfinishedBatch()  # the rest of a batch whose write to the file failed part-way

    def _write(self, view: memoryview) -> None:
        if self._broken:
            raise SinkError(_BROKEN, retryable=False)
        try:
            if self._file_fd >= 0:
                self._stream.flush()  # what the process wrote to the stream before goes first
                if not self._unfinished.settle(view.obj, self._write_to_file):
                    self._write_to_file(view)
            else:
                self._stream.write(view)
                self._stream.flush()
        except BrokenPipeError as exc:
            self._broken = True
            self._silence()
            raise SinkError(_BROKEN, retryable=False) from exc
        except OSError as exc:
            raise _write_failed(exc) from exc

    @property
    def takes_held_batches(self) -> bool:
        """Whether workers should hand this sink held batches: yes when
        standard output is a regular file (as the file sink: its writes
        return promptly, so a batch keeps its ring slots only that long)."""
        return self._file_fd >= 0

    def _write_held(self, batch: Batch) -> bool:
        # A held batch straight from the ring to the file; anything but the
        # plain case (no file, a rest pending, a broken stream) copies it out.
        if self._file_fd < 0 or self._broken or self._unfinished.pending:
            return False
        try:
            self._stream.flush()  # what the process wrote to the stream before goes first
            self._unfinished.write_held(self._writes, self._file_fd, batch, self.name)
        except OSError as exc:
            raise _write_failed(exc) from exc
        return True

    def _write_to_file(self, view: memoryview) -> None:
        # An OSError goes on to _write, which says "stdout: write failed (...)".
        self._unfinished.write_all(self._writes, self._file_fd, view, self.name)

    def _flush(self) -> None:
        if self._broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            self._broken = True
            self._silence()
            raise SinkError(_BROKEN, retryable=False) from exc
        except OSError as exc:
            raise SinkError(f"stdout: flush failed ({exc.strerror or exc})") from exc

    def _close(self) -> None:
        # The stream is the process's, not ours: flush it, leave it open.
        self._flush()

    def _silence(self) -> None:
        """Point the stream's fd at /dev/null; the Python docs' remedy for EPIPE."""
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return  # not backed by a file descriptor: nothing will flush to it later
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


@frozen
class StdoutSinkConfig:
    """Builds a :class:`StdoutSink`; spec ``stdout``."""

    scheme: ClassVar[str] = "stdout"
    usage: ClassVar[str] = "stdout"
    takes_target: ClassVar[bool] = False

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> StdoutSinkConfig:
        """The config for spec ``stdout`` (``target`` is always None here)."""
        return cls()

    def build(self, settings: object = None) -> StdoutSink:
        """A StdoutSink on the current ``sys.stdout.buffer``."""
        return StdoutSink()
