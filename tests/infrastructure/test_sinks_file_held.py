"""The file sink writing *held* batches (``RingBuffer.get_batch(..., hold=True)``) straight from the ring.

A held batch's records stay in the ring's memory, their slots taken until
``batch.release()``. ``FileSink.takes_held_batches`` says whether the sink
wants them (a regular file: yes; a FIFO or a device: no), and
``write_batch`` writes one with writev(2) from the ring, leaving it held: the
caller (the worker) releases it. What needs more than the plain write (the
rest of a failed batch pending, a rotation due, a FIFO) copies the batch out
first (it ends detached) and goes the ordinary way.

Everything here writes real files, with real batches from real rings, and
production-like records: empty ones, lengths around the ring's inline limit
(``slot_size - 17``), KiB stack traces with real newlines, 40 KiB records
stored out of line, invalid UTF-8, CRLF. The short writes are real too: a
child process lowers RLIMIT_FSIZE inside the batch (Python ignores SIGXFSZ,
so the kernel cuts the write short at the limit and the next one fails with
EFBIG), then raises it again for the retry.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from logpipe import Batch, RingBuffer
from logpipe._filewrite import HOLD_GIL_MAX_BYTES
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks import file as file_module
from logpipe.infrastructure.sinks.file import FileSink

SLOT_SIZE = 128  # the default
INLINE_MAX = SLOT_SIZE - 17  # the longest record stored inline (docs/ringbuffer.md)
BIG = 40 << 10  # a record well out of line
MAX_RECORD = 1 << 17


def framed(records: Sequence[bytes]) -> bytes:
    return b"".join(r + b"\n" for r in records)


def text(rng: random.Random, size: int) -> bytes:
    """Log-like ASCII of exactly ``size`` bytes, no newline."""
    words = (b"request", b"handled", b"user=", b"cache", b"miss", b"upstream", b"took", b"ms", b"GET", b"/api/v1")
    out = bytearray(b"2024-05-01T12:00:00.%06dZ INFO " % rng.randint(0, 999_999))
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def stack_trace(rng: random.Random) -> bytes:
    """1-4 KiB of a multi-line trace: real newlines and tabs inside one record."""
    size = rng.randint(1024, 4096)
    out = bytearray(text(rng, 60) + b' exc="java.lang.IllegalStateException: boom"')
    while len(out) < size:
        out += b"\n\tat com.example.Handler.run(Handler.java:%d)" % rng.randint(1, 999)
    return bytes(out[:size])


def invalid_utf8(rng: random.Random) -> bytes:
    bad = (0x00, 0x1B, 0x7F, 0x80, 0xBF, 0xC0, 0xC3, 0xED, 0xFE, 0xFF)
    junk = bytes(rng.choice(bad) for _ in range(rng.randint(1, 30)))
    return text(rng, rng.randint(10, 60)) + junk + b"\xc3\x28 tail \xe2\x82"


def crlf(rng: random.Random) -> bytes:
    return b"GET /x HTTP/1.1\r\nHost: a\r\n" + text(rng, rng.randint(0, 80)) + b"\r"


def production_record(rng: random.Random, big: bool = True) -> bytes:
    """One record from a production-like mix (``big=False``: nothing over 8 KiB)."""
    roll = rng.random()
    if roll < 0.05:
        return b""
    if roll < 0.30:
        return text(rng, INLINE_MAX + rng.randint(-2, 2))  # either side of the inline limit
    if roll < 0.37:
        return stack_trace(rng)
    if roll < 0.40 and big:
        return text(rng, BIG + rng.randint(-64, 64))
    if roll < 0.47:
        return invalid_utf8(rng)
    if roll < 0.52:
        return crlf(rng)
    return text(rng, rng.randint(1, 300))


#: One of each kind, for the single-batch tests.
EVERY_KIND = [
    b"",
    b"x",
    *(bytes([65 + d]) * (INLINE_MAX + d) for d in (-2, -1, 0, 1, 2)),
    b"\xff\xfe\xc3\x28 not utf-8 \xed\xa0\x80",
    b"GET / HTTP/1.1\r\nHost: example\r\n",
    b"ends with a carriage return\r",
    stack_trace(random.Random(1)),
    text(random.Random(2), BIG),
    b"",
    *(b"short %d" % i for i in range(5)),
    text(random.Random(3), BIG + 17),
    b"last",
]


def held_batch(ring: RingBuffer, records: Sequence[bytes]) -> Batch:
    """Put ``records`` and take them back as one held batch."""
    assert ring.put_many(list(records), block=False) == len(records)
    batch = ring.get_batch(len(records), timeout=0, hold=True)
    assert len(batch) == len(records) and batch.held, batch
    return batch


def ring_for(records: Sequence[bytes], capacity: int | None = None) -> RingBuffer:
    return RingBuffer(capacity or len(records), max_record_size=MAX_RECORD)


# --- 1: a held batch lands byte-exact and stays held ---------------------------------


def test_a_held_batch_is_written_from_the_ring_byte_exact_and_left_held(tmp_path):
    """Every kind of record, byte for byte; the sink neither releases nor detaches the batch."""
    path = tmp_path / "out.ndjson"
    ring = ring_for(EVERY_KIND, capacity=len(EVERY_KIND) + 4)
    batch = held_batch(ring, EVERY_KIND)
    sink = FileSink(path, fsync=False)
    assert sink.takes_held_batches is True
    sink.write_batch(batch)
    assert batch.held, "the sink detached the batch instead of writing it from the ring"
    assert len(batch) == len(EVERY_KIND) and batch.nbytes == len(framed(EVERY_KIND))
    assert path.read_bytes() == framed(EVERY_KIND)
    assert sink.records == len(EVERY_KIND)
    assert sink.nbytes == len(framed(EVERY_KIND))
    assert sink.batches == 1
    # Still held: its slots are out of the producers' reach...
    assert ring.put_many([b"p"] * ring.capacity, block=False) == ring.capacity - len(EVERY_KIND)
    assert list(ring.get_batch(ring.capacity, timeout=0)) == [b"p"] * (ring.capacity - len(EVERY_KIND))
    # ... until the worker releases it: then the whole ring is free again.
    batch.release()
    assert not batch.held and len(batch) == 0
    assert ring.nbytes == 0
    assert ring.put_many([b"q"] * ring.capacity, block=False) == ring.capacity
    sink.close()
    assert path.read_bytes() == framed(EVERY_KIND)  # nothing more written by close or release


def test_a_held_batch_appends_after_what_the_file_held(tmp_path):
    """O_APPEND: the held write goes after an earlier run's lines, and after copied batches."""
    path = tmp_path / "out.ndjson"
    path.write_bytes(b"earlier run\n")
    ring = ring_for(EVERY_KIND, capacity=2 * len(EVERY_KIND))
    sink = FileSink(path, fsync=False)
    assert ring.put_many([b"copied 1", b"copied 2"], block=False) == 2
    copied = ring.get_batch(2, timeout=0)  # an ordinary batch, its own copy
    assert not copied.held
    sink.write_batch(copied)
    sink.write_batch(held_batch(ring, EVERY_KIND))
    sink.close()
    assert path.read_bytes() == b"earlier run\ncopied 1\ncopied 2\n" + framed(EVERY_KIND)
    assert sink.records == 2 + len(EVERY_KIND)


