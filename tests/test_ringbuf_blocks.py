"""How get_batch finds and copies the packed blocks of the ring.

A batch takes records in runs ("blocks") of bytes that lie one after the
other in the ring: the records of one claim, packed at the end of the claim's
shares, or one out-of-line record's pointer alone. It tells where one block
ends and the next begins from the slots' offsets as it peeks at them, before
its claim (the _ringbuf module docstring, "Batches"). These tests build the
layouts where that is easy to get wrong, one thread, deterministically, and
then check every byte and every framing offset; the last ones do the same
with many threads and mixed sizes, and check the batches' ages.
"""

from __future__ import annotations

import random
import time

import pytest

from _support import join_all, start_daemon

from logpipe import Closed, Empty, Full, RingBuffer

SLOT = 32
SHARE = SLOT - 16         # record bytes per position
INLINE_MAX = SHARE - 1    # 15: a record this long and its newline fill a share


def record(tag: int, length: int) -> bytes:
    """``length`` bytes made from ``tag``: its number, then a letter of its own."""
    return (b"%d:" % tag + bytes([65 + tag % 26]) * length)[:length]


def framed_records(batch) -> list[bytes]:
    """The batch's records, once its bytes are checked to be exactly them, framed."""
    records = list(batch)
    assert bytes(batch) == b"".join(r + b"\n" for r in records), "batch bytes do not match its records"
    return records


def check_batch(batch, expected: list[bytes]) -> None:
    """The batch holds exactly ``expected``, framed: bytes and records agree."""
    assert framed_records(batch) == expected
    assert batch.nbytes == sum(len(r) + 1 for r in expected)


def test_out_of_line_claim_end_then_a_claim_of_pointers():
    """A claim whose last record is out of line ends with its pointer at the
    end of its share; the next claim's pointers may start at the very offset
    that pointer's "end" would give. They are separate blocks all the same
    (an out-of-line record is a block of its own)."""
    ring = RingBuffer(8, slot_size=SLOT, max_record_size=4096)
    # Claim A: one out-of-line record, its pointer at offset 8 of share 0.
    # Claim B: three out-of-line records, 24 bytes of pointers packed into the
    # 48 bytes of shares 1-3, so the first one is at offset 24 of share 1,
    # which is where a 31-byte record at offset 8 of share 0 would "end"
    # (8 + 31 + 1 - 16) if its bytes were packed.
    a = [record(0, 31)]
    b = [record(1, 56), record(2, 28), record(3, 53)]
    assert ring.put_many(a) == 1
    assert ring.put_many(b) == 3
    check_batch(ring.get_batch(4, timeout=0), a + b)
    assert ring.nbytes == 0


def test_packed_claims_meet_at_a_share_boundary():
    """A claim that fills its shares exactly starts where the claim before it
    ended: the bytes are contiguous in the ring, and copying them as one run
    or two must give the same batch."""
    ring = RingBuffer(8, slot_size=SLOT)
    a = [record(0, INLINE_MAX), record(1, INLINE_MAX)]
    b = [record(2, INLINE_MAX), record(3, 5), record(4, 9)]
    assert ring.put_many(a) == 2
    assert ring.put_many(b) == 3
    check_batch(ring.get_batch(5, timeout=0), a + b)


@pytest.mark.parametrize("length", [1, 7, INLINE_MAX])
def test_claims_on_both_sides_of_the_wrap(length):
    """A claim that ends at the last slot and one that starts at slot 0 are
    two blocks, however their offsets line up (records of INLINE_MAX bytes
    fill their shares exactly: the block at slot 0 then starts at offset 0,
    which is where the last slot's block "ends")."""
    ring = RingBuffer(4, slot_size=SLOT)
    first = [record(i, length) for i in range(2)]
    assert ring.put_many(first) == 2
    check_batch(ring.get_batch(2, timeout=0), first)        # head at slot 2
    end = [record(2, length), record(3, length)]             # slots 2, 3
    start = [record(4, length), record(5, length)]           # slots 0, 1
    assert ring.put_many(end) == 2
    assert ring.put_many(start) == 2
    check_batch(ring.get_batch(4, timeout=0), end + start)
    assert ring.nbytes == 0


