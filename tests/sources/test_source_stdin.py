"""Tests for logpipe.infrastructure.sources.stdin: StdinSource and StdinSourceConfig."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from logpipe import RingBuffer
from logpipe.infrastructure.sources.stdin import (
    PARTIAL_AT_STOP,
    PIPE_CAPACITY,
    UNPUSHED_AT_STOP,
    StdinSource,
    StdinSourceConfig,
    widen_pipe,
)

TIMEOUT = 20.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Running:
    """A StdinSource reading a pipe in a thread."""

    def __init__(self, source: StdinSource, ring: RingBuffer) -> None:
        self.stop_flag = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(source, ring), daemon=True)
        self.thread.start()

    def _run(self, source: StdinSource, ring: RingBuffer) -> None:
        try:
            source.run(ring, self.stop_flag)
        except BaseException as exc:  # noqa: BLE001 - asserted in join()
            self.errors.append(exc)

    def join(self, timeout: float = 5.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "StdinSource.run did not return"
        assert not self.errors, self.errors


def test_reads_lines_until_end_of_input(make_context):
    """Lines written to the pipe arrive in order (CR LF stripped, blanks skipped, a final line without newline kept); EOF ends run()."""
    read_fd, write_fd = os.pipe()
    try:
        ring = RingBuffer(64)
        source = StdinSource(make_context(), fd=read_fd)
        running = Running(source, ring)
        os.write(write_fd, b"one\r\n\ntw")
        time.sleep(0.05)  # a line split across two reads
        os.write(write_fd, b"o\nthree")
        os.close(write_fd)
        write_fd = -1
        running.join()
        assert ring.get_many(64, timeout=0) == [b"one", b"two", b"three"]
        assert source.eof and source.records == 3
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_a_pipe_is_widened_to_a_whole_read_and_loses_nothing(make_context):
    """A pipe on stdin holds PIPE_CAPACITY bytes once run() starts; lines of every size around it arrive whole and in order."""
    read_fd, write_fd = os.pipe()
    assert fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ) < PIPE_CAPACITY  # Linux's default: 64 KiB
    # Lengths around the old and the new capacity, and around the read size.
    lengths = [0, 1, 65535, 65536, 65537, 3, PIPE_CAPACITY - 1, PIPE_CAPACITY, PIPE_CAPACITY + 1, 70, 100_000]
    lines = [(b"%d:" % i + b"x" * n)[:n] if n else b"" for i, n in enumerate(lengths)]
    writer_error: list[BaseException] = []

    def write_all() -> None:
        try:
            with os.fdopen(write_fd, "wb") as pipe:
                for line in lines:
                    pipe.write(line + b"\n")
        except BaseException as exc:  # noqa: BLE001 - asserted below
            writer_error.append(exc)

    try:
        ring = RingBuffer(64, max_record_size=1 << 20)
        source = StdinSource(make_context(), fd=read_fd)
        running = Running(source, ring)
        wait_until(lambda: fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ) >= PIPE_CAPACITY, "the pipe to be widened")
        writer = threading.Thread(target=write_all)
        writer.start()
        received: list[bytes] = []
        while len(received) < len(lines) - 1:  # the empty line is skipped
            received.extend(ring.get_many(64, timeout=TIMEOUT))
        writer.join(TIMEOUT)
        assert not writer.is_alive() and not writer_error, writer_error
        running.join()
        assert received == [line for line in lines if line]
        assert source.eof
    finally:
        os.close(read_fd)


def test_widen_pipe_leaves_other_descriptors_alone(tmp_path):
    """A regular file, a socket and a closed descriptor are not pipes: nothing to widen, no error."""
    path = tmp_path / "input.log"
    path.write_bytes(b"a\n")
    fd = os.open(path, os.O_RDONLY)
    left, right = socket.socketpair()
    try:
        assert widen_pipe(fd, PIPE_CAPACITY) is False
        assert widen_pipe(left.fileno(), PIPE_CAPACITY) is False
    finally:
        os.close(fd)
        left.close()
        right.close()
    assert widen_pipe(fd, PIPE_CAPACITY) is False  # closed now: EBADF


def test_widen_pipe_keeps_a_pipe_that_is_already_large_enough():
    """A pipe at least as large as asked is left as it is (never shrunk)."""
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(read_fd, fcntl.F_SETPIPE_SZ, 2 * PIPE_CAPACITY)
        assert widen_pipe(read_fd, PIPE_CAPACITY) is True
        assert fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ) == 2 * PIPE_CAPACITY
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_silent_open_input_still_stops(make_context):
    """With stdin open and no data, run() returns once stop is set, without end of input."""
    read_fd, write_fd = os.pipe()
    try:
        source = StdinSource(make_context(), fd=read_fd)
        running = Running(source, RingBuffer(8))
        time.sleep(0.1)
        running.stop_flag.set()
        running.join()
        assert not source.eof
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_stop_dead_letters_a_partial_line(tmp_path, make_context):
    """A stop while a line is half received: complete lines arrive, the partial one is dead-lettered and counted."""
    read_fd, write_fd = os.pipe()
    context = make_context()
    try:
        ring = RingBuffer(8)
        source = StdinSource(context, fd=read_fd)
        running = Running(source, ring)
        os.write(write_fd, b"whole\nhalf a li")
        wait_until(lambda: source.records == 1, "the complete line")
        running.stop_flag.set()
        running.join()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert ring.get_many(8, timeout=0) == [b"whole"]
    assert context.metrics.invalid.value == 1 and source.partial_at_stop == 1
    (letter,) = [orjson.loads(x) for x in Path(context.dead_letter.path).read_bytes().splitlines()]
    assert (letter["reason"], letter["line"], letter["size"]) == (PARTIAL_AT_STOP, "half a li", 9)


@pytest.mark.parametrize(("tail", "size"), [(bytes(range(32, 127)) * 100, 9500), (b"\r", None)], ids=["long", "cr"])
def test_stop_dead_letters_the_head_and_size_of_a_long_partial_line_read_in_pieces(make_context, tail, size):
    """The partial line is the framer's, across reads: its first 4 KiB and its full size; a lone CR
    after a complete line is no partial line."""
    read_fd, write_fd = os.pipe()
    context = make_context()
    try:
        source = StdinSource(context, fd=read_fd)
        running = Running(source, RingBuffer(8))
        os.write(write_fd, b"whole\r\n" + tail[:3000])
        wait_until(lambda: source.records == 1, "the complete line")
        for start in range(3000, len(tail), 3000):
            os.write(write_fd, tail[start : start + 3000])
            time.sleep(0.05)  # one read each, most likely
        running.stop_flag.set()
        running.join()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    path = Path(context.dead_letter.path)
    letters = [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []
    if size is None:
        assert letters == [] and source.partial_at_stop == 0
    else:
        [letter] = letters
        assert (letter["reason"], letter["size"]) == (PARTIAL_AT_STOP, size)
        assert letter["line"] == tail[:4096].decode() and source.partial_at_stop == 1


def test_a_regular_file_on_stdin_is_read_through(tmp_path, make_context):
    """stdin redirected from a file (``< FILE``): read while reads fill the buffer, every line in order."""
    path = tmp_path / "in.log"
    lines = [b"line %07d" % i for i in range(300_000)]  # ~4 MiB: several full reads
    path.write_bytes(b"\n".join(lines) + b"\n")
    fd = os.open(path, os.O_RDONLY)
    ring = RingBuffer(1 << 20)
    try:
        source = StdinSource(make_context(), fd=fd)
        running = Running(source, ring)
        running.join()
    finally:
        os.close(fd)
    assert source.eof and source.records == len(lines)
    assert ring.get_many(len(lines), timeout=0) == lines


def test_stop_with_a_full_ring_returns_and_counts_the_unpushed(make_context):
    """Nobody consuming: a stop leaves within the flush budget; lines it could not push go to the dead letter."""
    read_fd, write_fd = os.pipe()
    context = make_context()
    try:
        ring = RingBuffer(4)
        source = StdinSource(context, fd=read_fd)
        running = Running(source, ring)
        os.write(write_fd, b"".join(b"line %d\n" % i for i in range(10)))
        wait_until(lambda: len(ring) == 4, "a full ring")
        running.stop_flag.set()
        running.join()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert source.unpushed_at_stop == 6
    assert ring.get_many(4, timeout=0) == [b"line %d" % i for i in range(4)]
    letters = [orjson.loads(x) for x in Path(context.dead_letter.path).read_bytes().splitlines()]
    assert [(x["reason"], x["line"]) for x in letters] == [(UNPUSHED_AT_STOP, "line %d" % i) for i in range(4, 10)]
    assert context.metrics.invalid.value == 6  # received = in the ring + dead-lettered: nothing vanished


def test_config_is_stdin_without_target(make_context):
    """Spec stdin builds a StdinSource named stdin."""
    config = StdinSourceConfig.from_target(None)
    assert (config.scheme, config.usage, config.takes_target) == ("stdin", "stdin", False)
    source = config.build(make_context())
    assert isinstance(source, StdinSource) and source.name == "stdin"


# --- the command --------------------------------------------------------------------


def test_cli_pipe_delivers_every_line_and_exits_cleanly(tmp_path, logpipe_command, subprocess_env):
    """producer | logpipe run --source stdin --format json: good lines all delivered, a bad one dead-lettered, exit 0, lost=0."""
    sink = tmp_path / "out.ndjson"
    dead = tmp_path / "dead.ndjson"
    good = [orjson.dumps({"seq": i, "msg": "from stdin"}) for i in range(50_000)]
    data = b"\n".join(good[:25_000] + [b"{broken"] + good[25_000:]) + b"\n"
    proc = subprocess.run(
        [*logpipe_command, "run", "--source", "stdin", "--sink", f"file:{sink}", "--format", "json"]
        + ["--dead-letter", str(dead)],
        input=data,
        capture_output=True,
        timeout=60,
        env=subprocess_env,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Program finished" in out
    assert " lost=0 " in out and " invalid=1 " in out
    assert sink.read_bytes().splitlines() == good
    (letter,) = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    assert letter["source"] == "stdin" and letter["line"] == "{broken"


def test_cli_sigint_stops_a_silent_stdin(tmp_path, logpipe_command, subprocess_env):
    """stdin left open with no more data: SIGINT still ends the run, exit 0, the line sent before delivered."""
    sink = tmp_path / "out.ndjson"
    proc = subprocess.Popen(
        [*logpipe_command, "run", "--source", "stdin", "--sink", f"file:{sink}", "--batch-timeout", "10ms"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"before the silence\n")
        proc.stdin.flush()
        wait_until(lambda: sink.exists() and sink.read_bytes() == b"before the silence\n", "the line")
        proc.send_signal(signal.SIGINT)
        proc.wait(10)  # stdin stays open: communicate() would close it (end of input)
        assert proc.stdout is not None and proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.stdin.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err.decode()
    assert "Shutdown signal received!" in out.decode()
    assert "Program finished" in out.decode() and " lost=0 " in out.decode()
