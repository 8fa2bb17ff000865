"""A progress bar for a finite input: bytes done, rate and time left.

A file read once (``--source file:PATH --once``) or standard input
redirected from a file has a known size, so a run on a terminal can show how
far it is: ``input ━━━━━━━━━━━╸━━━━━━━  61% 12.3/20.0 MB 41.2 MB/s 0:00:01``.

"Done" is the source's consumed offset: bytes whose lines have entered
the ring (or were rejected, or were blank), not bytes a sink has written.

The pipeline's status lines must not be written over the bar, so its
Console is given :attr:`InputProgress.stream`: while the bar is shown, lines
written there are printed above it; otherwise they go straight to the
terminal. The bar is transient: when it stops it is erased, and the run's
last line on the terminal stays the report.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TextIO

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from logpipe._waits import join_thread

__all__ = ["InputProgress"]

REFRESH_PER_SECOND = 4.0
# Leaves room for the numbers on an 80-column terminal, and inside the live view.
BAR_WIDTH = 24


class _AboveBar:
    """File-like: whole lines are printed above the bar while it is shown."""

    def __init__(self, owner: InputProgress) -> None:
        self._owner = owner
        self._partial = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            *complete, self._partial = (self._partial + text).split("\n")
            for line in complete:
                self._owner._print(line)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False


class InputProgress:
    """A rich progress bar fed by a callable, redrawn by its own thread.

    Args:
        total_bytes: the input's size in bytes.
        done: returns the bytes done so far; called from the bar's thread,
            so it must be safe to call while the source runs.
        stream: the terminal to draw on (default: ``sys.stdout``, looked
            up at each write).
        description: the label before the bar.
        refresh_per_second: how often the bar is redrawn.

    Attributes:
        stream: give it to the pipeline's Console (see the module docstring).
        console: the rich Console the bar draws on.
    """

    def __init__(
        self,
        total_bytes: int,
        done: Callable[[], int],
        *,
        stream: TextIO | None = None,
        description: str = "input",
        refresh_per_second: float = REFRESH_PER_SECOND,
    ) -> None:
        self.total_bytes = max(0, int(total_bytes))
        self._done = done
        self.console = Console(file=stream, highlight=False)
        self._interval = 1.0 / refresh_per_second
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=BAR_WIDTH),
            TaskProgressColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            expand=False,
        )
        self._task = self._progress.add_task(description, total=self.total_bytes, completed=0)
        self.stream = _AboveBar(self)
        self._shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()

    @property
    def completed(self) -> int:
        """The bytes done at the last update."""
        return int(self._progress.tasks[0].completed)

    def update(self) -> None:
        """Read ``done()`` and move the bar (the thread does it; tests may too)."""
        done = int(self._done())
        total = max(self.total_bytes, done)  # the file grew while it was read
        self._progress.update(self._task, completed=done, total=total)

    def renderable(self) -> RenderableType:
        """The bar without its label, updated now, for another view to draw (the live view's Input row)."""
        self._progress.update(self._task, description="")
        self.update()
        return self._progress.get_renderable()

    def start(self) -> None:
        """Show the bar and redraw it until :meth:`stop`."""
        with self._lock:
            if self._thread is not None:
                return
            self.update()
            self._progress.start()
            self._progress.refresh()
            self._shown = True
            self._thread = threading.Thread(target=self._run, name="logpipe-progress", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop redrawing and erase the bar; later lines go straight to the terminal."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        join_thread(thread, timeout)  # in slices: the main thread's signals
        with self._lock:
            self._shown = False
            try:
                self.update()
                self._progress.stop()
            except (OSError, ValueError):
                pass  # the terminal is gone: the run's outcome must still stand

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                if not self._shown:
                    return
                try:
                    self.update()
                    self._progress.refresh()
                except Exception:  # noqa: BLE001 - a bar must never stop the pipeline
                    return

    def _print(self, line: str) -> None:
        # Called by the pipeline's threads (workers included): a terminal
        # that went away must cost a status line, never a worker.
        with self._lock:
            try:
                if self._shown:
                    # rich prints it where the bar was and redraws the bar below.
                    self.console.print(Text(line), soft_wrap=True)
                    return
                file = self.console.file
                file.write(line + "\n")
                file.flush()
            except (OSError, ValueError):
                pass