def test_one_put_with_more_than_reaches_the_last_slot():
    """put_many that reaches the last slot goes on with a second claim from
    slot 0; a batch taken across it gets both, in order."""
    ring = RingBuffer(6, slot_size=SLOT, max_record_size=4096)
    assert ring.put_many([record(0, 3)] * 4) == 4
    check_batch(ring.get_batch(4, timeout=0), [record(0, 3)] * 4)
    records = [record(i, n) for i, n in enumerate([15, 40, 2, 15, 100, 9])]
    assert ring.put_many(records) == 6
    check_batch(ring.get_batch(6, timeout=0), records)


@pytest.mark.parametrize("slot_size, capacity", [(32, 1), (32, 2), (32, 7), (48, 16), (128, 64)])
def test_random_layouts_match_a_fifo(slot_size, capacity):
    """Random puts (one by one and in claims of any size, records inline, on
    the inline limit, out of line) and random gets of every kind, on small
    rings so that claims meet the wrap often: what comes out is what went in,
    in order, and each batch's bytes are its records, framed."""
    rng = random.Random(slot_size * 1000 + capacity)
    inline_max = slot_size - 17
    ring = RingBuffer(capacity, slot_size=slot_size, max_record_size=1 << 16)
    sizes = [0, 1, inline_max - 1, inline_max, inline_max + 1, 3, 9, 60, 300, 5000]
    queue: list[bytes] = []
    tag = 0
    for _ in range(3000):
        if rng.random() < 0.5:
            room = capacity - len(queue)
            batch = []
            for _ in range(rng.randint(1, 2 * capacity + 1)):
                batch.append(record(tag, rng.choice(sizes)))
                tag += 1
            if rng.random() < 0.3 and room:
                ring.put(batch[0], block=False)
                queue.append(batch[0])
            else:
                taken = ring.put_many(batch, block=False)
                assert taken == min(room, len(batch))
                queue.extend(batch[:taken])
        else:
            how = rng.choice(["get", "get_many", "get_batch", "get_batch"])
            want = rng.randint(1, capacity + 2)
            if not queue:
                continue
            if how == "get":
                assert ring.get(block=False) == queue.pop(0)
            elif how == "get_many":
                got = ring.get_many(want, block=False)
                assert got == queue[:len(got)] and len(got) == min(want, len(queue))
                del queue[:len(got)]
            else:
                batch = ring.get_batch(want, timeout=0)
                n = min(want, len(queue))
                check_batch(batch, queue[:n])
                del queue[:n]
        assert len(ring) == len(queue)
        assert ring.nbytes == sum(len(r) for r in queue)


@pytest.mark.timeout(120)
def test_many_threads_mixed_sizes_bytes_and_ages():
    """Producers put claims of mixed sizes (inline, on the limit, out of line)
    in bursts tens of milliseconds apart, each record naming its chunk;
    consumers take batches of every size, now and then after a pause.
    Every batch's bytes are its records, and its oldest_enqueue lies between
    the earliest time one of its records was offered and the earliest time
    one of them had been taken in (with the coarse clock's tick either side):
    a stamp read from the wrong slot, from a slot's earlier lap, or not at
    all, falls outside."""
    ring = RingBuffer(16, slot_size=SLOT, max_record_size=1 << 12)
    errors: list = []
    offered: dict[tuple[int, int], float] = {}
    put_in: dict[tuple[int, int], float] = {}
    batches: list[tuple[float, list[bytes]]] = []
    tick = 0.025                # the coarse clock's tick (4-10 ms) and the ms truncation, with room

    def produce(pid: int) -> None:
        rng = random.Random(pid)
        chunk_id = 0
        try:
            for burst in range(30):
                for _ in range(rng.randint(1, 6)):
                    key = (pid, chunk_id)
                    chunk = [b"%d:%d:" % key + b"x" * rng.choice([0, 3, 10, 20, 40, 200])
                             for _ in range(rng.randint(1, 12))]
                    offered[key] = time.monotonic()
                    assert ring.put_many(chunk) == len(chunk)
                    put_in[key] = time.monotonic()
                    chunk_id += 1
                time.sleep(0.02 + 0.01 * (burst % 3))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def consume(cid: int) -> None:
        rng = random.Random(100 + cid)
        try:
            while True:
                if rng.random() < 0.1:
                    time.sleep(0.06)    # records wait in the ring: their age grows
                try:
                    batch = ring.get_batch(rng.randint(1, 20), timeout=0.01)
                except Closed:
                    return
                records = framed_records(batch)
                if records:
                    batches.append((batch.oldest_enqueue, records))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    consumers = [start_daemon(consume, i) for i in range(3)]
    producers = [start_daemon(produce, i) for i in range(4)]
    join_all(producers)
    ring.close()
    join_all(consumers)
    assert not errors, errors
    for oldest, records in batches:
        keys = [tuple(int(x) for x in r.split(b":")[:2]) for r in records]
        earliest_offered = min(offered[k] for k in keys)
        earliest_in = min(put_in[k] for k in keys)
        assert earliest_offered - tick <= oldest <= earliest_in + tick, (
            f"oldest_enqueue {oldest:.4f}: its records were offered from "
            f"{earliest_offered:.4f}, in from {earliest_in:.4f}")
    assert sum(len(records) for _, records in batches) == ring.pushed == ring.popped
    assert ring.nbytes == 0


