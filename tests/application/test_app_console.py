"""Tests for logpipe.application.console: say, progress and verbose detail lines."""

from __future__ import annotations

import io

from logpipe.application.console import Console


class QuietConsole(Console):
    """What an embedding (the logging handler) does: routine progress stays quiet."""

    def progress(self, line: str) -> None:
        pass


def test_progress_and_detail_print_like_say_by_default():
    """On the `logpipe run` console progress lines print; detail lines only when verbose."""
    out = io.StringIO()
    console = Console(out)
    console.say("warning")
    console.progress("Scaler: scaling UP, workers = 2")
    console.detail("Worker 1 flushed batch of 50 logs")
    Console(out, verbose=True).detail("Worker 2 flushed batch of 7 logs")
    assert out.getvalue().splitlines() == [
        "warning", "Scaler: scaling UP, workers = 2", "Worker 2 flushed batch of 7 logs",
    ]


def test_a_console_that_silences_progress_still_says_warnings():
    """Overriding progress() hides routine lines, verbose ones included; say() is untouched."""
    out = io.StringIO()
    console = QuietConsole(out, verbose=True)
    console.progress("Worker 3 flushed batch of 7 logs")
    console.detail("Worker 3 flushed batch of 8 logs")
    console.say("Worker 3: sink write failed (disk full); retrying 7 logs in 0.05s")
    assert out.getvalue() == "Worker 3: sink write failed (disk full); retrying 7 logs in 0.05s\n"
