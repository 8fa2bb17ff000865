"""The ``stdin`` source: lines from standard input until end of file.

``producer | logpipe run --source stdin --sink file:out.ndjson`` reads fd 0
with ``read(2)`` calls of up to 1 MiB (``CHUNK_SIZE``; a pipe gives at most
what it holds) into one reused buffer, made by the Cython line framer
itself (``LineFramer.feed_from``), which frames and pushes each chunk before
it takes the GIL back: one read per poll from a pipe, a terminal or a
socket; from a regular file (``< FILE``) reads go on while they fill the
buffer, for up to 10 ms, as in the file source. At end of input the last
line is delivered even without its newline, and the source returns, so the
pipeline shuts down cleanly with its usual report.

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
from typing import ClassVar

from logpipe.domain.ports import Ring, StopFlag
from logpipe.domain.records import frozen
from logpipe.infrastructure._files import is_regular_file
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

    @property
    def records(self) -> int:
        """Records pushed into the ring so far."""
        return self._input.records if self._input is not None else 0

    def run(self, ring: Ring, stop: StopFlag) -> None:
        """Push stdin's lines until end of input or ``stop``."""
        fd = self._fd if self._fd is not None else _stdin_fd()
        widen_pipe(fd, PIPE_CAPACITY)
        self._input = lines = LineInput(ring, self.context, self.name)
        view = ReadBuffer(CHUNK_SIZE).view  # reused: the framer copies what it keeps
        # A pipe, a terminal or a socket is read once per poll (a second read
        # could wait for input without looking at stop); a file (``< FILE``)
        # is read on while reads fill the buffer, as the file source does.
        once = not is_regular_file(fd)
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        while not stop.is_set():
            if not poller.poll(POLL_MS):
                continue
            try:
                n, pushed = lines.read_from(fd, view, stop, once=once)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                if exc.errno != errno.EBADF:  # no stdin at all reads as empty
                    raise
                n, pushed = 0, True
            if not n:
                self.eof = True
                if lines.finish(stop):
                    return
                break  # stopped while the ring was full: as any stop
            if not pushed:
                break
        self._stop(lines)

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
        # The framer's line begun and not ended: its first 4 KiB and its size.
        partial = None if self.eof else framer.partial
        if partial is not None and partial[0] != b"\r":
            self.partial_at_stop = 1
            self.context.dead_letter.reject(self.name, PARTIAL_AT_STOP, *partial)
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


@frozen
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
