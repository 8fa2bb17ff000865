"""Tests for logpipe._filewrite: write_holding_gil (os.write's contract, without the GIL
release) and HeldWrites (which writes keep the GIL, and what they count)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from logpipe._filewrite import HOLD_GIL_MAX_BYTES, HeldWrites, write_holding_gil
from logpipe._ringbuf import RingBuffer


def test_writes_every_kind_of_contiguous_buffer(tmp_path):
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    ring = RingBuffer(8)
    ring.put_many([b"from", b"a batch"])
    pieces = [b"bytes|", bytearray(b"bytearray|"), memoryview(b"xxslice|")[2:], b"", ring.get_batch(2)]
    try:
        written = [write_holding_gil(fd, piece) for piece in pieces]
    finally:
        os.close(fd)
    assert written == [6, 10, 6, 0, len(b"from\na batch\n")]
    assert path.read_bytes() == b"bytes|bytearray|slice|from\na batch\n"


def test_errors_raise_oserror_with_the_errno():
    with pytest.raises(OSError) as info:
        write_holding_gil(2**30, b"x")  # no such descriptor
    assert info.value.errno == errno.EBADF
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with pytest.raises(BrokenPipeError):  # Python ignores SIGPIPE: EPIPE comes back
            write_holding_gil(write_end, b"x")
    finally:
        os.close(write_end)


def test_a_buffer_that_is_not_contiguous_is_refused_before_any_write(tmp_path):
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(BufferError):
            write_holding_gil(fd, memoryview(b"abcdef")[::2])
        with pytest.raises(TypeError):
            write_holding_gil(fd, "text")  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == b""


def test_a_short_write_returns_what_the_kernel_took():
    """Into a pipe with room for fewer bytes than asked, write() is short (non-blocking end)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        total = 0
        while True:
            try:
                total += write_holding_gil(write_end, b"z" * 100_000)
            except BlockingIOError:
                break
        drained = b""
        while len(drained) < total:
            drained += os.read(read_end, 1 << 20)
        assert drained == b"z" * total and total % 100_000 != 0  # at least one write was short
    finally:
        os.close(read_end)
        os.close(write_end)


# A write blocked on a full pipe, interrupted by SIGALRM. The handler runs when
# the call sees EINTR; whether it raises decides between "propagate" and
# "retry". Run in a child: a bug here blocks a thread that holds the GIL,
# and the timeout then fails the test instead of hanging the suite.
SIGNAL_CHILD = r"""
import os, signal, sys
from logpipe._filewrite import HOLD_GIL_MAX_BYTES, HeldWrites, write_holding_gil

mode = sys.argv[1]
read_end, write_end = os.pipe()
os.set_blocking(write_end, False)
try:
    while True:
        os.write(write_end, b"f" * 65536)
except BlockingIOError:
    pass
os.set_blocking(write_end, True)  # full, and the next write blocks
calls = []

class Interrupted(Exception):
    pass

def on_alarm(signum, frame):
    calls.append(signum)
    if mode == "raise":
        raise Interrupted
    os.set_blocking(read_end, False)
    try:
        while os.read(read_end, 1 << 20):
            pass
    except BlockingIOError:
        pass  # drained: the retried write has room now

signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.2)
try:
    print("wrote", write_holding_gil(write_end, b"after the signal"))
except Interrupted:
    print("interrupted")
print("handler ran", len(calls))
"""


@pytest.mark.skipif(not hasattr(os, "set_blocking") or sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("mode", "expected"), [("raise", "interrupted"), ("retry", "wrote 16")])
def test_a_signal_runs_its_handler_and_the_write_is_retried_unless_it_raised(mode, expected):
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_CHILD, mode], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [expected, "handler ran 1"]


# --- HeldWrites ------------------------------------------------------------------


def test_held_writes_count_the_bytes_they_put_in_the_file_and_how_each_went(tmp_path):
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    writes = HeldWrites(regular=True)
    writes.written = 7  # the file's size when it was opened
    ring = RingBuffer(8)
    ring.put_many([b"held", b"batch"])
    batch = ring.get_batch(2, hold=True)
    try:
        assert writes.write(fd, b"small") == 5
        assert writes.write(fd, memoryview(b"x" * (HOLD_GIL_MAX_BYTES + 1))) == HOLD_GIL_MAX_BYTES + 1
        assert writes.write_batch(fd, batch) == len(b"held\nbatch\n")
    finally:
        batch.release()
        os.close(fd)
    assert writes.written == 7 + 5 + HOLD_GIL_MAX_BYTES + 1 + 11
    assert (writes.kept_gil, writes.released_gil) == (2, 1)  # the large one let the GIL go
    assert path.read_bytes() == b"small" + b"x" * (HOLD_GIL_MAX_BYTES + 1) + b"held\nbatch\n"


def test_held_writes_to_a_pipe_always_let_the_gil_go_and_report_errors_as_os_write():
    read_end, write_end = os.pipe()
    writes = HeldWrites(regular=False)
    try:
        assert writes.write(write_end, b"abc") == 3
        assert os.read(read_end, 10) == b"abc"
        os.close(read_end)
        with pytest.raises(BrokenPipeError):
            writes.write(write_end, b"x")
    finally:
        os.close(write_end)
    assert (writes.kept_gil, writes.released_gil, writes.written) == (0, 2, 3)
    with pytest.raises(OSError) as info:
        HeldWrites(regular=True).write(2**30, b"x")
    assert info.value.errno == errno.EBADF


def test_a_short_write_counts_only_what_went_out(monkeypatch, tmp_path):
    from logpipe import _filewrite

    monkeypatch.setattr(_filewrite, "_write_hook", lambda fd, data: os.write(fd, bytes(data)[:2]))
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT, 0o644)
    writes = HeldWrites(regular=True)
    try:
        assert writes.write(fd, b"abcdef") == 2
    finally:
        os.close(fd)
    assert writes.written == 2
    assert (tmp_path / "out").read_bytes() == b"ab"
