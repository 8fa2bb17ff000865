"""The ``file:PATH`` source: a file's lines, then its appends, like ``tail -F``.

Reading: 1 MiB ``read(2)`` calls made by the Cython line framer itself,
which splits, validates and pushes the lines without the GIL, and reads the
next chunk without taking the GIL in between for up to 10 ms while reads
come back full (``LineInput.read_from``); no Python runs per line. At the
end of the file the source polls every 50 ms (``os.stat``, no inotify) and
notices three things:

- appends: read on;
- rotation (PATH now names another file, by device and inode): the new
  file is opened at once (so a second rotation cannot hide it), the old
  one is read on through the descriptor still open until it has been idle
  at its end for :data:`ROTATE_WAIT` (a writer often adds a few lines to
  the renamed file before it reopens PATH), its last partial line is
  delivered as a line, and the new file is read from offset 0. Lines a
  writer adds to the renamed file after that are not read, nor is a file
  created and rotated away again between two polls;
- truncation (the file is shorter than what was read of it): its partial
  line is delivered and reading starts again at offset 0 (counted in
  :attr:`FileSource.truncations`). Like every polling tail, a file that is
  truncated and then refilled past the old offset within one poll looks
  like plain appends.

With ``--once`` the file is read to its end and the source returns, so the
pipeline shuts down with everything flushed.

Checkpoints (``--state-dir``): the pipeline calls :meth:`FileSource.commit`
with its flush watermark, the number of leading records that sinks have
written. The source keeps a mark (records pushed so far, file, byte offset
accounted for) after each chunk, and saves the newest mark the watermark
covers, so the saved offset never runs ahead of the sink. A restart
resumes there when the file at PATH is still the same file (device and
inode), from 0 when it is shorter than the offset; when PATH has been
rotated since, the old file is looked up by inode in PATH's directory and
its rest read first. A ``kill -9`` at any moment, then a restart, loses
no line; lines after the saved offset are delivered again (at-least-once).
"""

from __future__ import annotations

import collections
import errno
import os
import threading
import time
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from logpipe.domain.ports import Ring, StopFlag
from logpipe.domain.records import frozen
from logpipe.infrastructure.sources._lines import CHUNK_SIZE, LineInput, ReadBuffer
from logpipe.infrastructure.sources.context import SourceContext

# Only a run with --state-dir keeps checkpoints: it imports their module
# when it makes its store.
if TYPE_CHECKING:
    from logpipe.infrastructure.sources.checkpoint_store import Checkpoint, CheckpointStore

__all__ = ["FileSource", "FileSourceConfig"]

# How often the end of the file is looked at for appends, rotation, truncation.
POLL_INTERVAL = 0.05
# How long a renamed file must stay idle at its end before the new file is
# read (with --once: not at all, what is there is read at once).
ROTATE_WAIT = 1.0
# Marks kept between commits at most; past it every other one is dropped
# (fewer marks only make a checkpoint lag a little more, never skip a line).
MAX_MARKS = 65536
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


class _Mark(NamedTuple):
    """After ``records`` records were pushed, ``offset`` bytes of file (device, inode) were done."""

    records: int
    device: int
    inode: int
    offset: int


