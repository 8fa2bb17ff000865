"""Tests for size-based rotation in logpipe.infrastructure.sinks.file (--rotate-bytes, --rotate-keep)."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import orjson
import pytest
from _support import patch_sink_writes

from logpipe.domain.config import PipelineConfig
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks.file import FileSink, FileSinkConfig


def record(batch: int, index: int, pad: int = 20, thread: int = 0) -> bytes:
    return orjson.dumps({"t": thread, "b": batch, "i": index, "pad": "x" * pad})


def rotated_files(path: Path) -> list[Path]:
    """PATH.1, PATH.2, ... that exist, newest first."""
    return sorted(
        (p for p in path.parent.iterdir() if p.name.startswith(path.name + ".")),
        key=lambda p: int(p.name.rsplit(".", 1)[1]),
    )


def all_files_oldest_first(path: Path) -> list[Path]:
    files = rotated_files(path)[::-1]
    if path.exists():
        files.append(path)
    return files


def records_of(file: Path) -> list[dict]:
    data = file.read_bytes()
    assert data == b"" or data.endswith(b"\n")  # never a torn last line
    return [orjson.loads(line) for line in data.splitlines()]


def batches_in(file: Path) -> list[tuple[int, int]]:
    """The (thread, batch) keys in a file, in order, one entry per batch run."""
    keys: list[tuple[int, int]] = []
    for rec in records_of(file):
        key = (rec["t"], rec["b"])
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def test_many_batches_every_record_in_exactly_one_file_in_order(tmp_path, make_batch):
    """Batches of varied sizes with a small rotate_bytes: every record once, in order, no file over the limit."""
    path = tmp_path / "out.ndjson"
    limit = 2_000
    sink = FileSink(path, rotate_bytes=limit, rotate_keep=10_000, fsync=False)
    rng = random.Random(7)
    sizes = [rng.randint(1, 30) for _ in range(300)]
    for b, size in enumerate(sizes):
        sink.write_batch(make_batch([record(b, i) for i in range(size)]))
    sink.close()

    files = all_files_oldest_first(path)
    assert len(files) == sink.rotations + 1
    assert sink.rotations > 20  # it really rotated, many times
    seen = [(r["b"], r["i"]) for f in files for r in records_of(f)]
    assert seen == [(b, i) for b, size in enumerate(sizes) for i in range(size)]
    for f in files:
        assert f.stat().st_size <= limit
        # Whole batches only: the first record of each file starts a batch.
        first = records_of(f)[0]
        assert first["i"] == 0


def test_a_batch_is_never_split_across_files(tmp_path, make_batch):
    """Each batch's records are all in one file, even when it fills the file almost exactly."""
    path = tmp_path / "out.ndjson"
    one = len(record(0, 0)) + 1
    sink = FileSink(path, rotate_bytes=one * 7, rotate_keep=1_000, fsync=False)
    for b in range(100):
        sink.write_batch(make_batch([record(b, i) for i in range(1 + b % 5)]))
    sink.close()
    where: dict[int, set[str]] = {}
    for f in all_files_oldest_first(path):
        for rec in records_of(f):
            where.setdefault(rec["b"], set()).add(f.name)
    assert len(where) == 100
    assert all(len(names) == 1 for names in where.values())


def test_a_batch_larger_than_rotate_bytes_gets_a_file_of_its_own(tmp_path, make_batch):
    """A batch bigger than the limit is written whole into a fresh file; the next batch rotates again."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path, rotate_bytes=300, rotate_keep=10, fsync=False)
    sink.write_batch(make_batch([record(0, i) for i in range(2)]))
    big = make_batch([record(1, i) for i in range(20)])
    assert big.nbytes > 300
    sink.write_batch(big)
    sink.write_batch(make_batch([record(2, 0)]))
    sink.close()
    files = all_files_oldest_first(path)
    assert [batches_in(f) for f in files] == [[(0, 0)], [(0, 1)], [(0, 2)]]
    assert files[1].stat().st_size == big.nbytes


def test_keeps_at_most_rotate_keep_files_and_deletes_the_oldest(tmp_path, make_batch):
    """With rotate_keep=3, only PATH.1..PATH.3 remain, and together with PATH they hold the newest records."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path, rotate_bytes=500, rotate_keep=3, fsync=False)
    for b in range(200):
        sink.write_batch(make_batch([record(b, i) for i in range(3)]))
    sink.close()
    assert sink.rotations > 10
    assert [p.name for p in rotated_files(path)] == [f"{path.name}.{i}" for i in (1, 2, 3)]
    kept = [rec["b"] for f in all_files_oldest_first(path) for rec in records_of(f)[::3]]
    # The kept batches are the newest ones, contiguous, ending with the last batch:
    # the older ones were deleted with the oldest files, as documented.
    assert kept == list(range(kept[0], 200))
    assert kept[0] > 0