@pytest.mark.parametrize("capacity", [2, 7, 32])
def test_many_held_batches_across_laps_of_a_small_ring(tmp_path, capacity):
    """Hundreds of held batches through a ring a few records long, wrapping all the time.

    Producers refill the ring while earlier batches are still held (they keep
    their slots), batches are released out of order, and some out-of-line
    records come and go: the file is exactly the framed input.
    """
    rng = random.Random(capacity)
    records = [production_record(rng) for _ in range(700)]
    path = tmp_path / "out.ndjson"
    ring = RingBuffer(capacity, max_record_size=MAX_RECORD)
    sink = FileSink(path, fsync=False)
    kept: list[Batch] = []  # written, not yet released
    put = taken = batches = 0
    while taken < len(records):
        put += ring.put_many(records[put : put + rng.randint(1, capacity)], block=False)
        if len(ring) == 0:
            # Everything is held: let the oldest go, or no producer can go on.
            assert kept, "an empty ring with nothing held, but records not taken"
            kept.pop(0).release()
            continue
        want = rng.randint(1, len(ring))
        batch = ring.get_batch(want, timeout=0, hold=True)
        assert len(batch) == want and batch.held
        assert batch.nbytes == len(framed(records[taken : taken + want]))
        sink.write_batch(batch)
        assert batch.held
        taken += want
        batches += 1
        kept.append(batch)
        while len(kept) > 2 or (kept and rng.random() < 0.4):
            kept.pop(rng.randrange(len(kept))).release()
    for batch in kept:
        batch.release()
    sink.close()
    assert taken == put == len(records)
    assert ring.pushed == ring.popped == len(records)
    assert len(records) >= 20 * capacity  # many laps of the ring
    data = path.read_bytes()
    assert len(data) == len(framed(records))
    assert data == framed(records)
    assert sink.records == len(records) and sink.nbytes == len(data) and sink.batches == batches
    assert ring.nbytes == 0 and len(ring) == 0
    assert ring.put_many([b"r"] * capacity, block=False) == capacity  # every slot given back


