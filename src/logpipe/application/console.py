"""Where the pipeline's human-readable lines go.

Several threads print (the metrics reporter, the scaler, workers flushing),
so lines are written whole under a lock and flushed at once: an operator
watching a terminal, or a test reading a pipe, sees each line as it happens.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

__all__ = ["Console"]


class Console:
    """Line printer shared by the pipeline's threads.

    Args:
        stream: where lines go (default: sys.stdout at call time).
        verbose: also print the lines marked verbose (every flush).
    """

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False) -> None:
        self._stream = stream
        self.verbose = verbose
        # Re-entrant: a signal handler may print while the main thread is
        # inside say().
        self._lock = threading.RLock()

    def say(self, line: str) -> None:
        """Print one line."""
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                # The reader went away (or the stream was closed): losing a
                # status line must not take the pipeline down with it.
                pass

    def progress(self, line: str) -> None:
        """Print one line of routine progress (a shutdown flush, a scaling step).

        The same as :meth:`say` here; a console for a program that embeds
        the pipeline (the logging handler's) overrides it to stay quiet,
        while warnings and errors still come through :meth:`say`.
        """
        self.say(line)

    def detail(self, line: str) -> None:
        """Print one line only in verbose mode."""
        if self.verbose:
            self.progress(line)
