"""Tests for logpipe.infrastructure.sinks.file: FileSink and FileSinkConfig."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
from _support import patch_sink_writes

from logpipe._filewrite import HOLD_GIL_MAX_BYTES, RELEASE_AFTER_SLOW_NS, SLOW_WRITE_NS
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks import file as file_module
from logpipe.infrastructure.sinks.file import FileSink, FileSinkConfig

THREADS = 8
BATCHES_PER_THREAD = 120
RECORDS_PER_BATCH = 50


def record(thread: int, index: int) -> bytes:
    # Padding makes batches ~5 KB so a torn write would split lines visibly.
    return orjson.dumps({"t": thread, "i": index, "pad": "x" * 64})


def write_from_threads(sink: FileSink, make_batch, batches_per_thread: int = BATCHES_PER_THREAD) -> None:
    """THREADS threads, each writing its own batches, all released at once."""
    batches = [
        [
            make_batch([record(t, b * RECORDS_PER_BATCH + r) for r in range(RECORDS_PER_BATCH)])
            for b in range(batches_per_thread)
        ]
        for t in range(THREADS)
    ]
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for batch in batches[t]:
                sink.write_batch(batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert errors == []


def assert_whole_batches(path: Path, batches_per_thread: int = BATCHES_PER_THREAD) -> None:
    """Every record once, and the file is a sequence of whole batches in per-thread order."""
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b""  # the file ends with a newline
    assert len(lines) == THREADS * batches_per_thread * RECORDS_PER_BATCH
    parsed = [orjson.loads(line) for line in lines]
    next_index = [0] * THREADS
    for start in range(0, len(parsed), RECORDS_PER_BATCH):
        chunk = parsed[start : start + RECORDS_PER_BATCH]
        t = chunk[0]["t"]
        expected = list(range(next_index[t], next_index[t] + RECORDS_PER_BATCH))
        assert [(r["t"], r["i"]) for r in chunk] == [(t, i) for i in expected]
        next_index[t] += RECORDS_PER_BATCH
    assert next_index == [batches_per_thread * RECORDS_PER_BATCH] * THREADS


def test_eight_threads_write_every_record_once_without_interleaving(tmp_path, make_batch):
    """Batches written from 8 threads at once land whole: every record once, no torn lines."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path)
    write_from_threads(sink, make_batch)
    sink.close()
    assert_whole_batches(path)
    assert sink.records == THREADS * BATCHES_PER_THREAD * RECORDS_PER_BATCH
    assert sink.batches == THREADS * BATCHES_PER_THREAD
    assert sink.nbytes == path.stat().st_size


def test_short_writes_are_completed_and_batches_never_interleave(tmp_path, make_batch, monkeypatch):
    """With a kernel that takes 500 bytes per write(), the lock still keeps each batch whole."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path)
    real_write = os.write
    calls = []

    def short_write(fd: int, data) -> int:
        if fd != sink._fd:
            return real_write(fd, data)
        calls.append(1)
        time.sleep(0)  # invite another thread in between the pieces
        return real_write(fd, memoryview(data)[:500])

    patch_sink_writes(monkeypatch, short_write)
    write_from_threads(sink, make_batch, batches_per_thread=10)
    monkeypatch.undo()
    sink.close()
    assert len(calls) > THREADS * 10 * 5  # writes really were short: ~10 per batch
    assert_whole_batches(path, batches_per_thread=10)


def test_one_write_call_per_batch(tmp_path, make_batch, monkeypatch):
    """A batch goes to the kernel in one os.write, straight from the batch's memory."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path)
    real_write = os.write
    seen = []

    def spy(fd: int, data) -> int:
        if fd == sink._fd:
            seen.append(type(data))
        return real_write(fd, data)

    patch_sink_writes(monkeypatch, spy)
    sink.write_batch(make_batch([b'{"a":1}', b'{"b":2}', b'{"c":3}']))
    monkeypatch.undo()
    sink.close()
    assert seen == [memoryview]  # no bytes() copy
    assert path.read_bytes() == b'{"a":1}\n{"b":2}\n{"c":3}\n'


def test_appends_to_an_existing_file(tmp_path, make_batch):
    """Opening never truncates: a second sink appends after what is there."""
    path = tmp_path / "out.ndjson"
    path.write_bytes(b'{"old":true}\n')
    first = FileSink(path)
    first.write_batch(make_batch([b'{"n":1}']))
    first.close()
    second = FileSink(path)
    second.write_batch(make_batch([b'{"n":2}', b'{"n":3}']))
    second.close()
    assert path.read_bytes() == b'{"old":true}\n{"n":1}\n{"n":2}\n{"n":3}\n'


def test_missing_directory_is_a_clear_error(tmp_path):
    """A file in a directory that does not exist fails at open, naming the directory."""
    missing = tmp_path / "no" / "such"
    with pytest.raises(SinkError) as info:
        FileSink(missing / "out.ndjson")
    message = str(info.value)
    assert "\n" not in message
    assert f"directory {str(missing)!r} does not exist" in message
    assert f"file:{missing / 'out.ndjson'}" in message
    assert not missing.exists()  # not created behind the user's back