@pytest.mark.parametrize("count, long, short", [(900, INLINE_MAX + 1, 0), (3000, 300, 20)])
def test_a_held_batch_of_more_than_iov_max_pieces_is_written_whole(tmp_path, count, long, short):
    """More pieces than one writev takes (IOV_MAX, 1024): written in several calls, in order,
    with the GIL kept (under 64 KiB) and without it."""
    records = [b"%05d " % i + (b"L" * long if i % 2 == 0 else b"s" * short) for i in range(count)]
    path = tmp_path / "out.ndjson"
    ring = ring_for(records)
    batch = held_batch(ring, records)
    sink = FileSink(path, fsync=False)
    sink.write_batch(batch)
    assert batch.held
    batch.release()
    sink.close()
    assert path.read_bytes() == framed(records)
    assert sink.nbytes == len(framed(records))


# --- 2: which files take held batches ---------------------------------------------------


def test_takes_held_batches_only_for_a_regular_file(tmp_path):
    regular = FileSink(tmp_path / "out.ndjson", fsync=False)
    null = FileSink("/dev/null", fsync=False)
    fifo_path = tmp_path / "fifo"
    os.mkfifo(fifo_path)
    reader = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fifo = FileSink(fifo_path, fsync=False)
        try:
            assert regular.takes_held_batches is True
            assert null.takes_held_batches is False
            assert fifo.takes_held_batches is False
        finally:
            fifo.close()
    finally:
        os.close(reader)
        regular.close()
        null.close()


def test_a_held_batch_to_a_fifo_is_copied_out_and_written_whole(tmp_path):
    """A pipe may block while its reader sleeps: the batch is detached (slots back) and written the old way."""
    records = [r for r in EVERY_KIND if len(r) < 8192]  # well inside the pipe's buffer
    fifo_path = tmp_path / "fifo"
    os.mkfifo(fifo_path)
    reader = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink = FileSink(fifo_path, fsync=False)
        ring = ring_for(records)
        batch = held_batch(ring, records)
        sink.write_batch(batch)
        assert not batch.held, "a held batch given to a FIFO must be copied out of the ring"
        assert ring.nbytes == 0  # its slots are back already
        assert ring.put_many([b"x"] * ring.capacity, block=False) == ring.capacity
        got = b""
        while len(got) < len(framed(records)):
            got += os.read(reader, 1 << 16)
        assert got == framed(records)
        assert sink.records == len(records) and sink.nbytes == len(got)
        assert list(batch) == records  # the copy is the same records
        sink.close()
    finally:
        os.close(reader)


