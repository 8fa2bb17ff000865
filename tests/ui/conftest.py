"""Helpers for the terminal UI tests: run a command in a pseudo-terminal and read its screen.

The command's stdin, stdout and stderr are the slave side of a pty of a
fixed size; everything it writes is fed to a pyte terminal emulator, so a
test reads the screen as a person would see it (cursor moves and redraws
applied), not the raw escape sequences.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyte
import pytest

HERE = Path(__file__).resolve().parent
COLUMNS = 100
ROWS = 40
TIMEOUT = 30.0  # seconds any one run may take


# The real command, as an operator runs it.
RUN = [sys.executable, "-m", "logpipe", "run"]


@dataclass
class PtyRun:
    """What a command did in the pseudo-terminal.

    Attributes:
        returncode: its exit status.
        raw: every byte it wrote.
        screen: the final screen, one string per row.
        seen: for each watched name, the first screen its predicate accepted.
    """

    returncode: int
    raw: bytes
    screen: list[str]
    seen: dict[str, list[str]] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.screen)


Watch = Callable[[list[str]], bool]


def run_in_pty(
    command: list[str],
    *,
    cwd: Path,
    watch: dict[str, Watch] | None = None,
    signal_when: tuple[str, int] | None = None,
    columns: int = COLUMNS,
    rows: int = ROWS,
    timeout: float = TIMEOUT,
) -> PtyRun:
    """Run ``command`` on a ``columns`` x ``rows`` pty until it exits.

    Args:
        watch: name -> predicate on the screen rows; the first screen each
            accepts is kept in ``seen[name]``.
        signal_when: ``(name, signum)``: send the signal once ``name`` was seen.
    """
    watch = dict(watch or {})
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)  # rich reads them; the tests want its own detection
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, start_new_session=True
    )
    os.close(slave)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    raw = bytearray()
    seen: dict[str, list[str]] = {}
    signalled = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                if process.poll() is not None and not _readable(master):
                    break
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer closed the slave
                break
            if not data:
                break
            raw += data
            stream.feed(data)
            rows_now = list(screen.display)
            for name, accepts in watch.items():
                if name not in seen and accepts(rows_now):
                    seen[name] = rows_now
            if signal_when and not signalled and signal_when[0] in seen:
                os.kill(process.pid, signal_when[1])
                signalled = True
        else:
            pytest.fail(f"{command} still running after {timeout} s; screen:\n" + "\n".join(screen.display))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        returncode = process.wait(10)
        os.close(master)
    return PtyRun(returncode, bytes(raw), list(screen.display), seen)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@pytest.fixture
def pty_run(tmp_path: Path) -> Callable[..., PtyRun]:
    """run_in_pty with the test's tmp_path as working directory."""

    def run(command: list[str], **kwargs: object) -> PtyRun:
        return run_in_pty(command, cwd=tmp_path, **kwargs)  # type: ignore[arg-type]

    return run


@pytest.fixture
def run_command() -> list[str]:
    """The ``logpipe run`` command line the tests start (see RUN)."""
    return list(RUN)