def test_threads_share_one_ring_across_many_laps():
    """Two producers, two consumers, a ring of 7 with 32-byte slots: claims
    are cut at the wrap and batches begin mid-claim all the time. Nothing
    is lost or duplicated and every batch is framed right."""
    ring = RingBuffer(7, slot_size=SLOT, max_record_size=1 << 12)
    per_producer = 20_000
    errors: list = []
    got: list[list[bytes]] = [[], []]

    def produce(pid: int) -> None:
        rng = random.Random(pid)
        seq = 0
        try:
            while seq < per_producer:
                k = min(rng.randint(1, 9), per_producer - seq)
                ring.put_many([b"%d:%d:" % (pid, i) + b"y" * rng.choice([0, 5, 15, 30])
                               for i in range(seq, seq + k)])
                seq += k
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def consume(cid: int) -> None:
        rng = random.Random(10 + cid)
        try:
            while True:
                try:
                    batch = ring.get_batch(rng.randint(1, 9), timeout=0.01)
                except Closed:
                    return
                records = framed_records(batch)
                got[cid].extend(records)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [start_daemon(consume, i) for i in range(2)]
    producers = [start_daemon(produce, i) for i in range(2)]
    join_all(producers)
    ring.close()
    join_all(threads)
    assert not errors, errors
    for cid in range(2):
        last = [-1, -1]
        for r in got[cid]:
            pid, seq = (int(x) for x in r.split(b":")[:2])
            assert seq > last[pid]
            last[pid] = seq
    seen = sorted(tuple(int(x) for x in r.split(b":")[:2]) for r in got[0] + got[1])
    assert seen == [(p, s) for p in range(2) for s in range(per_producer)]


@pytest.mark.parametrize("slot_size", [32, 128, 512])
def test_every_length_round_trips(slot_size):
    """Every record length from 0 to 649 bytes (each copy routine's steps and
    edges, inline and out of line) comes back intact from get, get_many and
    get_batch, put one by one or in claims."""
    ring = RingBuffer(64, slot_size=slot_size)
    records = [bytes((i * 7 + n) % 251 for i in range(n)) for n in range(650)]
    for start in range(0, len(records), 50):
        chunk = records[start:start + 50]
        assert ring.put_many(chunk) == len(chunk)
        got = ring.get_many(20) + [ring.get() for _ in range(10)]
        batch = ring.get_batch(20, timeout=0)
        assert got + list(batch) == chunk
        check_batch(batch, chunk[30:])
        for record in chunk:
            ring.put(record)
        check_batch(ring.get_batch(50, timeout=0), chunk)
    assert ring.nbytes == 0