def test_a_directory_as_path_is_a_clear_error(tmp_path):
    """Pointing the sink at a directory names the path and the reason."""
    with pytest.raises(SinkError, match="Is a directory"):
        FileSink(tmp_path)


def test_empty_batch_writes_nothing(tmp_path, make_batch, monkeypatch):
    """A batch of 0 records makes no system call and leaves the file as it was."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path)
    patch_sink_writes(monkeypatch, lambda fd, data: pytest.fail("write() called"))
    sink.write_batch(make_batch([]))
    monkeypatch.undo()
    sink.close()
    assert path.read_bytes() == b""
    assert (sink.records, sink.batches, sink.nbytes) == (0, 1, 0)


def test_close_fsyncs_once_and_later_writes_fail(tmp_path, make_batch, monkeypatch):
    """close() syncs the file to disk once; it is idempotent; a write after it raises."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    sink.write_batch(make_batch([b"x"]))
    sink.flush()  # nothing buffered in the process: no fsync here
    assert synced == []
    sink.close()
    sink.close()
    assert len(synced) == 1
    assert sink.closed
    with pytest.raises(SinkError, match="write after close") as info:
        sink.write_batch(make_batch([b"y"]))
    assert info.value.retryable is False
    assert path.read_bytes() == b"x\n"


def test_fsync_can_be_turned_off(tmp_path, monkeypatch):
    """FileSink(fsync=False).close() does not sync."""
    sink = FileSink(tmp_path / "out.ndjson", fsync=False)
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("fsync called"))
    sink.close()


def test_permanent_write_errors_are_not_retryable(tmp_path, make_batch, monkeypatch):
    """An error no retry can fix (EBADF) says so: retryable is False."""
    sink = FileSink(tmp_path / "out.ndjson")
    real_write = os.write

    def bad(fd: int, data) -> int:
        if fd == sink._fd:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real_write(fd, data)

    patch_sink_writes(monkeypatch, bad)
    with pytest.raises(SinkError) as info:
        sink.write_batch(make_batch([b"x"]))
    monkeypatch.undo()
    assert info.value.retryable is False
    assert f"file:{tmp_path / 'out.ndjson'}: write failed" in str(info.value)
    sink.close()


def test_accepts_any_contiguous_buffer(tmp_path):
    """bytes and bytearray work too; len() is then taken as the record count."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path)
    sink.write_batch(b"a\nb\n")
    sink.write_batch(bytearray(b"c\n"))
    sink.close()
    assert path.read_bytes() == b"a\nb\nc\n"
    assert sink.nbytes == 6


def test_config_builds_a_file_sink(tmp_path):
    """FileSinkConfig.from_target(path).build() opens that path for appending."""
    path = tmp_path / "out.ndjson"
    config = FileSinkConfig.from_target(str(path))
    assert config == FileSinkConfig(path=str(path))
    sink = config.build()
    try:
        assert isinstance(sink, FileSink)
        assert sink.path == str(path)
        assert sink.name == f"file:{path}"
        assert path.exists()
    finally:
        sink.close()


def test_config_refuses_an_empty_path():
    """An empty target is a ValueError the registry turns into a one-line ConfigError."""
    with pytest.raises(ValueError, match="PATH"):
        FileSinkConfig.from_target("")


# --- writeback as the data comes in ------------------------------------------------


def test_writeback_is_asked_for_every_8_mib_written(tmp_path, make_batch, monkeypatch):
    """Each WRITEBACK_STEP of new bytes is handed to the kernel's writeback once, in order."""
    from logpipe.infrastructure.sinks._writeback import WRITEBACK_STEP

    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(file_module, "start_writeback", lambda fd, offset, length: asked.append((offset, length)))
    path = tmp_path / "out.ndjson"
    path.write_bytes(b"old line\n")  # appending: the bytes already there are not ours to push
    sink = FileSink(path)
    line = b"x" * 1023  # 1 KiB framed
    batch = make_batch([line] * 1024)  # 1 MiB a batch
    for _ in range(20):
        sink.write_batch(batch)
    sink.close()
    start = len(b"old line\n")
    assert asked[0][0] == start
    for (offset, length), (next_offset, _) in zip(asked, asked[1:]):
        assert next_offset == offset + length, "ranges must follow each other"
    assert all(length >= WRITEBACK_STEP for _, length in asked)
    assert len(asked) == (20 << 20) // WRITEBACK_STEP
    assert path.stat().st_size == start + (20 << 20)


def test_no_writeback_without_fsync(tmp_path, make_batch, monkeypatch):
    """fsync=False asks the kernel for nothing, neither at close nor on the way."""

    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(file_module, "start_writeback", lambda fd, offset, length: asked.append((offset, length)))
    sink = FileSink(tmp_path / "out.ndjson", fsync=False)
    batch = make_batch([b"y" * 1023] * 1024)
    for _ in range(20):
        sink.write_batch(batch)
    sink.close()
    assert asked == []


