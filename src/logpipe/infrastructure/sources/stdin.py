"""The ``stdin`` source: lines from standard input until end of file.

``producer | logpipe run --source stdin --sink file:out.ndjson`` reads fd 0
with ``read(2)`` calls of up to 1 MiB (``CHUNK_SIZE``; a pipe gives at most
what it holds) into one reused buffer and hands them to the Cython line
framer. At end of input the last line is delivered even without
its newline, and the source returns, so the pipeline shuts down cleanly with
its usual report.

When fd 0 is a pipe, the source first raises the pipe's capacity from
Linux's default 64 KiB to :data:`PIPE_CAPACITY` (256 KiB), so each
``read(2)`` takes four times as much: ``cat FILE | logpipe
run --source stdin ...`` moved 5 M lines in 0.48 s inside the run instead
of 0.67 s (``bench/pipe_capacity.py``; docs/benchmarks.md, issue 9's
eighth round). If the kernel refuses (a user over
``/proc/sys/fs/pipe-user-pages-soft``, a ``pipe-max-size`` below it), the
pipe keeps its size and the run goes on. The price: at a stop before end
of input, up to 256 KiB instead of 64 KiB may still sit unread in the
pipe.

It stays stoppable while the producer is silent: fd 0 is polled with a
20 ms timeout, so Ctrl+C is honoured within ~20 ms even when no byte
arrives. On a stop before end of input (the same contract as the TCP
source): lines already split off get at most :data:`STOP_FLUSH` seconds to
enter the ring (the workers are still draining it then); any left are
written to the dead letter with reason :data:`UNPUSHED_AT_STOP` and counted
in ``metrics.invalid`` and :attr:`StdinSource.unpushed_at_stop`. A partial last line (its
newline never came) may be cut anywhere, so it is not delivered as a record:
it goes to the dead letter with reason :data:`PARTIAL_AT_STOP`, counted in
``metrics.invalid``. Bytes still in the pipe are not read.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import stat
import sys
import time
from dataclasses import dataclass
from typing import ClassVar

from logpipe.domain.ports import Ring, StopFlag
from logpipe.infrastructure.deadletter import KEPT_BYTES
from logpipe.infrastructure.sources._lines import CHUNK_SIZE, PUSH_SLICE, LineInput, ReadBuffer
from logpipe.infrastructure.sources.context import SourceContext

__all__ = ["PARTIAL_AT_STOP", "PIPE_CAPACITY", "StdinSource", "StdinSourceConfig"]

# Longest wait for input before the stop signal is looked at again (ms).
POLL_MS = 20
# After a stop, how long lines already read may still wait for ring room.
STOP_FLUSH = 0.5  # workers drain the ring meanwhile; only a stalled sink uses it all
PARTIAL_AT_STOP = "stdin open at shutdown: partial line"
UNPUSHED_AT_STOP = "read but not delivered: shutdown while the ring stayed full"
#: What a pipe on stdin is widened to (the eighth round's measure; Linux's
#: pipe-max-size, 1 MiB by default, would allow up to CHUNK_SIZE, and a
#: stop leaves what the pipe holds unread).
PIPE_CAPACITY = 256 * 1024


class StdinSource:
    """Reads lines from a file descriptor (standard input by default).

    Args:
        context: format, max_line, metrics, dead_letter.
        fd: the descriptor to read; default: standard input's.

    Attributes:
        name: ``"stdin"``; rejected lines are filed under it.
        eof: whether the end of input was reached.
        unpushed_at_stop: complete lines a stop left undelivered (the ring
            stayed full through :data:`STOP_FLUSH`).
        partial_at_stop: 1 if a stop found a partial line (dead-lettered).
    """

    name = "stdin"

    def __init__(self, context: SourceContext, *, fd: int | None = None) -> None:
        self.context = context
        self._fd = fd
        self.eof = False
        self.unpushed_at_stop = 0
        self.partial_at_stop = 0
        self._input: LineInput | None = None
        # The line being received (after the last newline): its first bytes and size.
        self._partial_head = b""
        self._partial_size = 0

    @property
    def records(self) -> int:
        """Records pushed into the ring so far."""
        return self._input.records if self._input is not None else 0

    def run(self, ring: Ring, stop: StopFlag) -> None:
        """Push stdin's lines until end of input or ``stop``."""
        fd = self._fd if self._fd is not None else _stdin_fd()
        widen_pipe(fd, PIPE_CAPACITY)
        self._input = lines = LineInput(ring, self.context, self.name)
        buffer = ReadBuffer(CHUNK_SIZE)  # reused: the framer copies what it keeps
        view = buffer.view
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        while not stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            try:
                n = os.readv(fd, (view,))
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                if exc.errno != errno.EBADF:  # no stdin at all reads as empty
                    raise
                n = 0
            if not n:
                self.eof = True
                if lines.finish(stop):
                    return
                break  # stopped while the ring was full: as any stop
            self._note_partial(buffer, n)
            if not lines.feed(view[:n], stop):
                break
        self._stop(lines)

    def _note_partial(self, buffer: ReadBuffer, n: int) -> None:
        # Kept only for the dead letter, should a stop cut this line short.
        last = buffer.rfind_newline(n)  # from the end: stops within one line
        if last >= 0:
            self._partial_size = n - last - 1
            self._partial_head = bytes(buffer.view[last + 1 : last + 1 + min(KEPT_BYTES, self._partial_size)])
        else:
            room = KEPT_BYTES - len(self._partial_head)
            if room > 0:
                self._partial_head += bytes(buffer.view[: min(n, room)])
            self._partial_size += n

    def _stop(self, lines: LineInput) -> None:
        framer = lines.framer
        deadline = time.monotonic() + STOP_FLUSH
        while framer.pending_lines and not framer.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            framer.feed(b"", timeout=min(remaining, PUSH_SLICE))
            lines.report()
        # Lines read but still waiting for room (the sink is stalled): stdin
        # cannot be read again, so they go to the dead letter, not nowhere.
        for line in framer.take_held():
            self.unpushed_at_stop += 1
            self.context.dead_letter.reject(self.name, UNPUSHED_AT_STOP, line)
            self.context.metrics.invalid.add(1)
        if not self.eof and self._partial_size and self._partial_head != b"\r":
            self.partial_at_stop = 1
            self.context.dead_letter.reject(self.name, PARTIAL_AT_STOP, self._partial_head, self._partial_size)
            self.context.metrics.invalid.add(1)


def widen_pipe(fd: int, capacity: int) -> bool:
    """Raise the capacity of the pipe ``fd`` to at least ``capacity`` bytes; whether it is now that large.

    Anything but a pipe (a file, a terminal, a socket, a closed fd) is
    left alone, and so is a pipe the kernel will not widen (the reads
    then stay as large as the pipe allows).
    """
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) >= capacity:
            return True
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, capacity) >= capacity
    except OSError:  # EPERM: over the user's pipe allowance or pipe-max-size; EBADF: no stdin
        return False


def _stdin_fd() -> int:
    stream = sys.stdin
    if stream is None:
        return 0
    try:
        return stream.fileno()
    except (OSError, ValueError):
        return 0


@dataclass(frozen=True)
class StdinSourceConfig:
    """Spec ``stdin``: standard input, until end of file."""

    scheme: ClassVar[str] = "stdin"
    usage: ClassVar[str] = "stdin"
    takes_target: ClassVar[bool] = False

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> StdinSourceConfig:
        """The config for spec ``stdin``."""
        return cls()

    def build(self, context: SourceContext) -> StdinSource:
        """The source, reading this process's standard input."""
        return StdinSource(context)
