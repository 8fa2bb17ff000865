"""Tests for logpipe.infrastructure.sources.file: FileSource and FileSourceConfig."""

from __future__ import annotations

import collections
import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from logpipe import RingBuffer
from logpipe.infrastructure.sources.checkpoint_store import CheckpointStore
from logpipe.infrastructure.sources.file import FileSource, FileSourceConfig

TIMEOUT = 20.0  # upper bound for anything to happen; tests normally take far less


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Running:
    """A FileSource running in a thread; stop() sets the stop flag and joins it."""

    def __init__(self, source: FileSource, ring: RingBuffer) -> None:
        self.source = source
        self.stop_flag = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(ring,), daemon=True)
        self.thread.start()

    def _run(self, ring: RingBuffer) -> None:
        try:
            self.source.run(ring, self.stop_flag)
        except BaseException as exc:  # noqa: BLE001 - asserted in stop()
            self.errors.append(exc)

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "FileSource.run did not return after stop"
        assert not self.errors, self.errors


def line(i: int, tag: str = "") -> bytes:
    return b'{"seq":%d,"tag":"%s","pad":"%s"}' % (i, tag.encode(), b"x" * (i % 37))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# --- reading and following -------------------------------------------------------


def test_once_reads_every_line_and_returns(tmp_path, make_context):
    """once: existing lines arrive in order, CR LF and a final partial line included, blanks skipped."""
    path = tmp_path / "in.log"
    path.write_bytes(b"first\r\n\nsecond\n\n\nthird")
    ring = RingBuffer(16)
    source = FileSource(str(path), make_context(once=True))
    source.run(ring, threading.Event())
    assert ring.get_many(16, timeout=0) == [b"first", b"second", b"third"]
    assert source.records == 3