def test_rotate_keep_one_keeps_one_rotated_file(tmp_path, make_batch):
    """rotate_keep=1: PATH.1 is replaced at each rotation; PATH.2 never appears."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path, rotate_bytes=200, rotate_keep=1, fsync=False)
    for b in range(30):
        sink.write_batch(make_batch([record(b, 0), record(b, 1)]))
    sink.close()
    assert [p.name for p in rotated_files(path)] == [f"{path.name}.1"]
    newest = batches_in(path)[-1]
    assert newest == (0, 29)


def test_eight_threads_with_rotation_lose_and_tear_nothing(tmp_path, make_batch):
    """8 threads writing at once through rotations: every record once, whole batches, no file over the limit."""
    path = tmp_path / "out.ndjson"
    threads, per_thread, size = 8, 60, 10
    limit = 4_096
    sink = FileSink(path, rotate_bytes=limit, rotate_keep=100_000, fsync=False)
    batches = [
        [make_batch([record(b, i, thread=t) for i in range(size)]) for b in range(per_thread)]
        for t in range(threads)
    ]
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for batch in batches[t]:
                sink.write_batch(batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert not w.is_alive()
    sink.close()
    assert errors == []

    files = all_files_oldest_first(path)
    assert sink.rotations > 10
    seen: list[tuple[int, int, int]] = []
    for f in files:
        assert f.stat().st_size <= limit
        recs = records_of(f)
        assert len(recs) % size == 0
        for start in range(0, len(recs), size):
            chunk = recs[start : start + size]  # one whole batch, in order
            assert [(r["t"], r["b"], r["i"]) for r in chunk] == [
                (chunk[0]["t"], chunk[0]["b"], i) for i in range(size)
            ]
        seen.extend((r["t"], r["b"], r["i"]) for r in recs)
    assert sorted(seen) == [(t, b, i) for t in range(threads) for b in range(per_thread) for i in range(size)]
    # Per thread, batches appear in the order the thread wrote them.
    for t in range(threads):
        assert [b for (tt, b, i) in seen if tt == t and i == 0] == list(range(per_thread))
    assert sink.records == threads * per_thread * size


def test_an_existing_file_over_the_limit_is_rotated_before_the_first_write(tmp_path, make_batch):
    """A file already past rotate_bytes is moved to PATH.1 untouched; the new batch starts a new PATH."""
    path = tmp_path / "out.ndjson"
    old = b'{"old":' + b"1" * 200 + b"}\n"
    path.write_bytes(old)
    sink = FileSink(path, rotate_bytes=100, rotate_keep=2, fsync=False)
    sink.write_batch(make_batch([b'{"new":1}']))
    sink.close()
    assert (tmp_path / "out.ndjson.1").read_bytes() == old
    assert path.read_bytes() == b'{"new":1}\n'


def test_an_existing_file_counts_towards_the_limit(tmp_path, make_batch):
    """Appending to a file of 90 bytes with a 100-byte limit rotates before a 20-byte batch, not after."""
    path = tmp_path / "out.ndjson"
    path.write_bytes(b"x" * 89 + b"\n")
    sink = FileSink(path, rotate_bytes=100, rotate_keep=2, fsync=False)
    sink.write_batch(make_batch([b"y" * 19]))
    sink.close()
    assert (tmp_path / "out.ndjson.1").stat().st_size == 90
    assert path.read_bytes() == b"y" * 19 + b"\n"


def test_without_rotate_bytes_the_file_grows_without_rotating(tmp_path, make_batch):
    """rotate_bytes=None (the default) never renames the file."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path, fsync=False)
    for b in range(50):
        sink.write_batch(make_batch([record(b, i) for i in range(10)]))
    sink.close()
    assert rotated_files(path) == []
    assert sink.rotations == 0
    assert len(records_of(path)) == 500


