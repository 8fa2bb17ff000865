"""The input progress bar: standalone on a pseudo-terminal, fed by real file
and stdin sources, and shown by a real run reading a file once."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from logpipe import RingBuffer
from logpipe.application.metrics import Metrics
from logpipe.infrastructure.deadletter import DeadLetter
from logpipe.infrastructure.sources.context import SourceContext
from logpipe.infrastructure.sources.file import FileSourceConfig
from logpipe.infrastructure.sources.stdin import StdinSource
from logpipe.infrastructure.ui import InputProgress, finite_input

HERE = Path(__file__).resolve().parent


def _context(tmp_path: Path, *, once: bool = True) -> SourceContext:
    return SourceContext(
        format="raw",
        max_line=1 << 20,
        metrics=Metrics(),
        dead_letter=DeadLetter(str(tmp_path / "dead-letter.ndjson")),
        once=once,
    )


def _write_lines(path: Path, count: int) -> int:
    data = b"".join(b'{"n": %d, "msg": "a line of the input"}\n' % i for i in range(count))
    path.write_bytes(data)
    return len(data)


def _run_source(source: Any, ring: RingBuffer) -> None:
    """Run a source that ends by itself (a file with once, stdin at its end) in a thread."""
    thread = threading.Thread(target=source.run, args=(ring, threading.Event()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


# --- the bar on its own --------------------------------------------------------------------


def test_bar_on_a_terminal_shows_bytes_rate_and_eta_with_lines_above_it(pty_run: Any) -> None:
    """In a pty: `input`, percent, done/total MB, a rate and an ETA; status lines print above the bar."""

    def bar_under_a_line(rows: list[str]) -> bool:
        text = "\n".join(rows)
        match = re.search(r"^input .* (\d+)% ([\d.]+)/([\d.]+) MB [\d.]+ [kM]?B/s \d+:\d\d:\d\d", text, re.M)
        return bool(match) and 0 < int(match.group(1)) < 100 and "status line 1" in text[: match.start()]

    result = pty_run([sys.executable, str(HERE / "show_progress.py")], watch={"bar": bar_under_a_line})
    assert result.returncode == 0, result.text
    assert "bar" in result.seen, result.raw[-3000:]
    assert "/8.4 MB" in "\n".join(result.seen["bar"])  # 8 MiB in decimal units
    # Transient: once stopped the bar is gone, the lines written through it stay, in order.
    lines = [row.rstrip() for row in result.screen if row.strip()]
    assert lines == [*(f"status line {i}" for i in range(4)), "after the bar: completed=8388608"]


def test_bar_stream_writes_plain_lines_when_the_bar_is_not_shown(tmp_path: Path) -> None:
    """Before start() and after stop(), lines written to .stream go straight to the terminal stream."""
    out = (tmp_path / "out.txt").open("w")
    bar = InputProgress(100, lambda: 40, stream=out)
    bar.stream.write("before\n")
    assert bar.renderable() is not None and bar.completed == 40
    out.close()
    assert (tmp_path / "out.txt").read_text() == "before\n"


# --- which inputs are finite, and how far they are --------------------------------------------


def test_a_file_read_once_reports_its_size_and_consumed_offset(tmp_path: Path) -> None:
    """file:PATH with once: total is the size; done() is 0 before, the size after reading it all."""
    path = tmp_path / "in.log"
    size = _write_lines(path, 2000)
    source = FileSourceConfig.from_target(str(path)).build(_context(tmp_path))
    total, done = finite_input(source)  # type: ignore[misc]
    assert total == size and done() == 0
    _run_source(source, RingBuffer(4096))
    assert done() == size


def test_a_followed_file_and_the_generator_have_no_bar(tmp_path: Path) -> None:
    """Without once a file never ends; the generator (None) has no bytes: neither gets a bar."""
    path = tmp_path / "in.log"
    _write_lines(path, 10)
    assert finite_input(FileSourceConfig.from_target(str(path)).build(_context(tmp_path, once=False))) is None
    assert finite_input(None) is None


def test_stdin_from_a_file_counts_from_its_offset(tmp_path: Path) -> None:
    """stdin redirected from a file already read 100 bytes into: total is the rest; done() reaches it."""
    path = tmp_path / "in.log"
    size = _write_lines(path, 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)
        source = StdinSource(_context(tmp_path), fd=fd)
        total, done = finite_input(source)  # type: ignore[misc]
        assert total == size - 100
        _run_source(source, RingBuffer(4096))
        assert done() == size - 100
    finally:
        os.close(fd)


def test_stdin_from_a_pipe_has_no_bar(tmp_path: Path) -> None:
    """A pipe has no size: no bar."""
    read, write = os.pipe()
    try:
        assert finite_input(StdinSource(_context(tmp_path), fd=read)) is None
    finally:
        os.close(read)
        os.close(write)


# --- a real run --------------------------------------------------------------------------------


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """200,000 JSON lines (about 8 MB): longer to ship at 10 ms per flush than the run lasts."""
    path = tmp_path / "big.log"
    _write_lines(path, 200_000)
    return path


def test_run_reading_a_file_once_shows_the_bar_then_the_report(
    pty_run: Any, run_command: list[str], big_file: Path
) -> None:
    """`run --source file:BIG --once` on a pty: a bar with a partial percentage, [METRICS] above it; the report last."""
    mb = f"{big_file.stat().st_size / 1e6:.1f}"

    def bar(rows: list[str]) -> bool:
        text = "\n".join(rows)
        match = re.search(rf"^input .* (\d+)% [\d.]+/{mb} MB", text, re.M)
        return bool(match) and 0 < int(match.group(1)) < 100 and "[METRICS] " in text[: match.start()]

    result = pty_run(
        [*run_command, "--source", f"file:{big_file}", "--once", "--duration", "2s", "--io-latency", "10ms"],
        watch={"bar": bar},
    )
    assert result.returncode == 0, result.text
    assert "bar" in result.seen, result.text
    lines = [row.rstrip() for row in result.screen if row.strip()]
    assert lines[-1].startswith("Report: ") or lines[-2].startswith("Report: "), lines[-3:]
    assert not any(re.match(r"input .*%", line) for line in lines)  # erased when it stopped


def test_run_with_ui_reading_a_file_once_shows_the_bar_in_the_view(
    pty_run: Any, run_command: list[str], big_file: Path
) -> None:
    """With --ui the bar is a row of the live view (Input), not a second display."""
    mb = f"{big_file.stat().st_size / 1e6:.1f}"

    def input_row(rows: list[str]) -> bool:
        return any(re.search(rf"│ Input\s+[━╸╺ ]+ +\d+% [\d.]+/{mb} MB", row) for row in rows)

    result = pty_run(
        [*run_command, "--ui", "--source", f"file:{big_file}", "--once", "--duration", "2s", "--io-latency", "10ms"],
        watch={"row": input_row},
    )
    assert result.returncode == 0, result.text
    assert "row" in result.seen, result.text
    assert b"[METRICS]" not in result.raw


def test_a_terminal_that_goes_away_costs_lines_not_the_run() -> None:
    """The pty's other side closes mid-run (a dropped ssh session): writes and stop() raise nothing."""

    master, slave = pty.openpty()
    terminal = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        bar = InputProgress(1000, lambda: 500, stream=terminal)
        bar.start()
        bar.stream.write("before the hang-up\n")
        os.close(master)
        for i in range(50):  # past any buffering: the writes must reach the dead terminal
            bar.stream.write(f"status line {i} " + "x" * 200 + "\n")
        bar.stop()
        bar.stream.write("after stop\n")
    finally:
        with contextlib.suppress(OSError):  # its buffer cannot be flushed to a dead terminal either
            terminal.close()