def test_large_file_crosses_many_chunks_in_order(tmp_path, make_context, collectors):
    """once: a 6 MB file (lines cut at every chunk edge) arrives whole and in order through a small ring."""
    path = tmp_path / "in.log"
    lines = [line(i) for i in range(100_000)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    ring = RingBuffer(64)
    collector = collectors(ring)
    source = FileSource(str(path), make_context(once=True))
    source.run(ring, threading.Event())
    wait_until(lambda: collector.count() == len(lines), "all records")
    assert collector.stop() == lines


def test_follows_appends_like_tail(tmp_path, make_context, collectors):
    """Follow mode: existing lines arrive, then lines appended later, a line written in two halves arrives whole."""
    path = tmp_path / "in.log"
    path.write_bytes(b"old 1\nold 2\n")
    ring = RingBuffer(64)
    collector = collectors(ring)
    running = Running(FileSource(str(path), make_context(), poll_interval=0.01), ring)
    try:
        wait_until(lambda: collector.count() == 2, "the existing lines")
        append(path, b"new 1\nnew ")
        wait_until(lambda: collector.count() == 3, "the first appended line")
        time.sleep(0.05)  # several polls see the half line: it must not be sent alone
        append(path, b"2\n")
        wait_until(lambda: collector.count() == 4, "the line completed later")
    finally:
        running.stop()
    assert collector.stop() == [b"old 1", b"old 2", b"new 1", b"new 2"]


def test_waits_for_a_missing_file_to_appear(tmp_path, make_context, collectors):
    """Follow mode: a file that does not exist yet is waited for, then read from its start."""
    path = tmp_path / "later.log"
    ring = RingBuffer(16)
    collector = collectors(ring)
    running = Running(FileSource(str(path), make_context(), poll_interval=0.01), ring)
    try:
        time.sleep(0.05)
        path.write_bytes(b"hello\n")
        wait_until(lambda: collector.count() == 1, "the line of the new file")
    finally:
        running.stop()
    assert collector.stop() == [b"hello"]


def test_appends_rotations_and_truncation_lose_no_line(tmp_path, make_context, collectors):
    """A writer appends while the file is rotated twice (rename + new file) and truncated once: every line arrives once."""
    path = tmp_path / "app.log"
    path.write_bytes(b"")
    ring = RingBuffer(256)
    collector = collectors(ring)
    source = FileSource(str(path), make_context(), poll_interval=0.01, rotate_wait=0.2)
    running = Running(source, ring)
    written: list[bytes] = []
    errors: list[BaseException] = []

    def write(f, start: int, count: int, tag: str) -> None:
        for i in range(start, start + count):
            record = line(i, tag)
            written.append(record)
            f.write(record + b"\n")
            if i % 500 == 0:
                f.flush()
                time.sleep(0.001)  # let the reader catch up mid-phase sometimes
        f.flush()

    def writer() -> None:
        try:
            f = open(path, "ab")  # noqa: SIM115 - reopened on each rotation
            write(f, 0, 20_000, "a")
            for rotation in (1, 2):
                # A file created and renamed away again before the reader
                # looks is never seen (as with tail -F): rotate only once the
                # previous rotation has been followed.
                wait_until(lambda: source.rotations == rotation - 1, "the previous rotation followed")
                # Rotate: the old file is renamed, a fresh one created at PATH;
                # a last batch still goes to the old file after the rename.
                os.rename(path, tmp_path / f"app.log.{rotation}")
                write(f, len(written), 2_000, f"late{rotation}")
                f.close()
                f = open(path, "ab")  # noqa: SIM115
                write(f, len(written), 20_000, f"r{rotation}")
            # Truncate (copytruncate style): only once the reader has every
            # line so far, since a truncation erases what was not read yet.
            wait_until(lambda: collector.count() == len(written), "reader caught up before truncation")
            f.close()
            open(path, "wb").close()
            wait_until(lambda: source.truncations == 1, "the truncation noticed")
            f = open(path, "ab")  # noqa: SIM115
            write(f, len(written), 20_000, "t")
            f.close()
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        thread.join(60)
        assert not thread.is_alive(), "writer did not finish"
        assert not errors, errors
        wait_until(lambda: collector.count() >= len(written), "every written line")
    finally:
        running.stop()
    received = collector.stop()
    assert collections.Counter(received) == collections.Counter(written)
    assert (source.rotations, source.truncations) == (2, 1)


def test_stop_is_honoured_while_the_ring_is_full(tmp_path, make_context):
    """With a full ring and nobody consuming, run() still returns once stop is set."""
    path = tmp_path / "in.log"
    path.write_bytes(b"".join(line(i) + b"\n" for i in range(10_000)))
    ring = RingBuffer(8)
    running = Running(FileSource(str(path), make_context(once=True)), ring)
    wait_until(lambda: len(ring) == 8, "a full ring")
    time.sleep(0.05)  # the source is now waiting on the full ring
    running.stop()
    assert ring.get_many(8, timeout=0) == [line(i) for i in range(8)]


# --- bad lines --------------------------------------------------------------------


def test_json_format_sends_malformed_lines_to_the_dead_letter(tmp_path, make_context, collectors):
    """format=json: good lines arrive, malformed ones are counted and dead-lettered with the reason."""
    path = tmp_path / "in.ndjson"
    good = [orjson.dumps({"i": i}) for i in range(1000)]
    bad = [b"not json %d" % i for i in range(0, 1000, 100)] + [b'{"open": ', b"\xff\xfe"]
    body = []
    for i, record in enumerate(good):
        body.append(record)
        if i % 100 == 0:
            body.append(bad[i // 100])
    body += bad[10:]
    path.write_bytes(b"\n".join(body) + b"\n")
    context = make_context(format="json", once=True)
    ring = RingBuffer(64)
    collector = collectors(ring)
    source = FileSource(str(path), context)
    source.run(ring, threading.Event())
    wait_until(lambda: collector.count() == len(good), "the good lines")
    assert collector.stop() == good
    assert context.metrics.invalid.value == len(bad)
    letters = [orjson.loads(x) for x in Path(context.dead_letter.path).read_bytes().splitlines()]
    assert [x["line"].encode("utf-8", "surrogateescape") for x in letters[:11]] == bad[:11]
    assert {x["source"] for x in letters} == {f"file:{path}"}
    assert all(x["reason"] for x in letters)
    assert len(letters) == len(bad)


def test_too_long_line_is_rejected_and_the_rest_arrives(tmp_path, make_context, collectors):
    """A line over max_line is dead-lettered as too long with its full size; the lines around it arrive."""
    path = tmp_path / "in.log"
    path.write_bytes(b"before\n" + b"y" * 5000 + b"\nafter\n")
    context = make_context(max_line=1000, once=True)
    ring = RingBuffer(16)
    collector = collectors(ring)
    FileSource(str(path), context).run(ring, threading.Event())
    wait_until(lambda: collector.count() == 2, "the short lines")
    assert collector.stop() == [b"before", b"after"]
    assert context.metrics.invalid.value == 1
    (letter,) = [orjson.loads(x) for x in Path(context.dead_letter.path).read_bytes().splitlines()]
    assert letter["size"] == 5000
    assert "long" in letter["reason"]


# --- checkpoints ------------------------------------------------------------------


def read_state(source: FileSource) -> dict:
    assert source.store is not None
    return orjson.loads(Path(source.store.file).read_bytes())


def test_commit_saves_only_the_offset_of_written_records(tmp_path, make_context):
    """commit(k) saves the offset reached when the k-th record was pushed, never beyond the watermark."""
    path = tmp_path / "in.log"
    first = b"1\n2\n3\n"
    second = b"bad\n4\n5\n6\n7\n"
    third = b"8\nnot json either\n"
    path.write_bytes(first)
    context = make_context(format="json", state_dir=str(tmp_path / "state"))
    ring = RingBuffer(64)
    source = FileSource(str(path), context, poll_interval=0.01)
    running = Running(source, ring)
    try:
        wait_until(lambda: source.records == 3, "the first lines")
        append(path, second)
        wait_until(lambda: source.records == 7, "the second lines")
        append(path, third)
        wait_until(lambda: source.records == 8, "the third line")
        st = path.stat()
        source.commit(0)
        assert read_state(source) == {"path": str(path), "device": st.st_dev, "inode": st.st_ino, "offset": 0}
        source.commit(2)  # records 0-1 written: no mark yet covers them without record 2
        assert read_state(source)["offset"] == 0
        source.commit(5)  # 3-4 of the second chunk written, 5-6 not: the first chunk only
        assert read_state(source)["offset"] == len(first)
        source.commit(7)  # the rejected line is covered with the records after it
        assert read_state(source)["offset"] == len(first) + len(second)
        source.commit(8)  # and the one after the last record with it
        assert read_state(source)["offset"] == len(first) + len(second) + len(third)
    finally:
        running.stop()


def test_commit_never_runs_ahead_of_records_held_by_a_full_ring(tmp_path, make_context):
    """Lines read but not yet pushed (ring full) are not covered by any commit."""
    path = tmp_path / "in.log"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    context = make_context(state_dir=str(tmp_path / "state"))
    ring = RingBuffer(10)
    source = FileSource(str(path), context, poll_interval=0.01)
    running = Running(source, ring)
    try:
        pushed = len(b"".join(b"line %d\n" % i for i in range(10)))

        def committed() -> int:
            source.commit(10**9)
            return read_state(source)["offset"] if os.path.exists(source.store.file) else -1

        wait_until(lambda: committed() == pushed, "the offset of the pushed records")
        time.sleep(0.05)  # the source keeps retrying the held lines meanwhile
        assert committed() == pushed
        assert ring.get_many(10, timeout=0) == [b"line %d" % i for i in range(10)]
    finally:
        running.stop()


def test_commit_keeps_the_old_file_until_its_records_are_written(tmp_path, make_context, collectors):
    """After a rotation, a watermark short of the old file's last record saves the old file's inode and offset."""
    path = tmp_path / "in.log"
    path.write_bytes(b"old 1\nold 2\n")
    old = path.stat()
    context = make_context(state_dir=str(tmp_path / "state"))
    ring = RingBuffer(64)
    collector = collectors(ring)
    source = FileSource(str(path), context, poll_interval=0.01)
    running = Running(source, ring)
    try:
        wait_until(lambda: source.records == 2, "the old lines")
        os.rename(path, tmp_path / "in.log.1")
        path.write_bytes(b"new 1\n")
        wait_until(lambda: source.records == 3, "the new file's line")
        source.commit(1)
        assert read_state(source)["inode"] == old.st_ino
        assert read_state(source)["offset"] == 0
        source.commit(2)
        state = read_state(source)
        assert (state["inode"], state["offset"]) in {(old.st_ino, 12), (path.stat().st_ino, 0)}
        source.commit(3)
        assert (read_state(source)["inode"], read_state(source)["offset"]) == (path.stat().st_ino, 6)
    finally:
        running.stop()
    collector.stop()


def run_once(path: Path, context) -> tuple[FileSource, list[bytes]]:
    ring = RingBuffer(1024)
    source = FileSource(str(path), context)
    source.run(ring, threading.Event())
    source.commit(source.records)  # all written
    return source, ring.get_many(1024, timeout=0)


def test_restart_resumes_from_the_checkpoint(tmp_path, make_context):
    """A second run on the same file reads only what was appended after the saved offset."""
    path = tmp_path / "in.log"
    path.write_bytes(b"1\n2\n")
    context = make_context(state_dir=str(tmp_path / "state"), once=True)
    assert run_once(path, context)[1] == [b"1", b"2"]
    append(path, b"3\n4\n")
    source, records = run_once(path, context)
    assert records == [b"3", b"4"]
    assert source.resumed_from == 4


def test_restart_after_truncation_reads_from_the_start(tmp_path, make_context):
    """A file now shorter than the saved offset is read from offset 0."""
    path = tmp_path / "in.log"
    path.write_bytes(b"one\ntwo\nthree\n")
    context = make_context(state_dir=str(tmp_path / "state"), once=True)
    run_once(path, context)
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(b"x\n")
    source, records = run_once(path, context)
    assert records == [b"x"]
    assert source.resumed_from == 0


def test_restart_after_rotation_finishes_the_old_file_first(tmp_path, make_context):
    """When PATH was rotated since the checkpoint, the old file's rest is read (found by inode), then the new file."""
    path = tmp_path / "in.log"
    path.write_bytes(b"a\nb\n")
    context = make_context(state_dir=str(tmp_path / "state"), once=True)
    run_once(path, context)
    append(path, b"c\n")
    os.rename(path, tmp_path / "in.log.1")
    path.write_bytes(b"d\n")
    source, records = run_once(path, context)
    assert records == [b"c", b"d"]
    assert source.rotations == 1


def test_a_checkpoint_for_another_file_is_ignored(tmp_path, make_context):
    """A checkpoint whose inode is nowhere to be found starts the file from 0."""
    path = tmp_path / "in.log"
    path.write_bytes(b"a\nb\n")
    context = make_context(state_dir=str(tmp_path / "state"), once=True)
    run_once(path, context)
    path.write_bytes(b"a\nb\nc\n")
    store = CheckpointStore(str(tmp_path / "state"), str(path))
    Path(store.file).write_bytes(b'{"path": "x", "device": 1, "inode": 1, "offset": 4}')
    source, records = run_once(path, context)
    assert records == [b"a", b"b", b"c"]
    assert source.resumed_from == 0


def test_a_corrupt_checkpoint_starts_from_zero(tmp_path, make_context):
    """A state file that is not a checkpoint is reported in store.problem and reading starts at 0."""
    path = tmp_path / "in.log"
    path.write_bytes(b"a\n")
    state = tmp_path / "state"
    store = CheckpointStore(str(state), str(path))
    state.mkdir()
    Path(store.file).write_bytes(b"{torn")
    source, records = run_once(path, make_context(state_dir=str(state), once=True))
    assert records == [b"a"]
    assert source.store is not None and "not a valid checkpoint" in (source.store.problem or "")
    assert read_state(source)["offset"] == 2  # and a good one replaces it


# --- config -----------------------------------------------------------------------


def test_config_parses_a_path_and_builds_a_source(tmp_path, make_context):
    """file:PATH builds a FileSource named file:PATH; an empty target is refused."""
    path = tmp_path / "in.log"
    path.write_bytes(b"")
    config = FileSourceConfig.from_target(str(path))
    source = config.build(make_context())
    assert isinstance(source, FileSource)
    assert source.name == f"file:{path}"
    assert (FileSourceConfig.scheme, FileSourceConfig.usage, FileSourceConfig.takes_target) == (
        "file",
        "file:PATH",
        True,
    )
    with pytest.raises(ValueError, match="has no PATH"):
        FileSourceConfig.from_target("")


def test_config_refuses_unreadable_targets(tmp_path, make_context):
    """build() raises OSError for a missing file with once, a missing directory, and a directory."""
    with pytest.raises(FileNotFoundError):
        FileSourceConfig(str(tmp_path / "missing.log")).build(make_context(once=True))
    with pytest.raises(FileNotFoundError):
        FileSourceConfig(str(tmp_path / "no-dir" / "x.log")).build(make_context())
    with pytest.raises(IsADirectoryError) as info:
        FileSourceConfig(str(tmp_path)).build(make_context())
    assert info.value.errno == errno.EISDIR
    # Follow mode: a missing file in an existing directory is waited for.
    assert isinstance(FileSourceConfig(str(tmp_path / "later.log")).build(make_context()), FileSource)