class FileSource:
    """Reads a file's lines into the ring and follows it.

    Args:
        path: the file; in follow mode it may not exist yet (it is waited for).
        context: format, max_line, metrics, dead_letter, state_dir, once.
        poll_interval: seconds between looks at the end of the file.
        rotate_wait: seconds a renamed file must stay idle before the new one is read.

    Attributes:
        name: ``"file:PATH"``; rejected lines are filed under it.
        records: records pushed into the ring so far.
        rotations: times PATH was found to name a new file.
        truncations: times the file was found shorter than what was read.
        resumed_from: the offset the first file was read from (0, or a
            checkpoint's offset).
        checkpoint_error: why the last checkpoint could not be saved, or None.
    """

    def __init__(
        self,
        path: str,
        context: SourceContext,
        *,
        poll_interval: float = POLL_INTERVAL,
        rotate_wait: float = ROTATE_WAIT,
    ) -> None:
        self.path = path
        self.name = f"file:{path}"
        self.context = context
        self.poll_interval = poll_interval
        self.rotate_wait = rotate_wait
        self.store: CheckpointStore | None = None
        if context.state_dir:
            from logpipe.infrastructure.sources.checkpoint_store import CheckpointStore

            self.store = CheckpointStore(context.state_dir, path)
        self.rotations = 0
        self.truncations = 0
        self.resumed_from = 0
        self.checkpoint_error: str | None = None
        self._records_before = 0  # records of the inputs finished already
        self._input: LineInput | None = None
        self._fd = -1
        self._device = 0
        self._inode = 0
        self._base = 0  # file offset where the current input's framing began
        self._pos = 0  # file offset read up to
        self._idle_since: float | None = None  # at the end of the file since
        self._next: tuple[int, os.stat_result] | None = None  # what PATH named after a rotation
        self._marks: collections.deque[_Mark] = collections.deque()
        self._marks_lock = threading.Lock()  # run() appends, commit() pops
        self._commit_lock = threading.Lock()
        self._saved: Checkpoint | None = None
        self._latest: Checkpoint | None = None

    @property
    def records(self) -> int:
        """Records pushed into the ring so far."""
        current = self._input.records if self._input is not None else 0
        return self._records_before + current

    # -- the run ----------------------------------------------------------------

    def run(self, ring: Ring, stop: StopFlag) -> None:
        """Read and follow the file until ``stop`` (or its end, with ``once``)."""
        # One buffer for every read: the framer copies what it keeps.
        view = ReadBuffer(CHUNK_SIZE).view
        try:
            if not self._open_first(ring, stop):
                return
            while not stop.is_set():
                assert self._input is not None
                n, pushed = self._input.read_from(self._fd, view, stop)
                if n:
                    self._pos += n
                    self._idle_since = None
                    if not pushed or self._input.closed:
                        return
                    continue
                if self._idle_since is None:
                    self._idle_since = time.monotonic()
                if self._follow_move(ring, stop):
                    continue
                if self.context.once:
                    self._finish(stop)
                    return
                if self._input is not None and self._input.closed:
                    return
                _sleep(stop, self.poll_interval)
        finally:
            self._close()

    def _finish(self, stop: StopFlag) -> bool:
        assert self._input is not None
        return self._input.finish(stop)

    def _open_first(self, ring: Ring, stop: StopFlag) -> bool:
        """Open the file to start with, at the offset to start from; False if stopped."""
        checkpoint = self.store.load() if self.store is not None else None
        while True:
            opened = self._try_open(self.path)
            if opened is not None:
                fd, st = opened
                break
            if self.context.once:
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.path)
            if _sleep(stop, self.poll_interval):
                return False
        offset = 0
        if checkpoint is not None:
            if checkpoint.same_file(st):
                offset = checkpoint.offset if checkpoint.offset <= st.st_size else 0
            else:
                rotated = self._find_rotated(checkpoint)
                if rotated is not None:
                    # Finish the file PATH named at the checkpoint first;
                    # the one PATH names now comes next.
                    self._next = (fd, st)
                    fd, st = rotated
                    offset = checkpoint.offset
        self.resumed_from = offset
        self._start(ring, fd, st, offset)
        return True

    def _find_rotated(self, checkpoint: Checkpoint) -> tuple[int, os.stat_result] | None:
        """The checkpoint's file under another name in PATH's directory, opened; or None."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return None
        for entry in entries:
            try:
                if entry.inode() != checkpoint.inode or not entry.is_file(follow_symlinks=False):
                    continue
            except OSError:
                continue
            opened = self._try_open(entry.path)
            if opened is None:
                continue
            fd, st = opened
            if checkpoint.same_file(st) and st.st_size >= checkpoint.offset:
                return fd, st
            os.close(fd)
        return None

    @staticmethod
    def _try_open(path: str) -> tuple[int, os.stat_result] | None:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        return fd, st

    def _start(self, ring: Ring, fd: int, st: os.stat_result, offset: int) -> None:
        """Make ``fd`` the current input, framed from ``offset``."""
        previous = self._input
        self._fd = fd
        self._device, self._inode = st.st_dev, st.st_ino
        os.lseek(fd, offset, os.SEEK_SET)
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass
        self._base = self._pos = offset
        self._idle_since = None
        # Replaced before the total moves on: a reader of .records from
        # another thread may see too few for a moment, never too many.
        self._input = LineInput(ring, self.context, self.name, progress=self._mark)
        if previous is not None:
            self._records_before += previous.records
        self._mark()

    def _follow_move(self, ring: Ring, stop: StopFlag) -> bool:
        """At the end of the current file: switch on rotation or truncation.

        Returns:
            True if reading should go on at once (a new file, or the old one
            from 0); False if nothing changed (or stop was set meanwhile).
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None  # mid-rotation: the new file is not there yet
        if self._next is None and st is not None and (st.st_dev, st.st_ino) != (self._device, self._inode):
            self._next = self._try_open(self.path)
        if self._next is not None:
            idle = time.monotonic() - (self._idle_since or 0.0)
            if not self.context.once and idle < self.rotate_wait:
                return False  # the writer may not have reopened PATH yet
            if os.fstat(self._fd).st_size > self._pos:
                return True  # it grew since the last read: read that first
            if not self._finish(stop):
                return False
            new_fd, new_st = self._next
            self._next = None
            os.close(self._fd)
            self._fd = -1
            self.rotations += 1
            self._start(ring, new_fd, new_st, 0)
            return True
        if os.fstat(self._fd).st_size < self._pos:
            if not self._finish(stop):
                return False
            self.truncations += 1
            self._start(ring, self._fd, os.fstat(self._fd), 0)
            return True
        return False

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._next is not None:
            os.close(self._next[0])
            self._next = None

    # -- checkpoints ------------------------------------------------------------

    def _mark(self) -> None:
        if self.store is None or self._input is None:
            return
        mark = _Mark(self.records, self._device, self._inode, self._base + self._input.consumed)
        with self._marks_lock:
            marks = self._marks
            if marks and marks[-1].records == mark.records:
                # No record since: the later offset covers the same records
                # plus lines that never enter the ring (blank, rejected) or,
                # after a switch, a file whose predecessor is done.
                marks[-1] = mark
                return
            if len(marks) >= MAX_MARKS:
                self._marks = marks = collections.deque(list(marks)[::-2][::-1])
            marks.append(mark)

    @property
    def keeps_checkpoints(self) -> bool:
        """Whether :meth:`commit` saves anything: only with a state directory.

        Without one the pipeline keeps no flush watermark for this source
        and never calls :meth:`commit`.
        """
        return self.store is not None

    def commit(self, watermark: int) -> None:
        """Save the offset up to which every line has been written by a sink.

        Args:
            watermark: how many of this source's first records sinks have
                written (the pipeline's flush watermark).
        """
        if self.store is None:
            return
        from logpipe.infrastructure.sources.checkpoint_store import Checkpoint

        with self._commit_lock:
            best: _Mark | None = None
            with self._marks_lock:
                marks = self._marks
                while marks and marks[0].records <= watermark:
                    best = marks.popleft()
            if best is not None:
                self._latest = Checkpoint(self.store.input_path, best.device, best.inode, best.offset)
            if self._latest is None or self._latest == self._saved:
                return
            try:
                self.store.save(self._latest)
            except OSError as exc:
                # Kept in _latest: the next commit tries again. Reading goes
                # on; a restart would only re-read more.
                self.checkpoint_error = f"cannot save checkpoint {self.store.file}: {exc.strerror or exc}"
                return
            self._saved = self._latest
            self.checkpoint_error = None