def test_a_batch_let_go_lends_its_memory_to_the_next():
    """get_batch reuses the memory of the last batch let go (one spare for
    the module): a batch still referenced, or viewed, keeps its bytes, the
    next batch gets its own, and a batch too large to keep is freed."""
    ring = RingBuffer(4096, max_record_size=1 << 16)
    xs = [b"x%d" % i for i in range(50)]
    ys = [b"y%d" % i for i in range(50)]
    ring.put_many(xs + ys)
    first = ring.get_batch(50, timeout=0)
    view = memoryview(first)
    del first                   # the view keeps it alive: its memory is not lent
    second = ring.get_batch(50, timeout=0)
    assert bytes(view) == b"".join(r + b"\n" for r in xs)
    check_batch(second, ys)
    view.release()
    del second                  # now lent to the next batch
    big = [b"z" * 60_000] * 40  # 2.4 MB: too large to keep
    for _ in range(3):
        ring.put_many(xs)
        check_batch(ring.get_batch(50, timeout=0), xs)
        ring.put_many(big)
        check_batch(ring.get_batch(40, timeout=0), big)
    kept = []
    for i in range(20):         # several alive at once, then let go in any order
        ring.put_many(xs[:i + 1])
        kept.append((ring.get_batch(i + 1, timeout=0), xs[:i + 1]))
    for batch, records in kept[::3] + kept[1::3] + kept[2::3]:
        check_batch(batch, records)
    del kept, batch
    ring.put_many(ys)
    check_batch(ring.get_batch(50, timeout=0), ys)


@pytest.mark.parametrize("timeout", [-1, -0.5, float("nan"), "soon"])
def test_get_batch_checks_its_timeout_even_when_the_batch_is_all_there(timeout):
    """get_batch works out its deadline only when it has to wait, but a bad
    timeout is refused before anything is taken, as when it waits."""
    ring = RingBuffer(8)
    ring.put_many([b"a", b"b"])
    with pytest.raises((ValueError, TypeError)):
        ring.get_batch(2, timeout=timeout)
    assert len(ring) == 2
    check_batch(ring.get_batch(2, timeout=0), [b"a", b"b"])


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, False, 2**70, 0.05])
def test_get_batch_timeouts_of_any_number_type(timeout):
    """Ints (of any size), floats and bools are timeouts; 0 takes what is there."""
    import decimal
    ring = RingBuffer(8)
    ring.put_many([b"a"])
    check_batch(ring.get_batch(2 if timeout in (0, 0.05) else 1, timeout=timeout), [b"a"])
    start = time.monotonic()
    assert len(ring.get_batch(1, timeout=decimal.Decimal("0.02"))) == 0
    assert time.monotonic() - start >= 0.015


def test_records_taken_are_ordinary_bytes():
    """get and get_many make their bytes objects themselves (at the length
    peeked, filled after the claim): they hash, compare and behave as any
    other bytes, empty ones included."""
    ring = RingBuffer(16)
    records = [b"", b"a", b"hello", b"x" * 100, b"y" * 1000]
    for take in (lambda: ring.get_many(5), lambda: [ring.get() for _ in range(5)]):
        ring.put_many(records)
        got = take()
        assert got == records
        assert [hash(r) for r in got] == [hash(bytes(bytearray(r))) for r in records]
        assert {r: i for i, r in enumerate(got)} == {r: i for i, r in enumerate(records)}
        assert all(type(r) is bytes and r.decode() == o.decode() for r, o in zip(got, records))


class Truthy:
    def __init__(self, value):
        self.value = value

    def __bool__(self):
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def put_one(rb, block):
    rb.put(b"x", block)


def put_two(rb, block):
    if rb.put_many([b"x", b"y"], block) == 0:
        raise Full


def get_one(rb, block):
    rb.get(block)


def get_two(rb, block):
    rb.get_many(2, block)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("call", [put_one, put_two, get_one, get_two])
def test_block_is_taken_by_its_truth_value(call):
    """put, put_many, get and get_many read ``block`` as a truth value, as
    queue.Queue does: 0, "", [] and objects whose __bool__ says False do not
    wait (with no timeout, waiting would hang the test), and a __bool__ that
    raises propagates before anything is taken."""
    putting = call in (put_one, put_two)
    rb = RingBuffer(1)
    if putting:
        rb.put(b"full")
    for falsy in (0, "", [], Truthy(False)):
        with pytest.raises(Full if putting else Empty):
            call(rb, falsy)
    with pytest.raises(ZeroDivisionError):
        call(rb, Truthy(ZeroDivisionError()))
    assert len(rb) == (1 if putting else 0)