def test_a_held_batch_to_dev_null_is_copied_out_and_counted():
    records = list(EVERY_KIND)
    sink = FileSink("/dev/null", fsync=False)
    ring = ring_for(records)
    batch = held_batch(ring, records)
    sink.write_batch(batch)
    assert not batch.held
    assert sink.records == len(records) and sink.nbytes == len(framed(records))
    assert ring.nbytes == 0
    sink.close()


# --- 3: real short writes (RLIMIT_FSIZE in a child) -----------------------------------------

CHILD = """
    import json, os, pickle, resource, sys
    from logpipe import RingBuffer
    from logpipe.exceptions import SinkError
    from logpipe.infrastructure.sinks.file import FileSink

    first, other, limit, out = pickle.load(open(sys.argv[1], "rb"))
    seen = {}
    ring = RingBuffer(len(first) + len(other) + 1, max_record_size=1 << 17)
    ring.put_many(first + other, block=False)
    batch = ring.get_batch(len(first), timeout=0, hold=True)
    second = ring.get_batch(len(other), timeout=0, hold=True) if other else None
    seen["held_before"] = [batch.held, second.held if other else None]
    sink = FileSink(out, fsync=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        sink.write_batch(batch)
    except SinkError as exc:
        seen["error"] = [str(exc), exc.retryable]
    else:
        seen["error"] = None
    seen["size_after_failure"] = os.path.getsize(out)
    seen["held_after_failure"] = batch.held
    seen["records_after_failure"] = sink.records
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
    if other:
        sink.write_batch(second)           # another worker's batch, before the retry
        seen["second_held_after"] = second.held
    sink.write_batch(batch)                # the worker's retry
    seen["held_after_retry"] = batch.held
    seen["records"] = sink.records
    seen["nbytes"] = sink.nbytes
    sink.close()
    batch.release()                        # nothing still exported: the worker's release works
    if other:
        second.release()
    seen["ring_nbytes"] = ring.nbytes
    seen["ring_put"] = ring.put_many([b"z"] * ring.capacity, block=False)
    print(json.dumps(seen))
"""


def run_short_write(tmp_path: Path, first: list[bytes], other: list[bytes], limit: int) -> tuple[dict, bytes]:
    """Run CHILD; return what it saw and the file it wrote."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    total = len(framed(first)) + len(framed(other))
    if soft != resource.RLIM_INFINITY and soft < total:
        pytest.skip(f"RLIMIT_FSIZE is {soft}, below the {total} bytes the test writes")
    out = tmp_path / "out.ndjson"
    args = tmp_path / "args.pickle"
    args.write_bytes(pickle.dumps((first, other, limit, str(out))))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(args)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), out.read_bytes()


def mid_batch_records() -> list[bytes]:
    """Under 64 KiB framed: written keeping the GIL (write_to(keep_gil=True))."""
    rng = random.Random(11)
    records = [production_record(rng, big=False) for _ in range(40)]
    records[3] = text(rng, INLINE_MAX - 1)  # inline
    records[17] = text(rng, 9000)  # one out of line in the middle
    assert len(framed(records)) <= HOLD_GIL_MAX_BYTES
    return records


def big_batch_records() -> list[bytes]:
    """Over 64 KiB framed, with 40 KiB records: written without the GIL."""
    rng = random.Random(12)
    records = [production_record(rng) for _ in range(60)]
    records[5] = records[30] = text(rng, BIG)
    assert len(framed(records)) > HOLD_GIL_MAX_BYTES
    return records


def many_pieces_records() -> list[bytes]:
    """Under 64 KiB framed, but over IOV_MAX (1024) pieces: out-of-line records (two pieces
    each: the record, then a newline) between empty inline ones, so writev is called again."""
    records = [b"%04d" % i + b"o" * (INLINE_MAX - 3) if i % 2 == 0 else b"" for i in range(900)]
    assert len(framed(records)) <= HOLD_GIL_MAX_BYTES
    return records


def end_of_record(records: list[bytes], index: int) -> int:
    """Offset in the framed batch just before record ``index``'s newline."""
    return len(framed(records[:index])) + len(records[index])


