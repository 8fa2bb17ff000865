"""Held batches: ``get_batch(..., hold=True)`` and what a held Batch does.

A held batch keeps its records' ring slots (and their share of the byte
budget) until it is released, detached or collected, and ``write_to(fd)``
writes it straight from the ring with writev(2). These tests check, with
production-like records (empty, one byte, on the inline limit of the slot,
multi-line stack traces, tens of KiB out of line, invalid UTF-8, CRLF) and
rings small enough to wrap all the time:

* that every way of reading a held batch gives what a copied batch gives,
  and which of them detach it;
* that its slots and bytes stay out of the producers' reach until it is let
  go (release, detach, ``with``, garbage collection), and no longer;
* write_to's error paths (bad descriptor, broken pipe, a full non-blocking
  pipe, a short write);
* many producers and consumers holding batches at once: nothing lost,
  nothing duplicated, each producer's order kept;
* that a getter which has to wait never pins the ring, and that a held
  batch outlives close(), shutdown(immediate=True) and its ring;
* that letting go of a batch (or reading it) while another thread is in its
  write_to never changes what write_to writes, and that the out-of-line
  records of held batches are freed, once, whichever way the batch goes.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import gc
import os
import random
import time
from collections import deque
from pathlib import Path

import pytest
from _corpus import make_corpus
from _support import join_all, scratch_dir, start_daemon

from logpipe import Closed, Full, RingBuffer, StopSignal
from logpipe._ringbuf import DEFAULT_SLOT_SIZE


def framed(records) -> bytes:
    return b"".join(r + b"\n" for r in records)


# --- records ---------------------------------------------------------------------


def text(rng: random.Random, size: int) -> bytes:
    """Log-like ASCII of exactly ``size`` bytes."""
    head = b"2024-05-%02dT%02d:%02d:%02d.%03dZ INFO [svc-%d] " % (
        rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
        rng.randint(0, 999), rng.randint(1, 40))  # fmt: skip
    body = bytearray(head)
    while len(body) < size:
        body += rng.choice((b"request", b"handled", b"user=%d" % rng.randint(0, 99999), b"took",
                            b"ms", b"status=200", b"/api/v1/orders", b"cache", b"miss")) + b" "
    return bytes(body[:size])


def stack_trace(rng: random.Random) -> bytes:
    """A real multi-line Python traceback of 1-8 KiB: the record holds newlines."""
    size = rng.randint(1024, 8192)
    lines = [text(rng, 70) + b" unhandled exception", b"Traceback (most recent call last):"]
    while sum(len(line) + 1 for line in lines) < size:
        lines.append(b'  File "/srv/app/handlers/%s.py", line %d, in %s' % (
            rng.choice((b"orders", b"users", b"cache")), rng.randint(1, 2000),
            rng.choice((b"handle", b"dispatch", b"run"))))  # fmt: skip
        lines.append(b"    return self.inner(request, *args, **kwargs)")
    lines.append(b"ValueError: bad value \xe2\x9c\x97 for 'qty'")
    return b"\n".join(lines)


def edge_records(slot_size: int, rng: random.Random) -> list[bytes]:
    """The records on the ring's boundaries for ``slot_size``, and the awkward contents."""
    inline = slot_size - 17  # longest inline record
    return [
        b"",
        b"x",
        text(rng, inline - 1),  # slot_size - 18
        text(rng, inline),  # slot_size - 17: the last inline length
        text(rng, inline + 1),  # slot_size - 16: the first out of line
        text(rng, 2 * (slot_size - 16) - 1),
        stack_trace(rng),
        stack_trace(rng),
        text(rng, rng.randint(10_000, 60_000)),  # tens of KiB
        text(rng, 40) + b"\xff\xfe\x00\x80\xc3\x28 bad \xed\xa0\x80\xe2\x82",  # invalid UTF-8, NUL
        b"\xc0\xaf" * 70,  # invalid UTF-8, out of line at small slots
        b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",  # CRLF inside
        text(rng, 50) + b"\r",  # a CR at the end
        b"\r\n",
        b"\n",
        b"\n\n\n",
    ]


@functools.cache
def production_records(seed: int, count: int, slot_size: int) -> tuple[bytes, ...]:
    """``count`` records: the line corpus's production mix with the edge records of
    ``slot_size`` scattered through it several times."""
    rng = random.Random(seed)
    corpus = make_corpus(seed, lines=count, max_record_size=1 << 16).records
    edges = edge_records(slot_size, rng)
    records = list(corpus[: max(0, count - 3 * len(edges))])
    for _ in range(3):
        for record in edges:
            records.insert(rng.randint(0, len(records)), record)
    return tuple(records[:count])


def tagged(pid: int, seq: int, rng: random.Random) -> bytes:
    """A record naming its producer and sequence, of a heavy-tailed size (no newline)."""
    size = min(int(24 * rng.paretovariate(1.1)), 40_000)
    return b"%d:%d:" % (pid, seq) + bytes([97 + (pid * 7 + seq) % 26]) * size


def tag_of(record: bytes) -> tuple[int, int]:
    pid, seq, _ = record.split(b":", 2)
    return int(pid), int(seq)


# --- writing a batch somewhere real ------------------------------------------------