def test_the_real_writeback_call_keeps_the_data_and_never_raises(tmp_path):
    """sync_file_range on a real file (and on a closed descriptor) is advice: no error, no change."""
    from logpipe.infrastructure.sinks._writeback import start_writeback

    path = tmp_path / "data"
    data = os.urandom(3 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    start_writeback(fd, 0, len(data))
    os.fsync(fd)
    os.close(fd)
    start_writeback(fd, 0, len(data))  # EBADF now: ignored
    assert path.read_bytes() == data


# --- small writes to regular files keep the GIL --------------------------------------


def write_each(sink: FileSink, batches) -> list[str]:
    """Write each batch; say how each write went: 'held' (kept the GIL) or 'released'."""
    writes = sink._writes
    calls: list[str] = []
    for batch in batches:
        kept, released = writes.kept_gil, writes.released_gil
        sink.write_batch(batch)
        assert writes.kept_gil + writes.released_gil == kept + released + 1  # one write(2) each
        calls.append("held" if writes.kept_gil > kept else "released")
    return calls


class FakeClock:
    """A monotonic_ns for HeldWrites: ``now`` moves only when the test moves it,
    or by ``per_read`` at every read (a write spans two reads)."""

    def __init__(self) -> None:
        self.now = 10**12
        self.per_read = 0

    def __call__(self) -> int:
        self.now += self.per_read
        return self.now


def test_small_writes_to_a_regular_file_keep_the_gil_and_large_ones_release_it(tmp_path, make_batch):
    path = tmp_path / "out.ndjson"
    sink = FileSink(path)
    small = make_batch([b"a" * 99] * 40)  # 4,000 bytes framed
    at_limit = make_batch([b"b" * (HOLD_GIL_MAX_BYTES - 1)])  # exactly the limit, framed
    over = make_batch([b"c" * HOLD_GIL_MAX_BYTES])  # one byte over
    calls = write_each(sink, (small, at_limit, over, small))
    sink.close()
    assert calls == ["held", "held", "released", "held"]
    assert path.stat().st_size == 2 * 4000 + HOLD_GIL_MAX_BYTES + HOLD_GIL_MAX_BYTES + 1


def test_a_slow_held_write_sends_the_next_second_of_writes_to_os_write(tmp_path, make_batch):
    """One write over SLOW_WRITE_NS: writes release the GIL for RELEASE_AFTER_SLOW_NS, then keep it again."""
    sink = FileSink(tmp_path / "out.ndjson")
    clock = sink._writes.clock = FakeClock()
    batch = make_batch([b'{"n":1}'])
    clock.per_read = SLOW_WRITE_NS + 1  # the first write "takes" just over the limit
    calls = write_each(sink, [batch])
    clock.per_read = 0
    calls += write_each(sink, [batch])  # within the second after it: released
    clock.now += RELEASE_AFTER_SLOW_NS - SLOW_WRITE_NS - 3
    calls += write_each(sink, [batch])  # still within it
    clock.now += 2
    calls += write_each(sink, [batch, batch])  # the second is over
    sink.close()
    assert calls == ["held", "released", "released", "held", "held"]
    assert sink.records == 5


def test_a_fast_held_write_keeps_the_next_ones_held(tmp_path, make_batch):
    sink = FileSink(tmp_path / "out.ndjson")
    clock = sink._writes.clock = FakeClock()
    calls = []
    for _ in range(3):
        clock.now += SLOW_WRITE_NS  # time passes between writes, none during one
        calls += write_each(sink, [make_batch([b"x"])])
    sink.close()
    assert calls == ["held"] * 3


# A writer that held the GIL in a write blocked on a full FIFO would never let
# the reader thread (which needs the GIL) run: the child would hang, and the
# timeout below fails the test instead of hanging the suite.
FIFO_CHILD = r"""
import os, sys, threading, time
from logpipe._ringbuf import RingBuffer
from logpipe.infrastructure.sinks.file import FileSink

path = sys.argv[1]
received = []

def read_slowly():
    with open(path, "rb", buffering=0) as fifo:
        while chunk := fifo.read(4096):
            received.append(chunk)
            time.sleep(0.0005)

reader = threading.Thread(target=read_slowly)
reader.start()
sink = FileSink(path, fsync=False)
assert not sink._writes.regular
ring = RingBuffer(64)
line = b"y" * 99
for _ in range(100):  # 100 batches of 4 KB: 400 KB, six times what the pipe holds
    ring.put_many([line] * 40)
    sink.write_batch(ring.get_batch(40))
sink.close()
reader.join(30)
assert not reader.is_alive()
data = b"".join(received)
assert data == (line + b"\n") * 4000, len(data)
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_writes_to_a_fifo_release_the_gil_so_a_python_reader_can_drain_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-c", FIFO_CHILD, str(fifo)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
