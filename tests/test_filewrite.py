"""Tests for logpipe._filewrite.write_holding_gil: os.write's contract, without the GIL release."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from logpipe._filewrite import write_holding_gil
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
from logpipe._filewrite import write_holding_gil

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