def test_a_torn_batch_is_completed_in_its_file_before_rotating(tmp_path, make_batch, monkeypatch):
    """A write that fails part-way is finished in the same file; rotation happens only after it."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path, rotate_bytes=120, rotate_keep=5, fsync=False)
    torn = make_batch([record(0, i, pad=5) for i in range(3)])
    real_write = os.write
    state = {"armed": True}

    def write(fd: int, data) -> int:
        if fd == sink._fd and state["armed"]:
            view = memoryview(data)
            if state["armed"] is True:
                state["armed"] = "fail"
                return real_write(fd, view[:10])  # a short write...
            state["armed"] = False
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ...then disk full
        return real_write(fd, data)

    patch_sink_writes(monkeypatch, write)
    with pytest.raises(SinkError):
        sink.write_batch(torn)
    monkeypatch.undo()
    sink.write_batch(make_batch([record(1, i, pad=5) for i in range(3)]))  # another worker's batch
    sink.write_batch(torn)  # the retry: complete already
    sink.close()
    files = all_files_oldest_first(path)
    assert [batches_in(f) for f in files] == [[(0, 0)], [(0, 1)]]
    assert sink.records == 6


def test_a_failed_rename_loses_nothing_and_the_retry_rotates(tmp_path, make_batch, monkeypatch):
    """If the rename fails, the write raises a SinkError, the file keeps its data, and the retry rotates."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path, rotate_bytes=50, rotate_keep=3, fsync=False)
    first = make_batch([b"a" * 39])
    second = make_batch([b"b" * 39])
    sink.write_batch(first)
    real_rename = os.rename

    def refuse(src, dst):
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(SinkError, match="rotation failed") as info:
        sink.write_batch(second)
    assert "\n" not in str(info.value)
    monkeypatch.setattr(os, "rename", real_rename)
    sink.write_batch(second)
    sink.close()
    assert (tmp_path / "out.ndjson.1").read_bytes() == b"a" * 39 + b"\n"
    assert path.read_bytes() == b"b" * 39 + b"\n"
    assert sink.records == 2


def test_rotation_syncs_the_rotated_file_when_fsync_is_on(tmp_path, make_batch, monkeypatch):
    """With fsync on, each rotated file is synced before the new one takes its place."""
    path = tmp_path / "out.ndjson"
    sink = FileSink(path, rotate_bytes=10, rotate_keep=2)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    first_fd = sink._fd
    sink.write_batch(make_batch([b"12345678"]))
    sink.write_batch(make_batch([b"abcdefgh"]))
    assert synced == [first_fd]
    sink.close()


@pytest.mark.parametrize(("kwargs", "rule"), [({"rotate_bytes": 0}, "rotate_bytes"), ({"rotate_keep": 0}, "rotate_keep")])
def test_bad_rotation_settings_are_refused(tmp_path, kwargs, rule):
    """rotate_bytes and rotate_keep below 1 are ValueErrors naming the setting."""
    with pytest.raises(ValueError, match=rule):
        FileSink(tmp_path / "out.ndjson", **kwargs)


def test_config_takes_rotation_from_the_pipeline_config(tmp_path, make_batch):
    """FileSinkConfig.from_target(path, settings) and build(options) use rotate_bytes and rotate_keep."""
    path = tmp_path / "out.ndjson"
    options = PipelineConfig(rotate_bytes=64, rotate_keep=2)
    from_settings = FileSinkConfig.from_target(str(path), options)
    assert (from_settings.rotate_bytes, from_settings.rotate_keep) == (64, 2)
    sink = FileSinkConfig.from_target(str(path)).build(options)
    try:
        assert (sink.rotate_bytes, sink.rotate_keep) == (64, 2)
        for b in range(10):
            sink.write_batch(make_batch([record(b, 0, pad=1)]))
    finally:
        sink.close()
    assert [p.name for p in rotated_files(path)] == ["out.ndjson.1", "out.ndjson.2"]


def test_config_without_options_never_rotates(tmp_path):
    """FileSinkConfig.from_target(path).build() leaves rotation off."""
    sink = FileSinkConfig.from_target(str(tmp_path / "out.ndjson")).build()
    try:
        assert sink.rotate_bytes is None
    finally:
        sink.close()
