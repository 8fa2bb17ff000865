"""What one run shows on its terminal, decided once: a live view, a progress bar, or plain lines.

- ``--ui`` on a terminal: the live view (:class:`~logpipe.infrastructure.ui.live.LiveView`);
  the status lines go to its log panel and the ``[METRICS]`` line is left out.
- ``--ui`` when the output is not a terminal: plain lines, as without it,
  and one line on stderr saying so.
- a finite input (``file:PATH`` with ``--once``, or stdin redirected from a
  file) on a terminal: an input progress bar (inside the live view with ``--ui``).

"The terminal" is where the status lines go: stdout, or stderr when records
go to stdout (``--sink stdout``). When records and status lines would share
one terminal, nothing is drawn: the records would be written over it; nor
on a terminal that cannot move its cursor (``TERM=dumb``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

# The live view and the progress bar are drawn with rich: their modules are
# imported when one is shown, so a run that draws nothing never loads rich.
if TYPE_CHECKING:
    from logpipe.infrastructure.ui.live import LiveView
    from logpipe.infrastructure.ui.progress import InputProgress

__all__ = ["TerminalUI", "finite_input", "same_terminal"]


class TerminalUI:
    """The terminal side of one run; build it with :meth:`for_run`.

    Attributes:
        stream: what the pipeline's Console writes to: the live view's log
            panel, the progress bar's stream, or the plain stream (None for
            stdout, stderr when records go to stdout).
        live: whether the live view will be shown.
        progress: the input progress bar, or None.
        terminal: the stream drawn on.
    """

    def __init__(
        self,
        *,
        terminal: TextIO,
        plain: TextIO | None,
        live: bool = False,
        progress: InputProgress | None = None,
    ) -> None:
        self.terminal = terminal
        self.live = live
        self.progress = progress
        self._log = None
        if live:
            from logpipe.infrastructure.ui.live import LogPanel  # noqa: PLC0415 - rich, when drawn

            self._log = LogPanel()
        self.stream: Any = self._log if live else (progress.stream if progress is not None else plain)
        self.view: LiveView | None = None

    @classmethod
    def for_run(
        cls,
        config: Any,
        source: Any,
        *,
        records_on_stdout: bool,
        notices: TextIO | None = None,
    ) -> TerminalUI:
        """Decide what to show for a run of ``config`` reading ``source``.

        Args:
            config: the PipelineConfig (``ui`` is read).
            source: the opened source (None for the generator).
            records_on_stdout: whether the sink writes records to stdout.
            notices: where the "--ui: ... not a terminal" line goes (default stderr).
        """
        terminal = sys.stderr if records_on_stdout else sys.stdout
        plain = sys.stderr if records_on_stdout else None
        name = "stderr" if records_on_stdout else "stdout"
        blocked = None
        term = os.environ.get("TERM", "")
        if not _isatty(terminal):
            blocked = f"{name} is not a terminal"
        elif term.lower() in ("dumb", "unknown"):
            blocked = f"the terminal cannot move its cursor (TERM={term})"
        elif records_on_stdout and same_terminal(sys.stdout, terminal):
            blocked = "records are written to this terminal (--sink stdout)"
        live = bool(getattr(config, "ui", False))
        if live and blocked:
            print(
                f"logpipe: --ui: {blocked}; printing the [METRICS] line instead",
                file=notices if notices is not None else sys.stderr,
            )
            live = False
        progress = None
        found = finite_input(source) if blocked is None else None
        if found is not None:
            from logpipe.infrastructure.ui.progress import InputProgress  # noqa: PLC0415 - rich, when drawn

            total, done = found
            progress = InputProgress(total, done, stream=terminal)
        return cls(terminal=terminal, plain=plain, live=live, progress=progress)

    @property
    def drawing(self) -> bool:
        """Whether something is drawn on the terminal (a live view or a progress bar)."""
        return self.live or self.progress is not None

    def notice(self, line: str) -> bool:
        """Show one line without writing over what is drawn (e.g. "Still draining ...").

        Returns:
            True if shown (in the view's log panel, or above the bar); False
            when nothing is drawn, so the caller writes the line itself.
        """
        if not self.drawing:
            return False
        self.stream.write(line.rstrip("\n") + "\n")
        return True

    @contextlib.contextmanager
    def running(self, pipeline: Any) -> Iterator[None]:
        """Show the view (or the bar) while the body runs ``pipeline.run()``."""
        if self.live:
            from logpipe.infrastructure.ui.live import LiveView  # noqa: PLC0415 - rich, when drawn

            self.view = LiveView(pipeline, self.terminal, log=self._log, progress=self.progress)
            self.view.start()
            try:
                yield
            finally:
                self.view.stop()
        elif self.progress is not None:
            self.progress.start()
            try:
                yield
            finally:
                self.progress.stop()
        else:
            yield


def same_terminal(stream: Any, other: Any) -> bool:
    """Whether two streams are the same terminal (e.g. stdout and stderr both on it)."""
    try:
        a, b = stream.fileno(), other.fileno()
        return os.isatty(a) and os.isatty(b) and os.ttyname(a) == os.ttyname(b)
    except (AttributeError, OSError, ValueError):
        return False


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def finite_input(source: Any) -> tuple[int, Callable[[], int]] | None:
    """``(total_bytes, done)`` for a source with a known size, else None.

    A ``file:PATH`` source with ``--once`` (the file's size), and ``stdin``
    redirected from a regular file (its size past the current offset).
    ``done()`` returns the source's consumed offset.
    """
    from logpipe.infrastructure.sources.file import FileSource
    from logpipe.infrastructure.sources.stdin import StdinSource

    if isinstance(source, FileSource) and source.context.once:
        try:
            st = os.stat(source.path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None  # a FIFO or a device: its size says nothing
        return st.st_size, lambda: _file_done(source)
    if isinstance(source, StdinSource):
        fd = getattr(source, "fd", None)
        if fd is None:
            fd = source._fd if source._fd is not None else _fileno(sys.stdin)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return None  # a pipe or a terminal: no size to measure against
            start = os.lseek(fd, 0, os.SEEK_CUR)
        except OSError:
            return None
        return max(0, st.st_size - start), lambda: _stdin_done(source)
    return None


def _fileno(stream: Any) -> int:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 0


# The sources count consumed bytes in their line framer (``LineInput.consumed``).
# A public ``consumed`` on the source is used when there is one; until then
# the framer is read through the source's current input.


def _file_done(source: Any) -> int:
    consumed = getattr(source, "consumed", None)
    if isinstance(consumed, int):
        return consumed
    lines = source._input
    return int(source._base + lines.consumed) if lines is not None else int(source.resumed_from)


def _stdin_done(source: Any) -> int:
    consumed = getattr(source, "consumed", None)
    if isinstance(consumed, int):
        return consumed
    lines = source._input
    return int(lines.consumed) if lines is not None else 0
