"""Tests for logpipe.infrastructure.sinks.stdout: StdoutSink and StdoutSinkConfig."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import orjson
import pytest

from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks.stdout import StdoutSink, StdoutSinkConfig

# A child process that writes batches from 4 threads to the real stdout.
CHILD = textwrap.dedent(
    """
    import sys, threading
    import orjson
    from logpipe import RingBuffer
    from logpipe.infrastructure.sinks.stdout import StdoutSinkConfig
    from logpipe.exceptions import SinkError

    THREADS, BATCHES, PER_BATCH = 4, int(sys.argv[1]), 50
    sink = StdoutSinkConfig.from_target(None).build()

    def batch_for(t, b):
        ring = RingBuffer(PER_BATCH)
        ring.put_many(
            orjson.dumps({"t": t, "i": b * PER_BATCH + r, "pad": "y" * 200})
            for r in range(PER_BATCH)
        )
        return ring.get_batch(PER_BATCH, timeout=0)

    failures = []

    def work(t):
        try:
            for b in range(BATCHES):
                sink.write_batch(batch_for(t, b))
        except SinkError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for th in threads: th.start()
    for th in threads: th.join()
    sink.close()
    for exc in failures[:1]:
        print(f"{exc} retryable={exc.retryable}", file=sys.stderr)
    print("wrote", sink.records, file=sys.stderr)
    sys.exit(3 if failures else 0)
    """
)


def _run_child(batches: str, to_file=None) -> tuple[bytes, bytes]:
    """Run CHILD; its stdout is a pipe, or the regular file ``to_file``."""
    if to_file is None:
        done = subprocess.run([sys.executable, "-c", CHILD, batches], capture_output=True, timeout=60, check=True)
        return done.stdout, done.stderr
    with open(to_file, "wb") as out:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, batches], stdout=out, stderr=subprocess.PIPE, timeout=60, check=True
        )
    return to_file.read_bytes(), done.stderr


@pytest.mark.parametrize("stdout_is", ["pipe", "regular file"])
def test_writes_whole_batches_to_the_process_stdout(stdout_is, tmp_path):
    """In a real process, batches from 4 threads reach fd 1 whole: every record once, in order per thread.

    To a regular file the batches skip the stream and go to the descriptor
    itself (with the file sink's writes); to a pipe they go through the stream.
    """
    out, err = _run_child("60", tmp_path / "out.ndjson" if stdout_is == "regular file" else None)
    lines = out.split(b"\n")
    assert lines.pop() == b""
    records = [orjson.loads(line) for line in lines]
    assert len(records) == 4 * 60 * 50
    for start in range(0, len(records), 50):
        chunk = records[start : start + 50]
        t, first = chunk[0]["t"], chunk[0]["i"]
        assert first % 50 == 0
        assert [(r["t"], r["i"]) for r in chunk] == [(t, first + k) for k in range(50)]
    per_thread = {t: [r["i"] for r in records if r["t"] == t] for t in range(4)}
    assert all(seq == list(range(60 * 50)) for seq in per_thread.values())
    assert b"wrote 12000" in err


ORDER_CHILD = textwrap.dedent(
    """
    import sys
    from logpipe import RingBuffer
    from logpipe.infrastructure.sinks.stdout import StdoutSinkConfig

    sink = StdoutSinkConfig.from_target(None).build()
    assert (sink._file_fd >= 0) == (sys.argv[1] == "file")
    ring = RingBuffer(8)
    for n in range(3):
        sys.stdout.write(f"print {n}\\n")
        sys.stdout.flush()                      # flushed before the batch: lands before it
        ring.put_many([b'{"batch":%d}' % n] * 2)
        sink.write_batch(ring.get_batch(2, timeout=0))
    sys.stdout.buffer.write(b"buffered, not flushed\\n")
    ring.put_many([b'{"batch":3}'])
    sink.write_batch(ring.get_batch(1, timeout=0))  # the sink flushes the stream first
    sink.close()
    """
)


@pytest.mark.parametrize("stdout_is", ["pipe", "file"])
def test_batches_keep_their_order_with_what_the_process_wrote_to_stdout(stdout_is, tmp_path):
    """Whether the batches go through the stream or to the file's descriptor, what was written
    to sys.stdout.buffer before a batch comes before it."""
    command = [sys.executable, "-c", ORDER_CHILD, stdout_is]
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}  # a buffered stdout
    if stdout_is == "pipe":
        out = subprocess.run(command, capture_output=True, timeout=60, check=True, env=env).stdout
    else:
        path = tmp_path / "out.ndjson"
        with open(path, "wb") as file:
            subprocess.run(command, stdout=file, timeout=60, check=True, env=env)
        out = path.read_bytes()
    expected = b"".join(b'print %d\n{"batch":%d}\n{"batch":%d}\n' % (n, n, n) for n in range(3))
    assert out == expected + b'buffered, not flushed\n{"batch":3}\n'


def test_to_a_regular_file_small_batches_keep_the_gil_and_large_ones_release_it(tmp_path, make_batch):
    from logpipe._filewrite import HOLD_GIL_MAX_BYTES

    path = tmp_path / "out.ndjson"
    with open(path, "wb") as stream:
        sink = StdoutSink(stream)
        small = make_batch([b"a" * 99] * 40)
        large = make_batch([b"b" * HOLD_GIL_MAX_BYTES])
        calls = []
        for batch in (small, large, small):
            kept = sink._writes.kept_gil
            sink.write_batch(batch)
            calls.append("held" if sink._writes.kept_gil > kept else "released")
        sink.close()
    assert calls == ["held", "released", "held"]
    assert sink._writes.kept_gil + sink._writes.released_gil == 3  # one write(2) each
    assert path.read_bytes() == (b"a" * 99 + b"\n") * 40 + b"b" * HOLD_GIL_MAX_BYTES + b"\n" + (b"a" * 99 + b"\n") * 40


def test_a_pipe_or_an_in_memory_stream_goes_through_the_stream():
    read_end, write_end = os.pipe()
    try:
        with open(write_end, "wb") as pipe:
            assert StdoutSink(pipe)._file_fd == -1
    finally:
        os.close(read_end)
    assert StdoutSink(io.BytesIO())._file_fd == -1


def test_broken_pipe_is_a_clear_error_without_a_traceback():
    """When the reader goes away the writers get a non-retryable SinkError and the process exits quietly."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.readline()
    child.stdout.close()  # like `| head -1`
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=60) == 3
    assert "stdout: the reader has closed the pipe (broken pipe) retryable=False" in stderr
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr


def test_writes_to_a_given_binary_stream(make_batch):
    """StdoutSink(stream) writes the framed bytes there and flushes each batch."""
    stream = io.BytesIO()
    sink = StdoutSink(stream)
    sink.write_batch(make_batch([b'{"a":1}', b'{"b":2}']))
    assert stream.getvalue() == b'{"a":1}\n{"b":2}\n'
    sink.close()
    assert not stream.closed  # the process's stream is not the sink's to close
    assert sink.records == 2


def test_default_stream_is_sys_stdout_buffer(monkeypatch, make_batch):
    """Without a stream the sink writes to sys.stdout.buffer as it is when the sink is made."""
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(buffer))
    sink = StdoutSinkConfig.from_target(None).build()
    sink.write_batch(make_batch([b"x"]))
    assert buffer.getvalue() == b"x\n"


class _Broken(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_broken_pipe_raises_sink_error_every_time(make_batch):
    """After a broken pipe every write fails with the same non-retryable SinkError."""
    sink = StdoutSink(_Broken())  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(SinkError, match=r"broken pipe") as info:
            sink.write_batch(make_batch([b"x"]))
        assert info.value.retryable is False
    sink.close()  # does not raise: there is nothing left to flush to