def write_through_file(batch, path: Path, **kwargs) -> tuple[int, bytes]:
    """(write_to's count, the file's bytes) for ``batch`` written to a new file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        count = batch.write_to(fd, **kwargs)
    finally:
        os.close(fd)
    return count, path.read_bytes()


def read_until_eof(fd: int, out: list) -> None:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    out.append(b"".join(chunks))


def write_through_pipe(batch, **kwargs) -> tuple[int, bytes]:
    """(write_to's count, what a reader thread got) for ``batch`` written into a pipe
    (a blocking writer and a Python reader: write_to must let the GIL go)."""
    r, w = os.pipe()
    got: list[bytes] = []
    reader = start_daemon(read_until_eof, r, got)
    try:
        count = batch.write_to(w, **kwargs)
    finally:
        os.close(w)
    join_all([reader], 20)
    os.close(r)
    return count, got[0]


def drain_nonblocking(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def check_empty(batch) -> None:
    """A released batch: nothing left, nothing held."""
    assert len(batch) == 0 and not batch
    assert batch.nbytes == 0
    assert batch.held is False
    assert batch.positions == []
    assert bytes(batch) == b"" and batch.tobytes() == b"" and list(batch) == []


@pytest.fixture
def scratch(tmp_path):
    with scratch_dir(tmp_path) as directory:
        yield directory


# --- 1. round trips -------------------------------------------------------------------

MODES = ("file", "file_keep_gil", "pipe", "bytes", "memoryview", "index", "iter", "tobytes", "detach")


def check_held_batch(batch, expected: list[bytes], first_pos: int, mode: str, scratch: Path) -> None:
    """``batch`` is a held batch of ``expected`` taken at position ``first_pos``: read
    it the ``mode`` way, then every other way, each giving what a copied batch gives."""
    want = framed(expected)
    assert batch.held is True
    assert len(batch) == len(expected) and bool(batch)
    assert batch.nbytes == len(want)
    assert batch.positions == [(first_pos, len(expected))]
    assert batch.oldest_enqueue <= time.monotonic() + 0.05
    assert batch.held is True, "len, nbytes, positions or oldest_enqueue detached the batch"
    if mode in ("file", "file_keep_gil"):
        keep = {"keep_gil": True} if mode == "file_keep_gil" else {}
        count, data = write_through_file(batch, scratch / "out", **keep)
        assert (count, len(data)) == (len(want), len(want))
        assert data == want
        assert batch.held is True, "write_to detached the batch"
        count, data = write_through_file(batch, scratch / "again")  # write_to twice
        assert (count, data) == (len(want), want)
        assert bytes(batch) == want
        assert batch.held is False, "bytes(batch) did not detach it"
    elif mode == "pipe":
        count, data = write_through_pipe(batch)
        assert (count, data) == (len(want), want)
        assert batch.held is True, "write_to detached the batch"
    elif mode == "bytes":
        assert bytes(batch) == want
        assert batch.held is False
    elif mode == "memoryview":
        with memoryview(batch) as view:
            assert batch.held is False
            assert view.nbytes == len(want) and bytes(view) == want
    elif mode == "index":
        assert batch[0] == expected[0]
        assert batch.held is False
        assert batch[-1] == expected[-1]
    elif mode == "iter":
        it = iter(batch)
        assert next(it) == expected[0]
        assert batch.held is False
        assert [expected[0], *it] == expected
    elif mode == "tobytes":
        assert batch.tobytes() == want
        assert batch.held is False
    elif mode == "detach":
        assert batch.detach() is None
        assert batch.held is False
        assert batch.detach() is None  # does nothing on a batch not held
        count, data = write_through_file(batch, scratch / "out")
        assert (count, data) == (len(want), want)
    # Whatever came first, the batch reads the same every way now.
    assert bytes(batch) == want and batch.tobytes() == want
    assert list(batch) == expected
    assert [batch[i] for i in range(len(expected))] == expected
    assert len(batch) == len(expected) and batch.nbytes == len(want)
    assert batch.positions == [(first_pos, len(expected))]
    assert batch.held is False


@pytest.mark.parametrize("slot_size", [32, DEFAULT_SLOT_SIZE])
@pytest.mark.parametrize("capacity", [2, 7, 64, 1500])
def test_held_batches_round_trip(capacity, slot_size, scratch):
    """Fill and drain several laps at random amounts (so batches start
    anywhere and cross the wrap): every batch taken with ``timeout=0,
    hold=True`` is held, is what a copied batch would be (written to a file,
    to a pipe, read as bytes, records, by index...), and once released its
    slots take new records."""
    rng = random.Random(capacity * 1000 + slot_size)
    total = min(max(6 * capacity, 400), 6000)
    records = production_records(capacity + slot_size, total, slot_size)
    ring = RingBuffer(capacity, slot_size=slot_size, max_record_size=1 << 16, max_bytes=1 << 30)
    queue: deque[bytes] = deque()
    put = popped = held_batches = 0
    while put < total or queue:
        if put < total and (not queue or rng.random() < 0.5) and len(queue) < capacity:
            room = capacity - len(queue)
            chunk = list(records[put:put + rng.randint(1, capacity + 2)])
            assert ring.put_many(chunk, block=False) == min(room, len(chunk))
            queue.extend(chunk[:room])
            put += min(room, len(chunk))
            continue
        n = rng.randint(1, len(queue))
        # Now and then more than is there: timeout=0 takes what is, still held.
        want = n + rng.randint(1, 3) if n == len(queue) and rng.random() < 0.3 else n
        batch = ring.get_batch(want, timeout=0, hold=True)
        expected = [queue.popleft() for _ in range(n)]
        assert len(ring) == len(queue), "len(ring) counts the held records"
        check_held_batch(batch, expected, popped, MODES[held_batches % len(MODES)], scratch)
        held_batches += 1
        popped += n
        if rng.random() < 0.2:
            del batch  # collected: lets go of what it has
        else:
            batch.release()
            check_empty(batch)
            batch.release()
            check_empty(batch)
    assert held_batches > 0
    assert (ring.pushed, len(ring), ring.nbytes) == (total, 0, 0)
    # Every slot is free again: a whole ring of records goes in and out.
    assert ring.put_many(list(records[:capacity]), block=False) == capacity
    with ring.get_batch(capacity, timeout=0, hold=True) as batch:
        count, data = write_through_file(batch, scratch / "last")
        assert data == framed(records[:capacity]) and count == len(data)


@pytest.mark.parametrize("slot_size", [32, DEFAULT_SLOT_SIZE])
@pytest.mark.parametrize("capacity", [2, 7, 64])
def test_held_batches_alive_while_producers_go_on(capacity, slot_size, scratch):
    """Several held batches alive at once, let go in any order and any way,
    while producers put and other batches (held or copied) are taken: a put
    goes in exactly while the slot it claims is free (producers claim in
    order: position p needs every position up to p - capacity taken and let
    go), and each held batch, written when it is let go, still has exactly
    its records."""
    rng = random.Random(capacity * 7919 + slot_size)
    records = production_records(3 * capacity + slot_size, min(max(8 * capacity, 400), 2000), slot_size)
    ring = RingBuffer(capacity, slot_size=slot_size, max_record_size=1 << 16, max_bytes=1 << 30)
    queue: deque[tuple[int, bytes]] = deque()  # (position, record) still in the ring
    alive: list[tuple[object, list[bytes], int]] = []  # held batches: (batch, records, first position)
    put = 0
    steps = 0

    def pending_min() -> int:
        """The oldest position not yet let go (in the ring or in a held batch)."""
        firsts = [first for _, _, first in alive] + ([queue[0][0]] if queue else [])
        return min(firsts, default=put)

    def let_go(index: int) -> None:
        batch, expected, first = alive.pop(index)
        assert batch.held and batch.positions == [(first, len(expected))]
        count, data = write_through_file(batch, scratch / "held")
        assert (count, data) == (len(framed(expected)), framed(expected))
        how = rng.choice(("release", "detach", "collect", "with"))
        if how == "release":
            batch.release()
        elif how == "detach":
            batch.detach()
            assert list(batch) == expected
        elif how == "with":
            with batch:
                pass
        del batch

    while put < len(records) or queue or alive:
        steps += 1
        roll = rng.random()
        if roll < 0.4 and put < len(records):
            chunk = list(records[put:put + rng.randint(1, capacity + 2)])
            oldest = pending_min()
            room = 0
            while room < len(chunk) and oldest > put + room - capacity:
                room += 1  # position put + room's slot is free
            assert ring.put_many(chunk, block=False) == room, (
                f"step {steps}: oldest position not let go {oldest}, next position {put}")
            queue.extend((put + i, chunk[i]) for i in range(room))
            put += room
        elif roll < 0.7 and queue:
            n = rng.randint(1, len(queue))
            hold = rng.random() < 0.75
            batch = ring.get_batch(n, timeout=0, hold=hold)
            first = queue[0][0]
            expected = [queue.popleft()[1] for _ in range(n)]
            assert batch.held is hold and len(batch) == n
            if hold:
                alive.append((batch, expected, first))
            else:
                assert list(batch) == expected and batch.positions == [(first, n)]
            del batch
        elif alive:
            let_go(rng.randrange(len(alive)))
        elif not queue and put >= len(records):
            break
        assert len(ring) == len(queue)
    assert (ring.pushed, len(ring), ring.nbytes) == (len(records), 0, 0)
    assert ring.put_many(list(records[:capacity]), block=False) == capacity


def test_a_held_batch_of_many_out_of_line_records(scratch):
    """1500 out-of-line records (two pieces each for writev: its copy and a
    newline), all ready: one held batch (more than one claim's worth and more
    than IOV_MAX pieces), written whole to a file and to a pipe."""
    rng = random.Random(5)
    records = [text(rng, rng.randint(16, 300)) for _ in range(1500)]
    ring = RingBuffer(1500, slot_size=32, max_record_size=4096)
    assert ring.put_many(records) == 1500
    batch = ring.get_batch(1500, timeout=0, hold=True)
    assert batch.held and len(batch) == 1500
    want = framed(records)
    assert write_through_file(batch, scratch / "a") == (len(want), want)
    assert write_through_file(batch, scratch / "b", keep_gil=True) == (len(want), want)
    assert write_through_pipe(batch) == (len(want), want)
    assert batch.held
    batch.release()
    assert ring.put_many(records, block=False) == 1500


def test_a_held_batch_is_returned_whenever_all_its_records_are_ready():
    """hold=True with the records all there returns a held batch, whatever
    the timeout (None, a positive one, 0 with fewer ready than asked); an
    empty batch is never held."""
    ring = RingBuffer(16)
    records = [b"a", b"", b"c" * 200, b"d"]
    for kwargs in ({}, {"timeout": None}, {"timeout": 5}):
        ring.put_many(records)
        with ring.get_batch(4, hold=True, **kwargs) as batch:
            assert batch.held and list(batch) == records
    ring.put_many(records)
    with ring.get_batch(10, timeout=0, hold=True) as batch:
        assert batch.held and list(batch) == records
    empty = ring.get_batch(10, timeout=0, hold=True)
    assert len(empty) == 0 and empty.held is False
    empty.release()
    # hold=False (the default) never holds.
    ring.put_many(records)
    assert ring.get_batch(4, timeout=0).held is False
    ring.put_many(records)
    assert ring.get_batch(4, timeout=0, hold=False).held is False


# --- 2. pinning: held slots are out of the producers' reach -------------------------------


def pin_records(rng: random.Random, n: int) -> list[bytes]:
    sizes = [0, 1, 60, 110, 111, 112, 300, 5000]
    return [b"%d|" % i + text(rng, rng.choice(sizes)) for i in range(n)]


@pytest.mark.parametrize("capacity, held", [(8, 5), (8, 8), (8, 1), (2, 1), (2, 2), (7, 4)])
@pytest.mark.parametrize("let_go", ["release", "detach", "collect", "with"])
def test_held_slots_are_pinned_until_let_go(capacity, held, let_go):
    """A full ring with ``held`` records in a held batch takes no record
    (its held slots are not free) until the batch is let go; then exactly
    ``held`` more, and everything still comes out intact and in order."""
    rng = random.Random(capacity * 100 + held)
    records = pin_records(rng, 3 * capacity)
    ring = RingBuffer(capacity, max_record_size=1 << 16)
    assert ring.put_many(records[:capacity]) == capacity
    batch = ring.get_batch(held, timeout=0, hold=True)
    assert batch.held and len(batch) == held
    assert len(ring) == capacity - held
    assert ring.put_many(records[capacity:], block=False) == 0
    with pytest.raises(Full):
        ring.put(b"one", block=False)
    with pytest.raises(Full):
        ring.put(b"", block=False)
    assert ring.put_many(records[capacity:], timeout=0.02) == 0
    assert write_through_pipe(batch) == (len(framed(records[:held])), framed(records[:held]))
    assert batch.held
    if let_go == "release":
        batch.release()
        check_empty(batch)
    elif let_go == "detach":
        batch.detach()
        assert not batch.held and list(batch) == records[:held]
    elif let_go == "collect":
        del batch
        gc.collect()
    else:
        with batch as entered:
            assert entered is batch
        check_empty(batch)
    more = records[capacity:capacity + held]
    assert ring.put_many(records[capacity:], block=False) == held
    assert ring.put_many(records[capacity:], block=False) == 0
    assert list(ring.get_batch(capacity, timeout=0)) == records[held:capacity] + more


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("let_go", ["release", "detach", "collect", "with", "bytes"])
def test_a_blocked_producer_wakes_when_the_batch_is_let_go(let_go):
    """A producer parked on a ring whose slots are held (no timeout: only a
    wake-up ends its wait) wakes when the batch is let go, any way."""
    ring = RingBuffer(4, max_record_size=1 << 16)
    records = [b"r0", b"r1" * 100, b"r2", b"r3" * 3000]
    ring.put_many(records)
    batch = ring.get_batch(4, timeout=0, hold=True)
    assert batch.held
    done: list[int] = []
    producer = start_daemon(lambda: done.append(ring.put_many([b"n0", b"n1"])))
    deadline = time.monotonic() + 10
    while ring.put_waits == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert ring.put_waits >= 1 and not done, "the producer did not wait for the held slots"
    if let_go == "release":
        batch.release()
    elif let_go == "detach":
        batch.detach()
    elif let_go == "collect":
        del batch
        gc.collect()
    elif let_go == "with":
        with batch:
            pass
    else:
        assert bytes(batch) == framed(records)
    join_all([producer], 5)
    assert done == [2]
    assert list(ring.get_batch(4, timeout=0)) == [b"n0", b"n1"]


def test_producers_write_around_a_held_batch(scratch):
    """Records taken and copied before a held batch free their slots as usual:
    producers fill them (writing the shares next to the held records) while
    the held batch's bytes stay exactly as they were. Producers claim in
    order, so once they reach the first held slot they take no more, whatever
    is free after it, until the batch is let go."""
    rng = random.Random(11)
    records = pin_records(rng, 40)
    ring = RingBuffer(8, max_record_size=1 << 16)
    assert ring.put_many(records[:8]) == 8
    assert list(ring.get_batch(3, timeout=0)) == records[:3]  # copied: slots 0-2 free
    held = ring.get_batch(5, timeout=0, hold=True)  # slots 3-7
    assert held.held
    assert ring.put_many(records[8:], block=False) == 3  # slots 0-2 only
    assert list(ring.get_batch(3, timeout=0)) == records[8:11]
    accepted = ring.put_many(records[11:], block=False)
    assert accepted <= 3, "more taken than the slots not held"
    want = framed(records[3:8])
    assert write_through_file(held, scratch / "held") == (len(want), want)
    assert held.held
    held.release()
    accepted += ring.put_many(records[11 + accepted:], block=False)
    assert accepted == 8
    assert list(ring.get_batch(8, timeout=0)) == records[11:19]


def test_two_held_batches_let_go_in_either_order():
    """Two held batches side by side: the slots of the later one come back
    when it is released (producers take exactly those), the first one's
    when it is; contents intact throughout."""
    rng = random.Random(12)
    records = pin_records(rng, 40)
    ring = RingBuffer(8, max_record_size=1 << 16)
    assert ring.put_many(records[:8]) == 8
    a = ring.get_batch(3, timeout=0, hold=True)
    b = ring.get_batch(5, timeout=0, hold=True)
    assert a.held and b.held and len(ring) == 0
    assert ring.put_many(records[8:], block=False) == 0
    a.release()
    assert ring.put_many(records[8:], block=False) == 3  # 8 - 5 held
    assert ring.put_many(records[8:], block=False) == 0
    assert list(b) == records[3:8]  # detaches b: its 5 slots come back
    assert ring.put_many(records[11:], block=False) == 5
    assert list(ring.get_batch(8, timeout=0)) == records[8:16]

    # The other order: the later batch let go first.
    ring = RingBuffer(8, max_record_size=1 << 16)
    assert ring.put_many(records[:8]) == 8
    a = ring.get_batch(3, timeout=0, hold=True)
    b = ring.get_batch(5, timeout=0, hold=True)
    b.release()
    accepted = ring.put_many(records[8:], block=False)
    assert accepted <= 5, "more records taken than the slots not held"
    assert bytes(a) == framed(records[:3])  # detaches a
    accepted += ring.put_many(records[8 + accepted:], block=False)
    assert accepted == 8
    assert list(ring.get_batch(8, timeout=0)) == records[8:16]


# --- 3. the byte budget -------------------------------------------------------------------


@pytest.mark.parametrize("let_go", ["release", "detach"])
def test_held_bytes_count_in_the_budget(let_go):
    """On a ring bounded by bytes, a held batch's bytes stay in the budget
    until it is let go, though its records have left the ring."""
    ring = RingBuffer(64, max_record_size=1000, max_bytes=1000)
    records = [bytes([65 + i]) * 250 for i in range(4)]
    assert ring.put_many(records) == 4
    with pytest.raises(Full):
        ring.put(b"z", block=False)  # the budget is spent
    batch = ring.get_batch(4, timeout=0, hold=True)
    assert batch.held and len(ring) == 0
    assert ring.put_many([b"y" * 250], block=False) == 0
    with pytest.raises(Full):
        ring.put(b"z", block=False)
    assert not ring.fits(1), "fits() says a put would be taken that is refused"
    assert ring.free_bytes == 0
    if let_go == "release":
        batch.release()
    else:
        batch.detach()
        assert list(batch) == records
    assert ring.fits(250)
    assert ring.put_many([b"y" * 250] * 5, block=False) == 4
    assert list(ring.get_batch(8, timeout=0)) == [b"y" * 250] * 4
    assert ring.nbytes == 0


def test_part_of_the_budget_held():
    """Half the budget in a held batch, half in the ring: nothing more goes
    in; released, exactly the held half comes back."""
    ring = RingBuffer(64, max_record_size=1000, max_bytes=1000)
    records = [bytes([65 + i]) * 250 for i in range(4)]
    assert ring.put_many(records) == 4
    batch = ring.get_batch(2, timeout=0, hold=True)
    assert batch.held and len(ring) == 2
    assert ring.put_many([b"y" * 250], block=False) == 0
    assert ring.put_many([b"y" * 249], block=False) == 0
    batch.release()
    assert ring.put_many([b"y" * 250] * 3, block=False) == 2
    assert list(ring.get_batch(8, timeout=0)) == records[2:] + [b"y" * 250] * 2
    assert ring.nbytes == 0


# --- 4. release(), detach(), with, garbage collection ---------------------------------


@pytest.mark.parametrize("hold", [True, False])
def test_release_empties_the_batch(hold):
    ring = RingBuffer(8, slot_size=32, max_record_size=1 << 16)
    records = [b"short", b"", b"x" * 40, b"y" * 20_000, b"multi\nline\r\n"]
    ring.put_many(records)
    batch = ring.get_batch(5, timeout=0, hold=hold)
    assert batch.held is hold
    assert batch.release() is None
    check_empty(batch)
    assert batch.release() is None
    check_empty(batch)
    assert batch.detach() is None
    check_empty(batch)
    r, w = os.pipe()
    try:
        assert batch.write_to(w) == 0  # nothing to write
    finally:
        os.close(r)
        os.close(w)
    assert ring.nbytes == 0
    assert ring.put_many(records * 2, block=False) == 8


@pytest.mark.parametrize("hold", [True, False])
def test_release_refuses_while_a_view_is_alive(hold):
    """release() with a memoryview of the batch alive raises BufferError and
    releases nothing; once the view is released it works."""
    ring = RingBuffer(8, max_record_size=1 << 16)
    records = [b"a" * 10, b"b" * 5000, b"c"]
    ring.put_many(records)
    batch = ring.get_batch(3, timeout=0, hold=hold)
    view = memoryview(batch)
    assert batch.held is False  # the buffer was asked for: detached
    with pytest.raises(BufferError):
        batch.release()
    assert bytes(view) == framed(records)
    assert list(batch) == records and batch.nbytes == len(framed(records))
    assert batch.positions == [(0, 3)]
    second = memoryview(batch)
    view.release()
    with pytest.raises(BufferError):
        batch.release()
    assert bytes(second) == framed(records)
    second.release()
    batch.release()
    check_empty(batch)
    assert ring.put_many([b"z"] * 9, block=False) == 8


def test_a_memoryview_slice_or_numpy_array_also_blocks_release():
    """Any buffer export counts (a memoryview slice or an array over the batch
    keeps the export alive)."""
    import numpy as np

    ring = RingBuffer(8)
    ring.put_many([b"abc", b"def"])
    batch = ring.get_batch(2, timeout=0, hold=True)
    array = np.frombuffer(batch, dtype=np.uint8)
    with pytest.raises(BufferError):
        batch.release()
    assert array.tobytes() == b"abc\ndef\n"
    del array
    batch.release()
    check_empty(batch)

    ring = RingBuffer(8)
    ring.put_many([b"abc", b"def"])
    batch = ring.get_batch(2, timeout=0, hold=True)
    part = memoryview(batch)[4:]
    with pytest.raises(BufferError):
        batch.release()
    assert bytes(part) == b"def\n"
    part.release()
    batch.release()
    check_empty(batch)


def test_the_batch_is_a_context_manager(scratch):
    ring = RingBuffer(4, max_record_size=1 << 16)
    records = [b"one", b"two" * 100, b"three"]
    ring.put_many(records)
    with ring.get_batch(10, timeout=0, hold=True) as batch:
        assert batch.held and len(batch) == 3
        assert write_through_file(batch, scratch / "w") == (len(framed(records)), framed(records))
    check_empty(batch)
    assert ring.put_many([b"n%d" % i for i in range(5)], block=False) == 4
    # An exception inside: released all the same, and it propagates.
    with pytest.raises(ZeroDivisionError), ring.get_batch(4, timeout=0, hold=True) as batch:
        assert batch.held
        1 / 0  # noqa: B018
    check_empty(batch)
    assert ring.put_many([b"m%d" % i for i in range(5)], block=False) == 4
    assert list(ring.get_batch(4, timeout=0)) == [b"m%d" % i for i in range(4)]
    # A copied batch too.
    ring.put_many(records)
    with ring.get_batch(3, timeout=0) as batch:
        assert list(batch) == records
    check_empty(batch)


def test_a_collected_held_batch_gives_its_slots_back():
    ring = RingBuffer(6, slot_size=32, max_record_size=1 << 16)
    records = [b"r%d" % i + b"." * (i * 9) for i in range(6)]
    for _ in range(5):  # several laps, out-of-line records among them
        assert ring.put_many(records, block=False) == 6
        batch = ring.get_batch(6, timeout=0, hold=True)
        assert batch.held
        assert ring.put_many(records, block=False) == 0
        del batch
        gc.collect()
    assert ring.put_many(records, block=False) == 6
    assert list(ring.get_batch(6, timeout=0)) == records
    assert ring.nbytes == 0


def test_detach_keeps_the_data_and_gives_the_slots_back(scratch):
    ring = RingBuffer(4, slot_size=32, max_record_size=1 << 16)
    records = [b"", b"p" * 15, b"q" * 16, b"s" * 30_000]
    ring.put_many(records)
    batch = ring.get_batch(4, timeout=0, hold=True)
    positions, oldest = batch.positions, batch.oldest_enqueue
    assert batch.detach() is None
    assert batch.held is False
    assert ring.put_many([b"new"] * 4, block=False) == 4  # slots back before the batch goes
    assert list(batch) == records
    assert (batch.positions, batch.oldest_enqueue) == (positions, oldest)
    assert write_through_file(batch, scratch / "d") == (len(framed(records)), framed(records))
    assert list(ring.get_batch(4, timeout=0)) == [b"new"] * 4
    batch.release()
    check_empty(batch)


# --- 5. write_to's errors ---------------------------------------------------------------


def held_batch_of(records, capacity=16):
    ring = RingBuffer(capacity, max_record_size=1 << 16)
    assert ring.put_many(records) == len(records)
    batch = ring.get_batch(len(records), timeout=0, hold=True)
    assert batch.held
    return ring, batch


def mixed_records(seed: int, total: int) -> list[bytes]:
    """About ``total`` framed bytes of inline and out-of-line records."""
    rng = random.Random(seed)
    records: list[bytes] = []
    while sum(len(r) + 1 for r in records) < total:
        records.append(text(rng, rng.choice([0, 1, 50, 111, 112, 700, 3000, 9000])))
    return records


@pytest.mark.parametrize("hold", [True, False])
def test_write_to_a_bad_descriptor_raises(hold, scratch):
    records = mixed_records(1, 20_000)
    ring = RingBuffer(64, max_record_size=1 << 16)
    ring.put_many(records)
    batch = ring.get_batch(len(records), timeout=0, hold=hold)
    assert batch.held is hold
    fd = os.open(scratch / "closed", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(OSError) as info:
        batch.write_to(fd)
    assert info.value.errno == errno.EBADF
    read_only = os.open(scratch / "closed", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as info:
            batch.write_to(read_only)
        assert info.value.errno == errno.EBADF
        with pytest.raises(OSError) as info:
            batch.write_to(read_only, keep_gil=True)
        assert info.value.errno == errno.EBADF
    finally:
        os.close(read_only)
    assert (scratch / "closed").read_bytes() == b""
    assert batch.held is hold, "a failed write_to detached the batch"
    assert write_through_file(batch, scratch / "ok") == (len(framed(records)), framed(records))


def test_write_to_a_pipe_without_reader_raises_broken_pipe():
    records = mixed_records(2, 10_000)
    _ring, batch = held_batch_of(records)
    r, w = os.pipe()
    os.close(r)
    try:
        with pytest.raises(BrokenPipeError) as info:
            batch.write_to(w)
        assert info.value.errno == errno.EPIPE
    finally:
        os.close(w)
    assert batch.held
    assert bytes(batch) == framed(records)


def small_nonblocking_pipe() -> tuple[int, int]:
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    assert fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) == 4096
    os.set_blocking(w, False)
    return r, w


@pytest.mark.parametrize("hold", [True, False])
def test_write_to_a_full_nonblocking_pipe_raises_blocking_io_error(hold):
    records = mixed_records(3, 10_000)
    ring = RingBuffer(64, max_record_size=1 << 16)
    ring.put_many(records)
    batch = ring.get_batch(len(records), timeout=0, hold=hold)
    r, w = small_nonblocking_pipe()
    try:
        while True:  # fill it
            try:
                os.write(w, b"f" * 4096)
            except BlockingIOError:
                break
        with pytest.raises(BlockingIOError) as info:
            batch.write_to(w)
        assert info.value.errno == errno.EAGAIN
        assert set(drain_nonblocking(r)) == {ord("f")}
    finally:
        os.close(r)
        os.close(w)
    assert batch.held is hold
    assert list(batch) == records


@pytest.mark.parametrize("hold", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_a_short_write_returns_the_count(hold, seed):
    """A batch larger than a non-blocking pipe can take: write_to writes what
    fits, then stops at EAGAIN and returns the short count (no exception);
    what the pipe got is exactly that many first bytes of the framed batch."""
    records = mixed_records(10 + seed, 30_000)
    ring = RingBuffer(256, max_record_size=1 << 16)
    ring.put_many(records)
    batch = ring.get_batch(len(records), timeout=0, hold=hold)
    assert batch.held is hold
    want = framed(records)
    r, w = small_nonblocking_pipe()
    try:
        if seed % 2:  # start part way into the pipe, so that the cut falls elsewhere
            os.write(w, b"-" * (1000 + 777 * seed))
            assert drain_nonblocking(r) == b"-" * (1000 + 777 * seed)
        count = batch.write_to(w)
        got = drain_nonblocking(r)
    finally:
        os.close(r)
        os.close(w)
    assert 0 < count < batch.nbytes
    assert len(got) == count
    assert got == want[:count]
    assert batch.held is hold
    assert bytes(batch) == want


@pytest.mark.timeout(60, method="thread")
def test_a_broken_pipe_after_progress_returns_the_short_count():
    """The reader goes away while write_to is blocked part way: no exception,
    the count of bytes that went in, and what was read is a prefix of it."""
    records = mixed_records(21, 60_000)
    _ring, batch = held_batch_of(records, capacity=256)
    want = framed(records)
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    got: list[bytes] = []

    def read_some_then_close() -> None:
        total = 0
        while total < 8192:
            chunk = os.read(r, 4096)
            got.append(chunk)
            total += len(chunk)
        os.close(r)

    reader = start_daemon(read_some_then_close)
    try:
        count = batch.write_to(w)
    finally:
        join_all([reader], 20)
        os.close(w)
    data = b"".join(got)
    assert len(data) <= count < len(want)
    assert data == want[: len(data)]
    assert batch.held and bytes(batch) == want


@pytest.mark.timeout(60, method="thread")
@pytest.mark.parametrize("action", ["release", "detach", "bytes", "shutdown", "del"])
def test_letting_go_while_write_to_runs_in_another_thread(action):
    """write_to blocked in a full pipe in one thread, the batch let go (or
    read, or its ring shut down) in another: that either raises BufferError
    or waits its turn, and either way what write_to writes is exactly the
    batch, though producers reuse every slot they can meanwhile."""
    records = [b"A" * 300_000, b"B" * 70, b"C" * 300_000]  # out of line (mmap-sized) and inline
    ring = RingBuffer(8, max_record_size=1 << 20)
    ring.put_many(records)
    batch = ring.get_batch(3, timeout=0, hold=True)
    assert batch.held
    r, w = os.pipe()
    result: dict = {}

    def write() -> None:
        try:
            result["count"] = batch.write_to(w)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    writer = start_daemon(write)
    time.sleep(0.1)  # the pipe is full: the writer waits in writev
    try:
        if action == "release":
            batch.release()
        elif action == "detach":
            batch.detach()
        elif action == "bytes":
            bytes(batch)
        elif action == "shutdown":
            ring.shutdown(immediate=True)
        else:
            del batch
            gc.collect()
    except BufferError:
        pass
    if not ring.closed:
        ring.put_many([b"Z" * 300_000, b"Y" * 70, b"X" * 300_000] * 3, block=False)
    got: list[bytes] = []
    reader = start_daemon(read_until_eof, r, got)
    join_all([writer], 20)
    os.close(w)
    join_all([reader], 20)
    os.close(r)
    assert result == {"count": len(framed(records))}
    assert got[0] == framed(records)


def test_a_signal_while_a_hold_getter_waits():
    """A signal handler that raises while a hold=True getter waits: the
    records it took are on the exception, copied (it was waiting), and
    their slots are free."""
    import signal

    class Interrupt(Exception):
        pass

    def handler(signum, frame):
        raise Interrupt

    ring = RingBuffer(4)
    records = [b"a", b"b" * 300, b"", b"d"]
    ring.put_many(records)
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupt) as info:
            ring.get_batch(10, timeout=5, hold=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    batch = info.value.logpipe_batch
    assert list(batch) == records and batch.held is False
    assert ring.put_many([b"x"] * 5, block=False) == 4


# --- 6. many threads -----------------------------------------------------------------


PRODUCERS = 4
CONSUMERS = 4
PER_PRODUCER = 10_000


def produce(ring: RingBuffer, pid: int, errors: list) -> None:
    rng = random.Random(pid)
    seq = 0
    try:
        while seq < PER_PRODUCER:
            k = min(rng.randint(1, 16), PER_PRODUCER - seq)
            chunk = [tagged(pid, s, rng) for s in range(seq, seq + k)]
            assert ring.put_many(chunk) == k
            seq += k
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)
        ring.close()


def run_producers_and_consumers(ring: RingBuffer, consume, errors: list) -> None:
    """PRODUCERS threads running produce() and CONSUMERS threads running
    ``consume(i)``; the ring is closed once the producers are done; every
    thread is joined within its timeout."""
    consumers = [start_daemon(consume, i) for i in range(CONSUMERS)]
    producers = [start_daemon(produce, ring, i, errors) for i in range(PRODUCERS)]
    join_all(producers, 60)
    ring.close()
    join_all(consumers, 60)
    assert not errors, errors


def check_streams(streams: list[list[bytes]], complete: bool) -> None:
    """Each consumer's stream keeps each producer's order; over all streams no
    record twice; if ``complete``, every record produced once."""
    for stream in streams:
        last = [-1] * PRODUCERS
        for record in stream:
            pid, seq = tag_of(record)
            assert seq > last[pid], f"producer {pid}: {seq} after {last[pid]} in one stream"
            last[pid] = seq
    seen = sorted(tag_of(r) for stream in streams for r in stream)
    assert len(seen) == len(set(seen)), "a record delivered twice"
    if complete:
        assert seen == [(p, s) for p in range(PRODUCERS) for s in range(PER_PRODUCER)]


def expected_record(pid: int, seq: int) -> bytes:
    """What producer ``pid`` put as its record ``seq`` (replaying its random sizes)."""
    return _produced()[pid][seq]


@functools.lru_cache(maxsize=1)
def _produced() -> list[list[bytes]]:
    out = []
    for pid in range(PRODUCERS):
        rng = random.Random(pid)
        records: list[bytes] = []
        seq = 0
        while seq < PER_PRODUCER:
            k = min(rng.randint(1, 16), PER_PRODUCER - seq)
            records.extend(tagged(pid, s, rng) for s in range(seq, seq + k))
            seq += k
        out.append(records)
    return out


@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("capacity", [64, 1500])
def test_threads_write_held_batches(capacity, scratch):
    """4 producers, 4 consumers taking held batches (half the calls wait up
    to 50 ms, half take what is there) and writing each with write_to into
    their own file: every record arrives once, intact, in its producer's
    order within each file."""
    ring = RingBuffer(capacity, max_record_size=1 << 16)
    errors: list = []
    held_counts = [0] * CONSUMERS

    def consume(cid: int) -> None:
        rng = random.Random(100 + cid)
        fd = os.open(scratch / f"c{cid}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            while True:
                timeout = 0.05 if rng.random() < 0.5 else 0
                try:
                    batch = ring.get_batch(rng.randint(1, 48), timeout=timeout, hold=True)
                except Closed:
                    return
                if not batch:
                    if timeout == 0:
                        time.sleep(0.0005)
                    continue
                if timeout == 0:
                    assert batch.held, "a batch taken without waiting is not held"
                held_counts[cid] += batch.held
                nbytes = batch.nbytes
                assert batch.write_to(fd) == nbytes
                batch.release()
                assert len(batch) == 0
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            os.close(fd)

    run_producers_and_consumers(ring, consume, errors)
    streams = []
    for cid in range(CONSUMERS):
        data = (scratch / f"c{cid}").read_bytes()
        assert data == b"" or data.endswith(b"\n")
        streams.append(data.split(b"\n")[:-1])
    check_streams(streams, complete=True)
    for stream in streams:
        for record in stream:
            assert record == expected_record(*tag_of(record))
    assert sum(held_counts) > 0
    assert ring.pushed == PRODUCERS * PER_PRODUCER
    assert (len(ring), ring.nbytes) == (0, 0)


@pytest.mark.timeout(120, method="thread")
@pytest.mark.parametrize("capacity", [64, 1500])
def test_threads_detach_release_unread_and_drop(capacity, scratch):
    """The same, each batch let go another way (and a fifth of them copied,
    hold=False, on the same ring): written then released,
    detached then written from its buffer, released unread, or dropped
    unread. Positions account for every record exactly once; those read are
    intact, in order, never twice."""
    ring = RingBuffer(capacity, max_record_size=1 << 16)
    errors: list = []
    streams: list[list[bytes]] = [[] for _ in range(CONSUMERS)]
    positions: list[list[tuple[int, int]]] = [[] for _ in range(CONSUMERS)]
    unread = [0] * CONSUMERS

    def consume(cid: int) -> None:
        rng = random.Random(200 + cid)
        path = scratch / f"d{cid}"
        try:
            while True:
                hold = rng.random() < 0.8  # a few copied batches among the held ones
                try:
                    batch = ring.get_batch(rng.randint(1, 40), timeout=rng.choice((0, 0.05)), hold=hold)
                except Closed:
                    return
                if not hold:
                    assert not batch.held
                if not batch:
                    time.sleep(0.0005)
                    continue
                positions[cid].extend(batch.positions)
                how = rng.random()
                if how < 0.4:
                    count, data = write_through_file(batch, path)
                    assert count == len(data) == batch.nbytes
                    batch.release()
                elif how < 0.7:
                    batch.detach()
                    assert not batch.held
                    with memoryview(batch) as view:
                        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                        try:
                            assert os.write(fd, view) == len(view)
                        finally:
                            os.close(fd)
                    data = path.read_bytes()
                    assert list(batch) == data.split(b"\n")[:-1]
                    batch.release()
                elif how < 0.85:
                    unread[cid] += len(batch)
                    batch.release()
                    continue
                else:
                    unread[cid] += len(batch)
                    del batch
                    continue
                streams[cid].extend(data.split(b"\n")[:-1])
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    run_producers_and_consumers(ring, consume, errors)
    total = PRODUCERS * PER_PRODUCER
    taken = sorted(p for runs in positions for start, n in runs for p in range(start, start + n))
    assert taken == list(range(total)), "positions: a record taken twice or never"
    check_streams(streams, complete=False)
    for stream in streams:
        for record in stream:
            assert record == expected_record(*tag_of(record))
    assert sum(len(s) for s in streams) + sum(unread) == total
    assert (ring.pushed, len(ring), ring.nbytes) == (total, 0, 0)


# --- 7. a getter that waits does not pin the ring -------------------------------------


def put_later(ring: RingBuffer, records: list[bytes]):
    """A thread that puts ``records`` 50 ms from now (join it with join_all)."""

    def add_later() -> None:
        time.sleep(0.05)
        ring.put_many(records)

    return start_daemon(add_later)


def test_a_waiting_hold_getter_copies_first(scratch):
    """hold=True, more asked than is there, a producer adding records 50 ms
    later: the batch has everything (what was there and what came) and is
    not held, since it waited."""
    rng = random.Random(7)
    first = [text(rng, n) for n in (0, 40, 111, 112, 3000)]
    later = [text(rng, n) for n in (5, 20_000, 111, 1)]
    ring = RingBuffer(64, max_record_size=1 << 16)
    ring.put_many(first)
    producer = put_later(ring, later)
    batch = ring.get_batch(20, timeout=0.2, hold=True)
    join_all([producer], 10)
    records = list(batch) + list(ring.get_batch(20, timeout=0))  # the producer may have been late
    assert records == first + later
    assert len(batch) >= len(first)
    assert batch.held is False
    assert write_through_file(batch, scratch / "w") == (batch.nbytes, framed(list(batch)))


def test_a_hold_getter_that_waits_on_an_empty_ring_is_not_held():
    ring = RingBuffer(16)
    records = [b"a", b"b" * 300, b"c"]
    producer = put_later(ring, records)
    batch = ring.get_batch(3, timeout=5, hold=True)
    join_all([producer], 10)
    assert list(batch) == records
    assert batch.held is False


def test_a_hold_getter_stopped_while_waiting_returns_a_copied_batch():
    ring = RingBuffer(8)
    ring.put_many([b"a", b"b" * 500])
    stop = StopSignal(ring)

    def stop_later() -> None:
        time.sleep(0.05)
        stop.set()

    stopper = start_daemon(stop_later)
    batch = ring.get_batch(5, timeout=5, stop=stop, hold=True)
    join_all([stopper], 10)
    assert list(batch) == [b"a", b"b" * 500]
    assert batch.held is False
    assert ring.put_many([b"x"] * 9, block=False) == 8


@pytest.mark.timeout(60, method="thread")
def test_a_waiting_hold_getter_leaves_the_ring_free():
    """A full ring of 4, a hold=True getter asking for 6: while it waits for
    the last 2, the 4 it took must not pin their slots, or the producer
    could not put the records it waits for."""
    ring = RingBuffer(4)
    first = [b"f%d" % i for i in range(4)]
    later = [b"l%d" % i for i in range(4)]
    ring.put_many(first)
    put_counts: list[int] = []

    def add_later() -> None:
        time.sleep(0.05)
        put_counts.append(ring.put_many(later, timeout=3))

    producer = start_daemon(add_later)
    started = time.monotonic()
    batch = ring.get_batch(6, timeout=3, hold=True)
    waited = time.monotonic() - started
    join_all([producer], 10)
    assert put_counts == [4], f"the producer could put {put_counts} of 4 records"
    assert list(batch) == first + later[:2], f"after {waited:.2f}s"
    assert batch.held is False
    assert list(ring.get_batch(4, timeout=0)) == later[2:]


# --- 8. close, shutdown, the ring let go ---------------------------------------------


def close_records() -> list[bytes]:
    rng = random.Random(8)
    return [text(rng, n) for n in (0, 1, 15, 16, 17, 100, 5000, 30_000, 2, 47)]


def test_a_held_batch_outlives_close(scratch):
    records = close_records()
    ring = RingBuffer(16, slot_size=32, max_record_size=1 << 16)
    ring.put_many(records)
    batch = ring.get_batch(6, timeout=0, hold=True)
    assert batch.held
    ring.close()
    assert list(ring.get_batch(10, timeout=0)) == records[6:]
    with pytest.raises(Closed):
        ring.get_batch(1, timeout=0, hold=True)
    with pytest.raises(Closed):
        ring.get_batch(1, hold=True)
    want = framed(records[:6])
    assert write_through_file(batch, scratch / "c") == (len(want), want)
    assert bytes(batch) == want and list(batch) == records[:6]
    batch.release()
    check_empty(batch)
    assert ring.nbytes == 0


@pytest.mark.timeout(60, method="thread")
def test_a_held_batch_outlives_an_immediate_shutdown(scratch):
    """shutdown(immediate=True) discards only what is still in the ring (it
    does not wait for held slots); the held batch still reads right."""
    records = close_records()
    ring = RingBuffer(16, slot_size=32, max_record_size=1 << 16)
    ring.put_many(records)
    batch = ring.get_batch(6, timeout=0, hold=True)
    other = ring.get_batch(2, timeout=0, hold=True)
    assert batch.held and other.held
    shutter = start_daemon(ring.shutdown, True)
    join_all([shutter], 10)
    assert ring.discarded == 2 and len(ring) == 0
    with pytest.raises(Closed):
        ring.get_batch(1, timeout=0, hold=True)
    want = framed(records[:6])
    assert write_through_file(batch, scratch / "s") == (len(want), want)
    assert list(other) == records[6:8]
    assert bytes(batch) == want
    ring.shutdown(immediate=True)  # again: nothing left to discard
    assert ring.discarded == 2
    batch.release()
    other.release()
    assert ring.nbytes == 0


@pytest.mark.parametrize("shutdown", [False, True])
def test_a_held_batch_outlives_its_ring(shutdown, scratch):
    """The ring object let go (and its memory reused) while a held batch is
    alive: the batch still reads and writes right, and releases cleanly."""
    records = close_records()
    ring = RingBuffer(16, slot_size=32, max_record_size=1 << 16)
    ring.put_many(records)
    batch = ring.get_batch(8, timeout=0, hold=True)
    assert batch.held
    if shutdown:
        ring.shutdown(immediate=True)
    del ring
    gc.collect()
    churn = []
    for i in range(20):  # new rings of the same shape, full of other bytes
        other = RingBuffer(16, slot_size=32, max_record_size=1 << 16)
        other.put_many([b"\xee" * (i + n) for n in range(16)])
        churn.append(other)
    want = framed(records[:8])
    assert write_through_file(batch, scratch / "r") == (len(want), want)
    assert write_through_pipe(batch) == (len(want), want)
    assert bytes(batch) == want
    batch.release()
    check_empty(batch)
    del churn


def test_held_slots_sit_out_of_a_shutdown_then_rejoin():
    """After an immediate shutdown, releasing a held batch leaves the ring
    consistent: closed, empty, nothing in the budget."""
    ring = RingBuffer(4, max_record_size=1 << 16)
    ring.put_many([b"a", b"b" * 500, b"c"])
    batch = ring.get_batch(2, timeout=0, hold=True)
    ring.shutdown(immediate=True)
    assert ring.discarded == 1
    batch.release()
    assert (len(ring), ring.nbytes) == (0, 0)
    with pytest.raises(Closed):
        ring.put(b"x")
    with pytest.raises(Closed):
        ring.get_batch(4, timeout=0, hold=True)


# --- what a held batch owns is freed once, whichever way it goes ------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("let_go", ["release", "detach", "collect", "write_to", "bytes", "with", "shutdown"])
def test_out_of_line_records_of_held_batches_are_freed(let_go):
    """Out-of-line records taken in held batches are freed whichever way the
    batch goes (about 100 MB pass through; a leak shows in the RSS), and
    freed once (a double free aborts)."""
    record = b"L" * 20_000
    devnull = os.open(os.devnull, os.O_WRONLY)
    ring = RingBuffer(64, max_record_size=1 << 16)

    def lap() -> None:
        nonlocal ring
        assert ring.put_many([record] * 32) == 32
        batch = ring.get_batch(32, timeout=0, hold=True)
        assert batch.held
        if let_go == "release":
            batch.release()
        elif let_go == "detach":
            batch.detach()
            assert batch[31] == record
            batch.release()
        elif let_go == "collect":
            del batch
        elif let_go == "write_to":
            assert batch.write_to(devnull) == 32 * 20_001
            batch.release()
        elif let_go == "bytes":
            assert len(bytes(batch)) == 32 * 20_001
        elif let_go == "with":
            with batch:
                pass
        else:
            ring.put_many([record] * 8)
            ring.shutdown(immediate=True)
            batch.release()
            ring = RingBuffer(64, max_record_size=1 << 16)

    try:
        for _ in range(20):  # warm up: the allocator's arenas reach their size
            lap()
        gc.collect()
        before = rss_bytes()
        for _ in range(160):
            lap()
        gc.collect()
        grown = rss_bytes() - before
    finally:
        os.close(devnull)
    assert grown < 30 << 20, f"RSS grew {grown >> 20} MB over 160 laps of 640 KB held"


def test_a_capacity_one_ring_copies_instead_of_holding():
    """Capacity 1 keeps two slots and bounds its occupancy by position: a
    held record would let a second one in beside it, so hold=True copies
    there, and the ring still takes exactly one record at a time."""
    ring = RingBuffer(1)
    for lap in range(5):
        record = b"lap %d" % lap + b"x" * (200 * lap)  # inline, then out of line
        assert ring.put_many([record], block=False) == 1
        assert ring.put_many([b"over"], block=False) == 0
        batch = ring.get_batch(1, timeout=0, hold=True)
        assert batch.held is False and list(batch) == [record]
        assert ring.fits(1)
        assert ring.put_many([b"one", b"two"], block=False) == 1
        assert ring.get_batch(1, timeout=0, hold=True).tobytes() == b"one\n"
        batch.release()
    assert len(ring) == 0 and ring.nbytes == 0
