"""TerminalUI.for_run: what a run shows, decided from real streams (pipes,
files and pseudo-terminals standing in for stdout and stderr)."""

from __future__ import annotations

import io
import os
import pty
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logpipe.application.metrics import Metrics
from logpipe.domain.config import PipelineConfig
from logpipe.infrastructure.deadletter import DeadLetter
from logpipe.infrastructure.sources.context import SourceContext
from logpipe.infrastructure.sources.file import FileSourceConfig
from logpipe.infrastructure.ui import InputProgress, LogPanel, TerminalUI

NOTICE = "logpipe: --ui: {}; printing the [METRICS] line instead\n"


@pytest.fixture
def terminal() -> Iterator[Any]:
    """A writable text stream on the slave side of a fresh pty (a real terminal)."""
    master, slave = pty.openpty()
    stream = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        yield stream
    finally:
        stream.close()
        os.close(master)


@pytest.fixture
def other_terminal() -> Iterator[Any]:
    """A second pty: another terminal than ``terminal``."""
    master, slave = pty.openpty()
    stream = open(slave, "w", encoding="utf-8")  # noqa: SIM115
    try:
        yield stream
    finally:
        stream.close()
        os.close(master)


@pytest.fixture(autouse=True)
def xterm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")


def _once_source(tmp_path: Path) -> Any:
    path = tmp_path / "in.log"
    path.write_bytes(b"one\ntwo\n")
    context = SourceContext(
        format="raw", max_line=1024, metrics=Metrics(), dead_letter=DeadLetter(str(tmp_path / "dl")), once=True
    )
    return FileSourceConfig.from_target(str(path)).build(context)


def test_ui_in_a_pipe_says_so_once_and_keeps_the_plain_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout not a terminal: one notice, no view, the Console keeps its default stream (None: stdout)."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    notices = io.StringIO()
    display = TerminalUI.for_run(PipelineConfig(ui=True), None, records_on_stdout=False, notices=notices)
    assert notices.getvalue() == NOTICE.format("stdout is not a terminal")
    assert not display.live and display.progress is None and display.stream is None


def test_ui_on_a_terminal_gives_the_console_the_log_panel(monkeypatch: pytest.MonkeyPatch, terminal: Any) -> None:
    """stdout a terminal: the live view, drawn on stdout; the Console writes to its log panel."""
    monkeypatch.setattr(sys, "stdout", terminal)
    notices = io.StringIO()
    display = TerminalUI.for_run(PipelineConfig(ui=True), None, records_on_stdout=False, notices=notices)
    assert display.live and isinstance(display.stream, LogPanel) and display.terminal is terminal
    assert notices.getvalue() == ""


def test_without_ui_a_terminal_shows_nothing_extra(monkeypatch: pytest.MonkeyPatch, terminal: Any) -> None:
    """No --ui and an endless source: plain lines even on a terminal."""
    monkeypatch.setattr(sys, "stdout", terminal)
    display = TerminalUI.for_run(PipelineConfig(), None, records_on_stdout=False)
    assert not display.live and display.progress is None and display.stream is None


def test_records_on_the_same_terminal_block_the_view(
    monkeypatch: pytest.MonkeyPatch, terminal: Any
) -> None:
    """--sink stdout with stdout and stderr on one terminal: records would scribble over it, so no view."""
    with open(terminal.fileno(), "w", closefd=False) as stderr:  # the same terminal, another stream
        monkeypatch.setattr(sys, "stdout", terminal)
        monkeypatch.setattr(sys, "stderr", stderr)
        notices = io.StringIO()
        display = TerminalUI.for_run(PipelineConfig(ui=True), None, records_on_stdout=True, notices=notices)
        assert notices.getvalue() == NOTICE.format("records are written to this terminal (--sink stdout)")
        assert not display.live and display.stream is stderr


def test_records_redirected_leave_the_view_on_stderr(
    monkeypatch: pytest.MonkeyPatch, terminal: Any, other_terminal: Any
) -> None:
    """--sink stdout into another terminal (or a file): the view is drawn on stderr."""
    monkeypatch.setattr(sys, "stdout", other_terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    display = TerminalUI.for_run(PipelineConfig(ui=True), None, records_on_stdout=True, notices=io.StringIO())
    assert display.live and display.terminal is terminal


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch, terminal: Any) -> None:
    """TERM=dumb cannot redraw: notice, no view."""
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("TERM", "dumb")
    notices = io.StringIO()
    display = TerminalUI.for_run(PipelineConfig(ui=True), None, records_on_stdout=False, notices=notices)
    assert notices.getvalue() == NOTICE.format("the terminal cannot move its cursor (TERM=dumb)")
    assert not display.live


def test_a_finite_input_on_a_terminal_gets_a_bar(
    monkeypatch: pytest.MonkeyPatch, terminal: Any, tmp_path: Path
) -> None:
    """file:PATH with once, no --ui, on a terminal: a progress bar whose stream the Console writes to."""
    monkeypatch.setattr(sys, "stdout", terminal)
    display = TerminalUI.for_run(PipelineConfig(once=True), _once_source(tmp_path), records_on_stdout=False)
    assert isinstance(display.progress, InputProgress) and display.progress.total_bytes == 8
    assert not display.live and display.stream is display.progress.stream


def test_a_finite_input_in_a_pipe_gets_no_bar(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same input with stdout a pipe: nothing drawn, nothing said."""
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    notices = io.StringIO()
    display = TerminalUI.for_run(
        PipelineConfig(once=True), _once_source(tmp_path), records_on_stdout=False, notices=notices
    )
    assert display.progress is None and display.stream is None and notices.getvalue() == ""


def test_notice_goes_to_the_panel_when_drawing_and_is_declined_otherwise(
    monkeypatch: pytest.MonkeyPatch, terminal: Any
) -> None:
    """notice(): into the live view's log panel with --ui on a terminal; False (caller writes) in a pipe."""
    monkeypatch.setattr(sys, "stdout", terminal)
    display = TerminalUI.for_run(PipelineConfig(ui=True), None, records_on_stdout=False)
    assert display.notice("Still draining (12 records left); logpipe exits when every record is flushed.\n")
    assert display.stream.lines() == ["Still draining (12 records left); logpipe exits when every record is flushed."]
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    plain = TerminalUI.for_run(PipelineConfig(ui=True), None, records_on_stdout=False, notices=io.StringIO())
    assert not plain.drawing and not plain.notice("Still draining")
