"""The ``stdout`` sink: NDJSON to standard output, one write per batch.

Batches go to ``sys.stdout.buffer`` (the binary layer under ``print``), so
they keep their order with whatever else the process has flushed there. A
batch larger than the stream's buffer is written straight from the batch's
memory; a smaller one is copied into the buffer and flushed at once.

When the reader goes away (``logpipe run --sink stdout | head``) the write
fails with a :class:`~logpipe.exceptions.SinkError` naming the broken pipe,
and the process's stdout is pointed at /dev/null so that nothing printed
later (nor the interpreter's final flush) dies on the same broken pipe.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import BinaryIO, ClassVar

from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks._base import CountingSink

__all__ = ["StdoutSink", "StdoutSinkConfig"]

_BROKEN = "stdout: the reader has closed the pipe (broken pipe)"


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

    def _write(self, view: memoryview) -> None:
        if self._broken:
            raise SinkError(_BROKEN, retryable=False)
        try:
            self._stream.write(view)
            self._stream.flush()
        except BrokenPipeError as exc:
            self._broken = True
            self._silence()
            raise SinkError(_BROKEN, retryable=False) from exc
        except OSError as exc:
            raise SinkError(f"stdout: write failed ({exc.strerror or exc})") from exc

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


@dataclass(frozen=True)
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