@frozen
class FileSourceConfig:
    """Spec ``file:PATH``: follow a file (``file:///var/log/app.log`` reads the same).

    Attributes:
        path: the file to read.
    """

    scheme: ClassVar[str] = "file"
    usage: ClassVar[str] = "file:PATH"
    takes_target: ClassVar[bool] = True

    path: str

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> FileSourceConfig:
        """The config for ``file:target``; ValueError if there is no path."""
        if not target:
            raise ValueError("has no PATH")
        return cls(path=target)

    def build(self, context: SourceContext) -> FileSource:
        """The source, after checking the path can be read.

        A missing file is an error with ``once`` (there is nothing to read)
        or when its directory is missing too (a typo, most likely); in
        follow mode a missing file in an existing directory is waited for,
        like ``tail -F``.

        Raises:
            OSError: the file is missing (as above), a directory, or unreadable.
        """
        path = self.path
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if os.path.exists(path):
            os.close(os.open(path, _OPEN_FLAGS))  # PermissionError, named, if unreadable
        elif context.once or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return FileSource(path, context)


def _sleep(stop: StopFlag, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; whether it is set."""
    wait = getattr(stop, "wait", None)
    if wait is not None:
        return bool(wait(seconds))
    time.sleep(seconds)
    return stop.is_set()
