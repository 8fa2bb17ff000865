"""Tests for logpipe.infrastructure.sinks.stdout: StdoutSink and StdoutSinkConfig."""

from __future__ import annotations

import io
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


def test_writes_whole_batches_to_the_process_stdout():
    """In a real process, batches from 4 threads reach fd 1 whole: every record once, in order per thread."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "60"], capture_output=True, timeout=60, check=True
    )
    lines = done.stdout.split(b"\n")
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
    assert b"wrote 12000" in done.stderr


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