SHORT_WRITES = {
    # name: (records, where the file size limit falls)
    "inside an inline record": (mid_batch_records, lambda r: len(framed(r[:3])) + len(r[3]) // 2 + 1),
    "inside an out-of-line record": (mid_batch_records, lambda r: end_of_record(r, 17) - 4000),
    "between an out-of-line record and its newline": (mid_batch_records, lambda r: end_of_record(r, 17)),
    "one byte before the end": (mid_batch_records, lambda r: len(framed(r)) - 1),
    "inside a 40 KiB record of a big batch": (big_batch_records, lambda r: end_of_record(r, 30) - 20_000),
    "after a newline of a big batch": (big_batch_records, lambda r: len(framed(r[:31]))),
    "past the first IOV_MAX pieces": (many_pieces_records, lambda r: len(framed(r[:801])) - 50),
}


@pytest.mark.parametrize("where", list(SHORT_WRITES))
def test_a_short_write_then_the_retry_writes_each_byte_once(tmp_path, where):
    """The write is cut short at the limit, the next fails (EFBIG): SinkError; the retry adds only the rest."""
    make, limit_of = SHORT_WRITES[where]
    records = make()
    limit = limit_of(records)
    assert 0 < limit < len(framed(records))
    seen, data = run_short_write(tmp_path, records, [], limit)
    assert seen["held_before"][0] is True
    assert seen["error"] is not None, "the write went through although the file size limit was inside it"
    assert "File too large" in seen["error"][0]
    assert seen["size_after_failure"] == limit  # a real short write: up to the limit
    assert seen["records_after_failure"] == 0
    # Its rest was copied out to be written and kept: the ring is not waited on.
    assert seen["held_after_failure"] is False
    assert data == framed(records), "the file is not exactly the records: a byte lost, duplicated or torn"
    assert seen["records"] == len(records)
    assert seen["nbytes"] == len(framed(records))
    assert seen["ring_nbytes"] == 0 and seen["ring_put"] == len(records) + 1


def test_a_write_that_fails_before_any_byte_leaves_the_batch_held_and_whole(tmp_path):
    """Limit 0: nothing written, nothing kept as owed; the retry writes all of it, from the ring."""
    records = mid_batch_records()
    seen, data = run_short_write(tmp_path, records, [], 0)
    assert seen["error"] is not None
    assert seen["size_after_failure"] == 0
    assert seen["held_after_failure"] is True
    assert seen["held_after_retry"] is True  # the retry was the plain held write
    assert data == framed(records)
    assert seen["records"] == len(records)
    assert seen["ring_nbytes"] == 0 and seen["ring_put"] == len(records) + 1


@pytest.mark.parametrize("where", ["inside an inline record", "inside a 40 KiB record of a big batch"])
def test_another_batch_after_a_short_write_completes_the_torn_one_first(tmp_path, where):
    """Another worker's held batch waits behind the torn batch's rest; the torn batch's retry adds nothing."""
    make, limit_of = SHORT_WRITES[where]
    records = make()
    rng = random.Random(5)
    other = [production_record(rng) for _ in range(12)] + [b"other's last"]
    seen, data = run_short_write(tmp_path, records, other, limit_of(records))
    assert seen["held_before"] == [True, True]
    assert seen["error"] is not None
    # The other batch could not go straight from the ring: the rest came first.
    assert seen["second_held_after"] is False
    assert data == framed(records) + framed(other)
    assert seen["records"] == len(records) + len(other)
    assert seen["nbytes"] == len(data)
    assert seen["ring_nbytes"] == 0


def test_held_writes_ask_for_writeback_as_the_data_comes_in(tmp_path, monkeypatch):
    """With fsync on, held writes count towards the writeback steps like copied ones: ranges
    that follow each other from the file's old end, each at least a step long."""
    step = 256 << 10
    monkeypatch.setattr(file_module, "WRITEBACK_STEP", step)
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(file_module, "start_writeback", lambda fd, offset, length: asked.append((offset, length)))
    path = tmp_path / "out.ndjson"
    path.write_bytes(b"old line\n")
    sink = FileSink(path)
    ring = RingBuffer(64, max_record_size=MAX_RECORD)
    rng = random.Random(8)
    total = 0
    while total < 10 * step:
        with held_batch(ring, [production_record(rng) for _ in range(48)]) as batch:
            sink.write_batch(batch)
            assert batch.held
            total += batch.nbytes
    sink.close()
    start = len(b"old line\n")
    assert asked and asked[0][0] == start
    for (offset, length), (next_offset, _) in zip(asked, asked[1:]):
        assert next_offset == offset + length, "ranges must follow each other"
    assert all(length >= step for _, length in asked)
    assert sum(length for _, length in asked) > total - step
    assert path.stat().st_size == start + total


# --- 4: rotation with held batches -----------------------------------------------------------


def tagged(b: int, i: int, rng: random.Random) -> bytes:
    """A record of batch ``b``, index ``i``, with a production-like body (never a newline)."""
    roll = rng.random()
    if roll < 0.05:
        body = b""
    elif roll < 0.35:
        body = text(rng, INLINE_MAX - 14 + rng.randint(-2, 2))
    elif roll < 0.40:
        body = stack_trace(rng).replace(b"\n", b"\\n")
    elif roll < 0.50:
        body = invalid_utf8(rng)
    elif roll < 0.55:
        body = b"a\r\r" + text(rng, 30) + b"\r"
    else:
        body = text(rng, rng.randint(1, 200))
    return b"b=%05d i=%03d " % (b, i) + body


def test_rotation_with_held_batches_keeps_whole_batches_in_order(tmp_path):
    """Small rotate_bytes: many rotations; each file holds whole batches, every record once, in order."""
    rng = random.Random(3)
    path = tmp_path / "out.ndjson"
    limit = 10_000
    sink = FileSink(path, fsync=False, rotate_bytes=limit, rotate_keep=10_000)
    ring = RingBuffer(48, max_record_size=MAX_RECORD)
    batches: list[list[bytes]] = []
    held_after: list[bool] = []
    for b in range(150):
        records = [tagged(b, i, rng) for i in range(rng.randint(1, 16))]
        batch = held_batch(ring, records)
        sink.write_batch(batch)
        held_after.append(batch.held)
        batch.release()
        batches.append(records)
    sink.close()
    assert ring.nbytes == 0
    assert sink.rotations >= 10
    # The batches that did not need a rotation went straight from the ring;
    # each one that rotated the file was copied out first.
    assert held_after.count(False) == sink.rotations
    assert held_after.count(True) >= 20

    rotated = [p for p in tmp_path.iterdir() if p.name.startswith("out.ndjson.")]
    rotated.sort(key=lambda p: -int(p.suffix[1:]))
    files = [*rotated, path]  # oldest first
    assert len(files) == sink.rotations + 1
    contents = [f.read_bytes() for f in files]
    assert b"".join(contents) == framed([r for records in batches for r in records])
    sizes = {b: len(framed(records)) for b, records in enumerate(batches)}
    for f, data in zip(files, contents):
        assert data.endswith(b"\n"), f"{f.name}: a torn last line"
        keys = [(int(line[2:7]), int(line[10:13])) for line in data.split(b"\n")[:-1]]
        in_file = sorted({b for b, _ in keys})
        # Whole batches only, each from its first record to its last.
        assert keys == [(b, i) for b in in_file for i in range(len(batches[b]))], f.name
        assert len(data) <= limit or len(in_file) == 1, f"{f.name}: {len(data)} bytes over {limit}"
        assert len(data) == sum(sizes[b] for b in in_file)


# --- 5: after close ---------------------------------------------------------------------------


def test_write_after_close_raises_and_the_held_batch_stays_whole(tmp_path):
    path = tmp_path / "out.ndjson"
    ring = ring_for(EVERY_KIND)
    sink = FileSink(path, fsync=False)
    sink.close()
    batch = held_batch(ring, EVERY_KIND)
    with pytest.raises(SinkError, match="write after close") as info:
        sink.write_batch(batch)
    assert info.value.retryable is False
    assert batch.held, "a refused batch must be left as it was"
    assert path.read_bytes() == b""
    assert sink.records == 0
    batch.detach()  # nothing lost: it can still be copied out and read
    assert not batch.held
    assert ring.nbytes == 0
    assert list(batch) == EVERY_KIND
    assert bytes(batch) == framed(EVERY_KIND)


OUT_OF_MEMORY_CHILD = """
import os, resource, sys
from logpipe import RingBuffer
from logpipe.infrastructure.sinks.file import FileSink

out = sys.argv[1]
records = [b"first line", b"x" * (32 << 20), b"last line"]
ring = RingBuffer(4, max_record_size=64 << 20, max_bytes=1 << 30)
ring.put_many(records)
batch = ring.get_batch(3, timeout=0, hold=True)
assert batch.held
sink = FileSink(out, fsync=False)
_, fsize_hard = resource.getrlimit(resource.RLIMIT_FSIZE)
_, as_hard = resource.getrlimit(resource.RLIMIT_AS)
vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + (16 << 20), as_hard))  # no room to copy 32 MiB out
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, fsize_hard))   # the write is cut at 1 MiB
try:
    sink.write_batch(batch)
    raise SystemExit("the first write did not fail")
except MemoryError:
    pass
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_hard, fsize_hard))
resource.setrlimit(resource.RLIMIT_AS, (as_hard, as_hard))
sink.write_batch(batch)  # the worker's retry (it retries any Exception)
sink.close()
print(len(b"".join(r + b"\\n" for r in records)))
"""


def test_a_short_write_whose_rest_cannot_be_copied_out_is_still_owed(tmp_path):
    """Cut short, then out of memory copying the rest out of the ring: the
    sink remembers how much is in the file, and the retry writes only the
    rest (it used to write the whole batch again: a duplicated, torn line)."""
    out = tmp_path / "out.ndjson"
    proc = subprocess.run(
        [sys.executable, "-c", OUT_OF_MEMORY_CHILD, str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    data = out.read_bytes()
    assert len(data) == int(proc.stdout.split()[-1])
    assert data == b"first line\n" + b"x" * (32 << 20) + b"\nlast line\n"


def test_stdout_to_a_regular_file_takes_held_batches_too(tmp_path):
    """``--sink stdout > FILE``: the stdout sink writes held batches from the
    ring as the file sink does, after what the process wrote to the stream."""
    from logpipe.infrastructure.sinks.stdout import StdoutSink

    rng = random.Random(5)
    records = [production_record(rng) for _ in range(300)]
    path = tmp_path / "out.ndjson"
    ring = RingBuffer(64, max_record_size=MAX_RECORD)
    with open(path, "wb") as stream:
        sink = StdoutSink(stream)
        assert sink.takes_held_batches
        stream.write(b"# header\n")  # buffered in the stream: must land first
        put = taken = 0
        while taken < len(records):
            put += ring.put_many(records[put : put + 50], block=False)
            batch = ring.get_batch(len(ring), timeout=0, hold=True)
            assert batch.held
            sink.write_batch(batch)
            assert batch.held  # written from the ring, not copied out
            taken += len(batch)
            batch.release()
        sink.close()
    assert path.read_bytes() == b"# header\n" + framed(records)
    assert sink.records == len(records)
    assert len(ring) == 0 and ring.nbytes == 0


def test_stdout_to_a_pipe_does_not_take_held_batches():
    from logpipe.infrastructure.sinks.stdout import StdoutSink

    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb", closefd=False) as stream:
            assert StdoutSink(stream).takes_held_batches is False
    finally:
        os.close(read_end)
        os.close(write_end)
