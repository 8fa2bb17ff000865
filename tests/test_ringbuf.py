"""Unit tests for logpipe.RingBuffer, Batch and StopSignal.

The contract is docs/ringbuffer.md and src/logpipe/_ringbuf.pyi. Timed tests
check that a timeout is honoured (elapsed >= timeout, minus a small clock
tolerance) and that the call returns; they never assert on speed beyond a
generous sanity bound.
"""

from __future__ import annotations

import array
import collections
import queue
import random
import re
import threading
import time

import pytest

from logpipe import Batch, Closed, Empty, Full, RingBuffer, StopSignal
from logpipe.exceptions import LogpipeError

KiB = 1024
MiB = 1024 * 1024
TOL = 0.02  # clock / timer slack allowed below a timeout
SANITY = 2.0  # a timed call must return within timeout + SANITY
JOIN = 10.0  # seconds a helper thread gets to finish once it should


# --------------------------------------------------------------------------
# helpers


class Call:
    """Run ``fn(*args, **kwargs)`` in a daemon thread and keep its outcome."""

    def __init__(self, fn, *args, **kwargs):
        self.result = None
        self.error: BaseException | None = None
        self.elapsed: float | None = None
        self._started = threading.Event()

        def run():
            self._started.set()
            t0 = time.monotonic()
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - kept for the test to inspect
                self.error = exc
            finally:
                self.elapsed = time.monotonic() - t0

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        self._started.wait(JOIN)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float = JOIN) -> Call:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "thread still blocked after join timeout"
        return self


def wait_until(predicate, timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.001)
    return bool(predicate())


def settle(ring: RingBuffer, counter: str, at_least: int = 1) -> None:
    """Give a helper thread time to park (watching a wait counter), then a bit more."""
    wait_until(lambda: getattr(ring, counter) >= at_least, 2.0)
    time.sleep(0.05)


def framed(records) -> bytes:
    return b"".join(bytes(r) + b"\n" for r in records)


def payload(i: int, size: int) -> bytes:
    """A record of ``size`` bytes whose content depends on ``i``."""
    unit = b"%d|" % i
    return (unit * (size // len(unit) + 1))[:size]


def fill(ring: RingBuffer, n: int, size: int = 3) -> list[bytes]:
    records = [payload(i, size) for i in range(n)]
    for r in records:
        ring.put_nowait(r)
    return records


def drain(ring: RingBuffer) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(ring.get_nowait())
        except (Empty, Closed):
            return out


# --------------------------------------------------------------------------
# construction


def test_methods_show_their_signatures():
    """help() and inspect.signature() see each public method's parameters (the methods are
    plain method descriptors, binding=False, so the signature comes from the docstring)."""
    import inspect

    expected = {
        "put": ["self", "item", "block", "timeout"],
        "get": ["self", "block", "timeout", "stop"],
        "put_many": ["self", "items", "block", "timeout"],
        "get_many": ["self", "max_items", "block", "timeout", "stop"],
        "get_batch": ["self", "max_items", "timeout", "stop", "hold"],
        "put_nowait": ["self", "item"],
        "get_nowait": ["self"],
    }
    for name, params in expected.items():
        assert list(inspect.signature(getattr(RingBuffer, name)).parameters) == params, name
    assert inspect.signature(RingBuffer.get).parameters["stop"].kind is inspect.Parameter.KEYWORD_ONLY
    assert RingBuffer.put.__doc__.startswith("Put one record")


def test_defaults_match_contract():
    """A new ring reports its capacity, the documented defaults and zero occupancy."""
    rb = RingBuffer(10)
    assert rb.capacity == 10
    assert rb.max_record_size == 1 * MiB
    assert rb.max_bytes == 64 * MiB
    assert rb.slot_size == 128
    assert len(rb) == 0
    assert rb.nbytes == 0
    assert rb.usage == 0.0
    assert rb.closed is False
    assert (rb.pushed, rb.popped, rb.put_waits, rb.get_waits) == (0, 0, 0, 0)


def test_explicit_limits_are_reported():
    """Explicit max_record_size, max_bytes and slot_size are kept as given."""
    rb = RingBuffer(3, max_record_size=100, max_bytes=250, slot_size=64)
    assert (rb.capacity, rb.max_record_size, rb.max_bytes, rb.slot_size) == (3, 100, 250, 64)


def test_default_max_bytes_follows_large_max_record_size():
    """Default max_bytes is max(64 MiB, max_record_size, capacity * inline bytes)."""
    assert RingBuffer(2, max_record_size=100).max_bytes == 64 * MiB
    assert RingBuffer(2, max_record_size=128 * MiB).max_bytes == 128 * MiB
    assert RingBuffer(1_000_000).max_bytes == 1_000_000 * (128 - 16)


def test_default_ring_full_of_inline_records_is_limited_by_count_not_bytes():
    """With default limits, a ring fills to capacity with records that fit inline."""
    rb = RingBuffer(700_000)
    record = b"x" * 112
    assert rb.put_many([record] * 700_000, block=False) == 700_000
    assert len(rb) == 700_000 and rb.usage == 1.0


@pytest.mark.parametrize("capacity", [0, -1, -1000])
def test_bad_capacity_is_value_error(capacity):
    """A capacity below 1 raises ValueError."""
    with pytest.raises(ValueError):
        RingBuffer(capacity)


@pytest.mark.parametrize("slot_size", [0, -32, 8, 24, 31, 33, 100, 65537, 65544, 131072])
def test_bad_slot_size_is_value_error(slot_size):
    """A slot_size not a multiple of 8 or outside 32..65536 raises ValueError."""
    with pytest.raises(ValueError):
        RingBuffer(4, slot_size=slot_size)


@pytest.mark.parametrize("slot_size", [32, 40, 128, 65536])
def test_good_slot_size_is_accepted(slot_size):
    """A slot_size that is a multiple of 8 within 32..65536 is accepted and usable."""
    rb = RingBuffer(2, slot_size=slot_size)
    assert rb.slot_size == slot_size
    rb.put(b"abc")
    assert rb.get() == b"abc"


@pytest.mark.parametrize("max_record_size", [-1, 2**31, 2**40])
def test_bad_max_record_size_is_value_error(max_record_size):
    """A max_record_size outside 0..2**31-1 raises ValueError."""
    with pytest.raises(ValueError):
        RingBuffer(4, max_record_size=max_record_size)


@pytest.mark.parametrize("max_record_size", [0, 2**31 - 1])
def test_extreme_max_record_size_is_accepted(max_record_size):
    """max_record_size at both ends of 0..2**31-1 is accepted."""
    rb = RingBuffer(2, max_record_size=max_record_size)
    assert rb.max_record_size == max_record_size
    assert rb.max_bytes == max(64 * MiB, max_record_size)


@pytest.mark.parametrize("max_bytes", [99, 0, -1])
def test_max_bytes_below_max_record_size_is_value_error(max_bytes):
    """max_bytes smaller than max_record_size raises ValueError."""
    with pytest.raises(ValueError):
        RingBuffer(4, max_record_size=100, max_bytes=max_bytes)


def test_max_bytes_equal_to_max_record_size_is_accepted():
    """max_bytes == max_record_size is allowed and a maximal record fits."""
    rb = RingBuffer(4, max_record_size=100, max_bytes=100)
    rb.put_nowait(b"x" * 100)
    assert rb.nbytes == 100


# --------------------------------------------------------------------------
# FIFO, wrap-around, sizes


def test_fifo_order():
    """Records come out in the order they went in."""
    rb = RingBuffer(8)
    records = [b"one", b"two", b"three", b"four"]
    for r in records:
        rb.put(r)
    assert [rb.get() for _ in records] == records


def test_get_returns_bytes_objects():
    """Every get flavour returns bytes, whatever buffer type was put."""
    rb = RingBuffer(8)
    rb.put(bytearray(b"a"))
    rb.put(memoryview(b"b"))
    rb.put(bytearray(b"c"))
    first = rb.get()
    many = rb.get_many(1)
    batch = rb.get_batch(1, timeout=0)
    assert type(first) is bytes and first == b"a"
    assert type(many[0]) is bytes and many == [b"b"]
    assert type(batch[0]) is bytes and list(batch) == [b"c"]


def test_wraparound_many_times_matches_deque():
    """Capacity 7 and 10,000 records of mixed sizes in random bursts stay FIFO and exact."""
    rng = random.Random(1234)
    rb = RingBuffer(7, slot_size=32, max_record_size=1 * KiB)
    model: collections.deque[bytes] = collections.deque()
    sizes = [0, 1, 15, 16, 17, 31, 100, 1023, 1024]
    sent = received = 0
    while received < 10_000:
        for _ in range(rng.randint(0, 9)):
            if sent >= 10_000:
                break
            rec = payload(sent, rng.choice(sizes))
            if len(model) == 7:
                with pytest.raises(Full):
                    rb.put_nowait(rec)
                break
            rb.put_nowait(rec)
            model.append(rec)
            sent += 1
        for _ in range(rng.randint(0, 9)):
            if not model:
                with pytest.raises(Empty):
                    rb.get_nowait()
                break
            assert rb.get_nowait() == model.popleft()
            received += 1
        assert len(rb) == len(model)
        assert rb.nbytes == sum(map(len, model))
    assert rb.pushed == rb.popped == 10_000


@pytest.mark.parametrize("size", [0, 1, 14, 15, 16, 17, 31, 32, 33, 100, 1023, 1024])
def test_inline_and_out_of_line_sizes_round_trip(size):
    """With slot_size=32, records on both sides of the 15-byte inline limit round-trip intact."""
    rb = RingBuffer(3, slot_size=32, max_record_size=1 * KiB)
    records = [payload(i, size) for i in range(3)]
    for _ in range(5):  # several laps so every slot is reused
        for r in records:
            rb.put_nowait(r)
        assert rb.nbytes == 3 * size
        assert [rb.get_nowait() for _ in records] == records
    assert len(rb) == 0 and rb.nbytes == 0


MIXED_SIZES = [0, 111, 5, 112, 1, 300, 111, 0, 70, 2000, 110, 3]  # inline and out of line


def mixed_records(start: int, sizes=MIXED_SIZES) -> list[bytes]:
    return [payload(start + i, size) for i, size in enumerate(sizes)]


@pytest.mark.parametrize("first_taken", [1, 3, 11])
def test_packed_records_survive_slots_handed_back_early(first_taken):
    """A claim's records share one packed block: handing back the first slots
    and refilling them must not touch the bytes of the records still held."""
    rb = RingBuffer(len(MIXED_SIZES), max_record_size=4 * KiB)
    records = mixed_records(0)
    assert rb.put_many(records, block=False) == len(records)  # one claim, one block
    assert rb.get_many(first_taken, block=False) == records[:first_taken]
    # The freed slots are written again at once, with records that fill their shares.
    refill = [payload(100 + i, 111) for i in range(first_taken)]
    assert rb.put_many(refill, block=False) == first_taken
    assert rb.get_many(len(records), block=False) == records[first_taken:] + refill


def test_packed_records_survive_consumers_releasing_out_of_order():
    """Two claims from one block, the later one handed back first, then its
    slots refilled: the earlier claim's records are still intact."""
    rb = RingBuffer(len(MIXED_SIZES), max_record_size=4 * KiB)
    records = mixed_records(0)
    assert rb.put_many(records, block=False) == len(records)
    early = rb.get_batch(4, 0)            # claims positions 0-3, holds them
    late = rb.get_batch(len(records), 0)  # claims and hands back 4-11
    assert list(late) == records[4:]
    assert list(early) == records[:4]
    assert bytes(early) == b"".join(r + b"\n" for r in records[:4])


def test_put_many_across_the_ring_end_takes_every_record():
    """A put_many that reaches the last slot goes on from slot 0 (two claims,
    two packed blocks) and takes all it can, in order, even non-blocking."""
    rb = RingBuffer(5, max_record_size=4 * KiB)
    for lap in range(7):                  # start the put at every slot
        rb.put_many([payload(1000 + lap, lap)] * (lap % 5), block=False)
        rb.get_many(5, block=False) if len(rb) else None
        records = mixed_records(10 * lap, MIXED_SIZES[:5])
        assert rb.put_many(records, block=False) == 5
        batch = rb.get_batch(5, 0)
        assert list(batch) == records
        assert bytes(batch) == b"".join(r + b"\n" for r in records)
        assert rb.nbytes == 0


def test_out_of_line_records_wrap_many_times():
    """1 KiB records in 32-byte slots survive 1,000 laps of a 3-record ring."""
    rb = RingBuffer(3, slot_size=32, max_record_size=1 * KiB)
    for i in range(1000):
        recs = [payload(3 * i + k, 1 * KiB) for k in range(3)]
        assert rb.put_many(recs, block=False) == 3
        assert rb.get_many(3, block=False) == recs
    assert rb.pushed == rb.popped == 3000


def test_record_of_exactly_max_record_size_is_accepted():
    """A record of exactly max_record_size bytes (default 1 MiB) is accepted and returned."""
    rb = RingBuffer(2)
    big = bytes(range(256)) * (MiB // 256)
    assert len(big) == rb.max_record_size
    rb.put(big)
    assert rb.nbytes == MiB
    assert rb.get() == big


def test_record_over_max_record_size_names_both_sizes():
    """A record one byte over max_record_size raises ValueError naming both sizes."""
    rb = RingBuffer(4, max_record_size=1000)
    with pytest.raises(ValueError) as info:
        rb.put(b"x" * 1001)
    message = str(info.value)
    assert re.search(r"\b1001\b", message), message
    assert re.search(r"\b1000\b", message), message
    with pytest.raises(ValueError):
        rb.put_nowait(b"x" * 1001)
    assert len(rb) == 0 and rb.nbytes == 0 and rb.pushed == 0


def test_default_max_record_size_rejects_one_byte_more():
    """The default 1 MiB limit rejects a 1 MiB + 1 record with ValueError naming both sizes."""
    rb = RingBuffer(2)
    with pytest.raises(ValueError) as info:
        rb.put(b"\0" * (MiB + 1))
    assert str(MiB + 1) in str(info.value) and str(MiB) in str(info.value)


def test_zero_max_record_size_takes_only_empty_records():
    """With max_record_size=0, empty records go through and a 1-byte one is refused."""
    rb = RingBuffer(3, max_record_size=0)
    rb.put(b"")
    with pytest.raises(ValueError):
        rb.put(b"x")
    assert rb.get() == b""
    assert len(rb) == 0


# --------------------------------------------------------------------------
# input types


@pytest.mark.parametrize(
    "item, expected",
    [
        (b"bytes", b"bytes"),
        (bytearray(b"bytearray"), b"bytearray"),
        (memoryview(b"memoryview"), b"memoryview"),
        (memoryview(b"__slice__")[2:7], b"slice"),
        (array.array("i", [1, 2, 3]), array.array("i", [1, 2, 3]).tobytes()),
        (array.array("d", [0.5, -2.0]), array.array("d", [0.5, -2.0]).tobytes()),
        (array.array("B"), b""),
    ],
    ids=["bytes", "bytearray", "memoryview", "memoryview-slice", "array-i", "array-d", "array-empty"],
)
def test_buffer_inputs_are_stored_as_their_bytes(item, expected):
    """Any contiguous buffer is accepted and stored as its raw bytes (length in bytes)."""
    rb = RingBuffer(4)
    rb.put(item)
    assert len(rb) == 1
    assert rb.nbytes == len(expected)
    assert rb.get() == expected


def test_buffer_inputs_in_put_many():
    """put_many accepts a mix of buffer types and stores each one's bytes."""
    rb = RingBuffer(8)
    items = [b"a", bytearray(b"bc"), memoryview(b"def"), array.array("h", [7])]
    assert rb.put_many(items) == 4
    assert rb.get_many(8) == [b"a", b"bc", b"def", array.array("h", [7]).tobytes()]


def test_ring_owns_a_copy_of_the_record():
    """Mutating a bytearray after put does not change the stored record."""
    rb = RingBuffer(4, slot_size=32)
    small, large = bytearray(b"small"), bytearray(b"L" * 500)
    rb.put(small)
    rb.put(large)
    small[:] = b"XXXXX"
    large[:] = b"Y" * 500
    assert rb.get() == b"small"
    assert rb.get() == b"L" * 500


@pytest.mark.parametrize("bad", ["text", 42, None, 3.5, object()], ids=repr)
def test_non_buffer_put_is_type_error(bad):
    """put / put_nowait of a non-buffer raise TypeError and store nothing."""
    rb = RingBuffer(4)
    with pytest.raises(TypeError):
        rb.put(bad)
    with pytest.raises(TypeError):
        rb.put_nowait(bad)
    assert len(rb) == 0 and rb.pushed == 0


@pytest.mark.parametrize("bad", ["text", 42, None], ids=repr)
def test_put_many_non_buffer_in_middle_takes_earlier_then_type_error(bad):
    """put_many takes the records before a non-buffer, then raises TypeError."""
    rb = RingBuffer(8)
    with pytest.raises(TypeError):
        rb.put_many([b"a", b"b", bad, b"c"])
    assert drain(rb) == [b"a", b"b"]
    assert rb.pushed == 2


def test_put_many_of_non_iterable_is_type_error():
    """put_many of something that is not iterable raises TypeError."""
    rb = RingBuffer(4)
    with pytest.raises(TypeError):
        rb.put_many(42)
    assert len(rb) == 0


# --------------------------------------------------------------------------
# Full / Empty, timeouts


def test_full_and_empty_subclass_queue_errors():
    """Full is a queue.Full, Empty is a queue.Empty, and all three are LogpipeErrors."""
    assert issubclass(Full, queue.Full)
    assert issubclass(Empty, queue.Empty)
    for exc in (Full, Empty, Closed):
        assert issubclass(exc, LogpipeError)
    assert not issubclass(Closed, (queue.Full, queue.Empty))


def test_put_nonblocking_on_full_ring_raises_full():
    """put_nowait and put(block=False) on a full ring raise Full (a queue.Full) and take nothing."""
    rb = RingBuffer(2)
    fill(rb, 2)
    with pytest.raises(Full):
        rb.put_nowait(b"x")
    with pytest.raises(queue.Full):
        rb.put(b"x", block=False)
    assert len(rb) == 2 and rb.pushed == 2


def test_get_nonblocking_on_empty_ring_raises_empty():
    """get_nowait, get(block=False) and get_many(block=False) on an empty ring raise Empty."""
    rb = RingBuffer(2)
    with pytest.raises(Empty):
        rb.get_nowait()
    with pytest.raises(queue.Empty):
        rb.get(block=False)
    with pytest.raises(Empty):
        rb.get_many(3, block=False)
    assert rb.popped == 0


def test_put_timeout_raises_full_after_timeout():
    """put(timeout=t) on a full ring raises Full no earlier than t and does return."""
    rb = RingBuffer(1)
    rb.put(b"a")
    t0 = time.monotonic()
    with pytest.raises(Full):
        rb.put(b"b", timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.2 - TOL <= elapsed < 0.2 + SANITY
    assert list(drain(rb)) == [b"a"]


def test_put_timeout_zero_on_full_ring_raises_full():
    """put(timeout=0) on a full ring raises Full."""
    rb = RingBuffer(1)
    rb.put(b"a")
    with pytest.raises(Full):
        rb.put(b"b", timeout=0)


def test_get_timeout_raises_empty_after_timeout():
    """get(timeout=t) on an empty ring raises Empty no earlier than t and does return."""
    rb = RingBuffer(1)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        rb.get(timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.2 - TOL <= elapsed < 0.2 + SANITY


def test_get_many_timeout_raises_empty_after_timeout():
    """get_many(timeout=t) on an empty ring raises Empty no earlier than t."""
    rb = RingBuffer(1)
    t0 = time.monotonic()
    with pytest.raises(Empty):
        rb.get_many(5, timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.2 - TOL <= elapsed < 0.2 + SANITY


def test_except_queue_full_catches_ring_full():
    """Code written for queue.Queue (except queue.Full / queue.Empty) works with a RingBuffer."""
    rb = RingBuffer(1)
    rb.put(b"a")
    caught = []
    try:
        rb.put(b"b", timeout=0.01)
    except queue.Full:
        caught.append("full")
    rb.get()
    try:
        rb.get(timeout=0.01)
    except queue.Empty:
        caught.append("empty")
    assert caught == ["full", "empty"]


@pytest.mark.parametrize(
    "call, prefill",
    [
        (lambda rb: rb.put(b"x", timeout=-1), True),
        (lambda rb: rb.put_many([b"x"], timeout=-0.5), True),
        (lambda rb: rb.get(timeout=-1), False),
        (lambda rb: rb.get_many(2, timeout=-1), False),
        (lambda rb: rb.get_batch(2, timeout=-1), False),
    ],
    ids=["put", "put_many", "get", "get_many", "get_batch"],
)
def test_negative_timeout_is_value_error(call, prefill):
    """A negative timeout raises ValueError (rather than blocking or Full/Empty)."""
    rb = RingBuffer(1)
    if prefill:
        rb.put(b"a")
    with pytest.raises(ValueError):
        call(rb)


def test_get_timeout_none_blocks_until_data_arrives():
    """get(timeout=None) waits (well past any short default) until another thread puts."""
    rb = RingBuffer(2)
    getter = Call(rb.get, timeout=None)
    time.sleep(0.3)
    assert getter.alive(), "get(timeout=None) returned before any data arrived"
    rb.put(b"late")
    getter.join()
    assert getter.error is None and getter.result == b"late"


def test_put_timeout_none_blocks_until_room():
    """put(timeout=None) on a full ring waits until another thread makes room."""
    rb = RingBuffer(1)
    rb.put(b"first")
    putter = Call(rb.put, b"second", timeout=None)
    time.sleep(0.3)
    assert putter.alive(), "put(timeout=None) returned while the ring was full"
    assert rb.get() == b"first"
    putter.join()
    assert putter.error is None
    assert rb.get_nowait() == b"second"


# --------------------------------------------------------------------------
# max_bytes and usage


def test_max_bytes_makes_put_full():
    """A put that would push the payload over max_bytes raises Full even with free slots."""
    rb = RingBuffer(10, max_record_size=100, max_bytes=250)
    rb.put_nowait(b"a" * 100)
    rb.put_nowait(b"b" * 100)
    with pytest.raises(Full):
        rb.put_nowait(b"c" * 100)  # 300 > 250
    with pytest.raises(Full):
        rb.put(b"c" * 100, timeout=0.05)
    rb.put_nowait(b"d" * 50)  # exactly 250: not over
    assert rb.nbytes == 250
    with pytest.raises(Full):
        rb.put_nowait(b"e")
    rb.put_nowait(b"")  # 250 + 0 is not over the budget
    assert len(rb) == 4 and rb.nbytes == 250
    assert rb.get() == b"a" * 100
    rb.put_nowait(b"f" * 100)  # room again
    assert rb.nbytes == 250
    assert drain(rb) == [b"b" * 100, b"d" * 50, b"", b"f" * 100]


def test_max_bytes_bounds_out_of_line_records():
    """Out-of-line records are bounded by max_bytes: 4 x 1 KiB fill a 4 KiB budget."""
    rb = RingBuffer(100, slot_size=32, max_record_size=1 * KiB, max_bytes=4 * KiB)
    for i in range(4):
        rb.put_nowait(payload(i, KiB))
    with pytest.raises(Full):
        rb.put_nowait(payload(9, KiB))
    assert len(rb) == 4 and rb.nbytes == 4 * KiB
    assert rb.usage == pytest.approx(1.0)


def test_usage_is_larger_of_record_and_byte_occupancy():
    """usage is max(len/capacity, nbytes/max_bytes) as the ring fills and drains."""
    rb = RingBuffer(4, max_record_size=500, max_bytes=1000)
    assert rb.usage == 0.0
    rb.put(b"x" * 500)  # records 1/4, bytes 1/2
    assert rb.usage == pytest.approx(0.5)
    rb.put(b"")
    rb.put(b"")  # records 3/4, bytes 1/2
    assert rb.usage == pytest.approx(0.75)
    rb.put(b"")  # records 4/4
    assert rb.usage == pytest.approx(1.0)
    rb.get()  # records 3/4, bytes 0
    assert rb.usage == pytest.approx(0.75)
    drain(rb)
    assert rb.usage == 0.0
    rb2 = RingBuffer(100, max_record_size=400, max_bytes=1000)
    rb2.put(b"y" * 400)
    rb2.put(b"y" * 400)  # records 2/100, bytes 8/10
    assert rb2.usage == pytest.approx(0.8)


# --------------------------------------------------------------------------
# put_many


def test_put_many_returns_count_in_order():
    """put_many returns how many it took, and they come out in order."""
    rb = RingBuffer(8)
    assert rb.put_many([b"a", b"b", b"c"]) == 3
    assert rb.put_many(iter([b"d", b"e"])) == 2
    assert rb.put_many(x for x in [b"f"]) == 1
    assert rb.put_many([]) == 0
    assert drain(rb) == [b"a", b"b", b"c", b"d", b"e", b"f"]
    assert rb.pushed == 6


def test_put_many_nonblocking_takes_what_fits():
    """put_many(block=False) takes the prefix that fits by record count, and 0 on a full ring."""
    rb = RingBuffer(3)
    assert rb.put_many([b"1", b"2", b"3", b"4", b"5"], block=False) == 3
    assert rb.put_many([b"6"], block=False) == 0
    assert drain(rb) == [b"1", b"2", b"3"]


def test_put_many_nonblocking_stops_at_byte_budget():
    """put_many(block=False) stops at the first record that would exceed max_bytes, in order."""
    rb = RingBuffer(10, max_record_size=100, max_bytes=250)
    items = [b"a" * 100, b"b" * 100, b"c" * 100, b"d" * 10]
    assert rb.put_many(items, block=False) == 2
    assert drain(rb) == items[:2]


def test_put_many_timeout_returns_partial_count():
    """put_many(timeout=t) returns the count taken before the deadline, no earlier than t."""
    rb = RingBuffer(3)
    t0 = time.monotonic()
    n = rb.put_many([b"1", b"2", b"3", b"4", b"5"], timeout=0.2)
    elapsed = time.monotonic() - t0
    assert n == 3
    assert 0.2 - TOL <= elapsed < 0.2 + SANITY
    assert drain(rb) == [b"1", b"2", b"3"]


def test_put_many_blocking_waits_for_room():
    """A blocking put_many on a small ring takes every record as a consumer makes room."""
    rb = RingBuffer(2)
    items = [payload(i, 5) for i in range(20)]
    putter = Call(rb.put_many, items)
    got = []
    deadline = time.monotonic() + JOIN
    while len(got) < 20 and time.monotonic() < deadline:
        try:
            got.append(rb.get(timeout=0.5))
        except Empty:
            pass
    putter.join()
    assert putter.error is None and putter.result == 20
    assert got == items


def test_put_many_on_closed_ring_raises_closed():
    """put_many on a closed ring raises Closed and takes nothing."""
    rb = RingBuffer(4)
    rb.close()
    with pytest.raises(Closed):
        rb.put_many([b"a", b"b"])
    with pytest.raises(Closed):
        rb.put_many([b"a"], block=False)
    assert len(rb) == 0 and rb.pushed == 0


def test_put_many_closed_part_way_returns_count_taken():
    """A put_many blocked after taking some records returns that count when the ring is closed."""
    rb = RingBuffer(2)
    putter = Call(rb.put_many, [b"a", b"b", b"c", b"d"])
    settle(rb, "put_waits")
    assert putter.alive()
    rb.close()
    putter.join()
    assert putter.error is None, repr(putter.error)
    assert putter.result == 2
    assert rb.get() == b"a" and rb.get() == b"b"
    with pytest.raises(Closed):
        rb.get_nowait()


def test_put_many_over_size_record_in_middle():
    """put_many takes the records before an over-size one, then raises ValueError."""
    rb = RingBuffer(8, max_record_size=10)
    with pytest.raises(ValueError):
        rb.put_many([b"ok1", b"ok2", b"x" * 11, b"ok3"])
    assert drain(rb) == [b"ok1", b"ok2"]
    assert rb.pushed == 2


# --------------------------------------------------------------------------
# get_many


def test_get_many_returns_up_to_max_items():
    """get_many returns at most max_items, fewer when fewer are held, in FIFO order."""
    rb = RingBuffer(8)
    records = fill(rb, 5)
    assert rb.get_many(3) == records[:3]
    assert rb.get_many(10) == records[3:]
    assert len(rb) == 0 and rb.popped == 5


def test_get_many_returns_as_soon_as_one_record_is_there():
    """A blocked get_many returns the single record that arrives, before its timeout."""
    rb = RingBuffer(8)
    getter = Call(rb.get_many, 10, timeout=30)
    settle(rb, "get_waits")
    rb.put(b"only")
    getter.join()
    assert getter.error is None and getter.result == [b"only"]
    assert getter.elapsed < 30


@pytest.mark.parametrize("max_items", [0, -1])
def test_get_many_non_positive_max_items_is_value_error(max_items):
    """get_many with max_items <= 0 raises ValueError."""
    rb = RingBuffer(4)
    rb.put(b"a")
    with pytest.raises(ValueError):
        rb.get_many(max_items)
    with pytest.raises(ValueError):
        rb.get_many(max_items, block=False)
    assert len(rb) == 1


def test_get_many_after_close_drains_then_closed():
    """get_many on a closed ring returns what is left, then raises Closed."""
    rb = RingBuffer(8)
    records = fill(rb, 3)
    rb.close()
    assert rb.get_many(2) == records[:2]
    assert rb.get_many(5, block=False) == records[2:]
    with pytest.raises(Closed):
        rb.get_many(5)
    with pytest.raises(Closed):
        rb.get_many(5, block=False)


# --------------------------------------------------------------------------
# get_batch


def test_get_batch_takes_exactly_max_items_when_more_are_held():
    """get_batch returns exactly max_items when more are held, and leaves the rest."""
    rb = RingBuffer(16)
    records = fill(rb, 10)
    batch = rb.get_batch(4, timeout=0)
    assert isinstance(batch, Batch)
    assert list(batch) == records[:4]
    call = Call(rb.get_batch, 4, timeout=None)
    call.join()
    assert call.error is None and list(call.result) == records[4:8]
    assert len(rb) == 2


def test_get_batch_collects_until_max_items_arrive():
    """get_batch(timeout=None) keeps collecting as records trickle in until it has max_items."""
    rb = RingBuffer(16)
    getter = Call(rb.get_batch, 5, timeout=None)
    records = [payload(i, 4) for i in range(7)]
    for r in records[:4]:
        rb.put(r)
        time.sleep(0.02)
    time.sleep(0.1)
    assert getter.alive(), "get_batch returned before max_items with no timeout"
    for r in records[4:]:
        rb.put(r)
    getter.join()
    assert getter.error is None
    assert list(getter.result) == records[:5]
    assert drain(rb) == records[5:]


def test_get_batch_returns_fewer_on_timeout():
    """get_batch returns the records it has when the timeout expires, no earlier."""
    rb = RingBuffer(16)
    records = fill(rb, 3)
    t0 = time.monotonic()
    batch = rb.get_batch(10, timeout=0.2)
    elapsed = time.monotonic() - t0
    assert list(batch) == records
    assert 0.2 - TOL <= elapsed < 0.2 + SANITY


def test_get_batch_timeout_on_empty_ring_gives_empty_batch():
    """get_batch on an empty ring returns an empty, falsy Batch when the timeout expires."""
    rb = RingBuffer(4)
    t0 = time.monotonic()
    batch = rb.get_batch(10, timeout=0.2)
    elapsed = time.monotonic() - t0
    assert 0.2 - TOL <= elapsed < 0.2 + SANITY
    assert isinstance(batch, Batch)
    assert len(batch) == 0 and not batch and bool(batch) is False
    assert batch.nbytes == 0 and bytes(batch) == b"" and list(batch) == []
    assert rb.get_batch(10, timeout=0).nbytes == 0


def test_get_batch_on_closed_ring_drains_then_closed():
    """get_batch on a closed ring returns what is left (without waiting), then raises Closed."""
    rb = RingBuffer(8)
    records = fill(rb, 2)
    rb.close()
    call = Call(rb.get_batch, 10, timeout=None)
    call.join()
    assert call.error is None and list(call.result) == records
    with pytest.raises(Closed):
        rb.get_batch(10, timeout=None)
    with pytest.raises(Closed):
        rb.get_batch(10, timeout=0)


def test_batch_bytes_are_newline_framed():
    """bytes(batch), tobytes() and nbytes give rec1\\nrec2\\n... for the records taken."""
    rb = RingBuffer(8)
    records = [b'{"msg": "a"}', b"", b"bb", b"x" * 300]
    rb.put_many(records)
    batch = rb.get_batch(8, timeout=0)
    expected = b'{"msg": "a"}\n\nbb\n' + b"x" * 300 + b"\n"
    assert len(batch) == 4 and batch
    assert bytes(batch) == expected
    assert batch.tobytes() == expected
    assert batch.nbytes == len(expected)


def test_batch_iteration_and_indexing_give_records_without_newline():
    """Iterating or indexing a batch yields each record without its newline."""
    rb = RingBuffer(8)
    records = [b"first", b"", b"third"]
    rb.put_many(records)
    batch = rb.get_batch(8, timeout=0)
    assert list(batch) == records
    assert [batch[i] for i in range(len(batch))] == records
    assert all(type(r) is bytes for r in batch)
    with pytest.raises(IndexError):
        batch[3]


def test_batch_records_containing_newlines_come_back_intact():
    """Records with embedded newlines come back intact via iteration and indexing."""
    rb = RingBuffer(8)
    records = [b"line1\nline2", b"\n", b"\n\n", b"end\n"]
    rb.put_many(records)
    batch = rb.get_batch(8, timeout=0)
    assert list(batch) == records
    assert batch[1] == b"\n" and batch[3] == b"end\n"
    assert bytes(batch) == framed(records)


def test_batch_memoryview_is_read_only_framed_bytes():
    """memoryview(batch) exposes the framed bytes, read-only, one byte per item."""
    rb = RingBuffer(8)
    records = [b"alpha", b"beta"]
    rb.put_many(records)
    batch = rb.get_batch(8, timeout=0)
    view = memoryview(batch)
    assert view.readonly
    assert view.nbytes == batch.nbytes == len(framed(records))
    assert view.tobytes() == framed(records)
    assert view.itemsize == 1
    with pytest.raises(TypeError):
        view[0] = ord("X")
    view.release()
    assert bytes(batch) == framed(records)


def test_batch_outlives_ring_reuse():
    """A batch keeps its own copy: refilling the ring (and closing it) does not change it."""
    rb = RingBuffer(3, slot_size=32, max_record_size=1 * KiB)
    records = [payload(0, 5), payload(1, 600), payload(2, 0)]
    rb.put_many(records)
    batch = rb.get_batch(3, timeout=0)
    for i in range(10):
        rb.put_many([payload(100 + i, 600)] * 3)
        drain(rb)
    rb.close()
    assert list(batch) == records
    assert bytes(batch) == framed(records)


def test_batch_write_to_file_with_one_write(tmp_path):
    """f.write(batch) writes exactly the framed bytes in one call."""
    rb = RingBuffer(64, slot_size=32, max_record_size=4 * KiB)
    records = [payload(i, (i * 97) % 2000) for i in range(50)]
    records[7] = b'{"msg": "has\\nescaped newline"}'
    rb.put_many(records)
    batch = rb.get_batch(50, timeout=0)
    path = tmp_path / "out.ndjson"
    with open(path, "wb") as f:
        written = f.write(batch)
    assert written == batch.nbytes
    assert path.read_bytes() == framed(records)


def test_batch_of_out_of_line_records():
    """A batch of 1 KiB out-of-line records (slot_size=32) frames and iterates correctly."""
    rb = RingBuffer(8, slot_size=32, max_record_size=1 * KiB)
    records = [payload(i, KiB) for i in range(6)]
    rb.put_many(records)
    batch = rb.get_batch(6, timeout=0)
    assert list(batch) == records
    assert batch.nbytes == 6 * (KiB + 1)
    assert rb.nbytes == 0


# --------------------------------------------------------------------------
# close


def test_put_after_close_raises_closed():
    """Every put flavour raises Closed after close, even with room."""
    rb = RingBuffer(4)
    rb.close()
    assert rb.closed is True
    with pytest.raises(Closed):
        rb.put(b"a")
    with pytest.raises(Closed):
        rb.put_nowait(b"a")
    with pytest.raises(Closed):
        rb.put(b"a", timeout=0.1)
    with pytest.raises(Closed):
        rb.put(b"a", block=False)
    assert len(rb) == 0 and rb.pushed == 0


def test_put_on_closed_full_ring_raises_closed_not_full():
    """A put on a closed ring that is also full raises Closed, not Full."""
    rb = RingBuffer(1)
    rb.put(b"a")
    rb.close()
    with pytest.raises(Closed):
        rb.put_nowait(b"b")
    with pytest.raises(Closed):
        rb.put(b"b", timeout=0.05)


def test_get_after_close_drains_in_order_then_closed():
    """After close, gets return the remaining records in order, then raise Closed."""
    rb = RingBuffer(8)
    records = fill(rb, 4)
    rb.close()
    assert len(rb) == 4
    assert rb.get() == records[0]
    assert rb.get_nowait() == records[1]
    assert rb.get(timeout=0.1) == records[2]
    assert rb.get(block=False) == records[3]
    with pytest.raises(Closed):
        rb.get()
    with pytest.raises(Closed):
        rb.get_nowait()
    with pytest.raises(Closed):
        rb.get(timeout=1.0)
    assert rb.popped == 4


def test_close_is_idempotent():
    """Closing twice is harmless and keeps the held records."""
    rb = RingBuffer(4)
    rb.put(b"a")
    rb.close()
    rb.close()
    assert rb.closed and len(rb) == 1
    assert rb.get() == b"a"
    rb.close()
    with pytest.raises(Closed):
        rb.get()


BLOCKED_CALLS = {
    "put": (lambda rb: rb.put(b"x"), "put_waits"),
    "put-timeout": (lambda rb: rb.put(b"x", timeout=60), "put_waits"),
    "put_many": (lambda rb: rb.put_many([b"x", b"y"]), "put_waits"),
    "get": (lambda rb: rb.get(), "get_waits"),
    "get-timeout": (lambda rb: rb.get(timeout=60), "get_waits"),
    "get_many": (lambda rb: rb.get_many(5), "get_waits"),
    "get_batch": (lambda rb: rb.get_batch(5), "get_waits"),
    "get_batch-timeout": (lambda rb: rb.get_batch(5, timeout=60), "get_waits"),
}


@pytest.mark.parametrize("name", list(BLOCKED_CALLS))
def test_close_wakes_blocked_thread(name):
    """A thread blocked in a put or get wakes up with Closed when the ring is closed."""
    call, counter = BLOCKED_CALLS[name]
    rb = RingBuffer(1)
    if counter == "put_waits":
        rb.put(b"held")
    blocked = Call(call, rb)
    settle(rb, counter)
    assert blocked.alive(), f"{name} did not block"
    rb.close()
    blocked.join()
    assert isinstance(blocked.error, Closed), repr(blocked.error)
    if counter == "put_waits":
        assert drain(rb) == [b"held"]


def test_close_wakes_every_blocked_getter():
    """Several getters blocked on one ring all wake up with Closed."""
    rb = RingBuffer(4)
    getters = [Call(rb.get), Call(rb.get_many, 3), Call(rb.get_batch, 3), Call(rb.get)]
    settle(rb, "get_waits", 4)
    rb.close()
    for g in getters:
        g.join()
        assert isinstance(g.error, Closed), repr(g.error)


def test_close_returns_records_a_blocked_get_batch_holds():
    """A get_batch blocked while holding records returns them when the ring is closed."""
    rb = RingBuffer(8)
    getter = Call(rb.get_batch, 10, timeout=None)
    settle(rb, "get_waits")
    rb.put(b"a")
    rb.put(b"b")
    time.sleep(0.1)
    rb.close()
    getter.join()
    assert getter.error is None, repr(getter.error)
    assert list(getter.result) == [b"a", b"b"]
    with pytest.raises(Closed):
        rb.get_batch(10, timeout=None)


# --------------------------------------------------------------------------
# StopSignal


def test_stop_signal_flag():
    """A StopSignal starts unset; set() makes is_set()/bool true and is idempotent."""
    rb = RingBuffer(2)
    sig = StopSignal(rb)
    assert sig.is_set() is False and not sig
    sig.set()
    assert sig.is_set() is True and sig
    sig.set()
    assert sig.is_set() is True
    assert rb.closed is False
    rb.put(b"still open")
    assert rb.get() == b"still open"


def test_stop_signal_returns_get_batch_early_with_what_it_holds():
    """set() from another thread makes a get_batch(stop=sig) return early with its records."""
    rb = RingBuffer(16)
    sig = StopSignal(rb)
    getter = Call(rb.get_batch, 10, timeout=None, stop=sig)
    settle(rb, "get_waits")
    rb.put_many([b"r1", b"r2", b"r3"])
    time.sleep(0.1)
    assert getter.alive()
    sig.set()
    getter.join()
    assert getter.error is None, repr(getter.error)
    assert list(getter.result) == [b"r1", b"r2", b"r3"]
    assert len(rb) == 0 and not rb.closed


def test_stop_signal_only_stops_its_own_getter():
    """Setting one getter's signal returns it empty; a getter without it keeps waiting for data."""
    rb = RingBuffer(16)
    sig = StopSignal(rb)
    stopped = Call(rb.get_batch, 10, timeout=None, stop=sig)
    other = Call(rb.get_batch, 1, timeout=None)
    settle(rb, "get_waits", 2)
    sig.set()
    stopped.join()
    assert stopped.error is None, repr(stopped.error)
    assert isinstance(stopped.result, Batch) and len(stopped.result) == 0 and not stopped.result
    time.sleep(0.2)
    assert other.alive(), "a getter without the stop signal returned"
    rb.put(b"data")
    other.join()
    assert other.error is None and list(other.result) == [b"data"]


@pytest.mark.parametrize(
    "call",
    [
        lambda rb, sig: rb.get(stop=sig),
        lambda rb, sig: rb.get(timeout=60, stop=sig),
        lambda rb, sig: rb.get_many(5, stop=sig),
    ],
    ids=["get", "get-timeout", "get_many"],
)
def test_stop_signal_makes_blocked_get_raise_empty(call):
    """A get / get_many blocked with stop=sig raises Empty when sig is set."""
    rb = RingBuffer(4)
    sig = StopSignal(rb)
    blocked = Call(call, rb, sig)
    settle(rb, "get_waits")
    assert blocked.alive()
    sig.set()
    blocked.join()
    assert isinstance(blocked.error, Empty), repr(blocked.error)
    assert not rb.closed


@pytest.mark.parametrize(
    "call",
    [lambda rb, sig: rb.get(stop=sig), lambda rb, sig: rb.get_many(5, stop=sig)],
    ids=["get", "get_many"],
)
def test_get_with_stop_already_set_raises_empty(call):
    """get / get_many on an empty ring with an already-set stop signal raise Empty, not block."""
    rb = RingBuffer(4)
    sig = StopSignal(rb)
    sig.set()
    c = Call(call, rb, sig)
    c.join()
    assert isinstance(c.error, Empty), repr(c.error)


def test_get_batch_with_stop_already_set_returns_empty_batch():
    """get_batch on an empty ring with an already-set stop signal returns an empty Batch."""
    rb = RingBuffer(4)
    sig = StopSignal(rb)
    sig.set()
    c = Call(rb.get_batch, 5, timeout=None, stop=sig)
    c.join()
    assert c.error is None, repr(c.error)
    assert isinstance(c.result, Batch) and len(c.result) == 0


# --------------------------------------------------------------------------
# counters and occupancy


def test_counters_after_known_sequence():
    """pushed, popped, len and nbytes follow a known sequence of puts and gets."""
    rb = RingBuffer(10)
    rb.put(b"aaa")
    rb.put_nowait(b"bb")
    assert rb.put_many([b"c", b"dddd", b""]) == 3
    assert (rb.pushed, rb.popped, len(rb), rb.nbytes) == (5, 0, 5, 10)
    assert rb.get() == b"aaa"
    assert rb.get_many(2) == [b"bb", b"c"]
    assert (rb.pushed, rb.popped, len(rb), rb.nbytes) == (5, 3, 2, 4)
    rb.put(b"eeeee")
    batch = rb.get_batch(5, timeout=0)
    assert list(batch) == [b"dddd", b"", b"eeeee"]
    assert (rb.pushed, rb.popped, len(rb), rb.nbytes) == (6, 6, 0, 0)
    assert (rb.put_waits, rb.get_waits) == (0, 0)


def test_failed_operations_do_not_count():
    """Full, Empty, ValueError, TypeError and Closed leave pushed / popped / waits unchanged."""
    rb = RingBuffer(1, max_record_size=4)
    rb.put(b"a")
    with pytest.raises(Full):
        rb.put_nowait(b"b")
    with pytest.raises(ValueError):
        rb.put_nowait(b"too big")
    with pytest.raises(TypeError):
        rb.put_nowait("str")
    assert rb.put_many([b"c"], block=False) == 0
    rb.get()
    with pytest.raises(Empty):
        rb.get_nowait()
    with pytest.raises(Empty):
        rb.get_many(2, block=False)
    rb.close()
    with pytest.raises(Closed):
        rb.put(b"d")
    with pytest.raises(Closed):
        rb.get()
    assert (rb.pushed, rb.popped) == (1, 1)
    assert (rb.put_waits, rb.get_waits) == (0, 0)


def test_wait_counters_count_parked_calls():
    """put_waits / get_waits grow when a blocking call has to park, on timeout or before data."""
    rb = RingBuffer(1)
    with pytest.raises(Empty):
        rb.get(timeout=0.05)
    assert rb.get_waits >= 1 and rb.put_waits == 0
    getter = Call(rb.get, timeout=None)
    settle(rb, "get_waits", 2)
    rb.put(b"a")
    getter.join()
    assert getter.result == b"a"
    assert rb.get_waits >= 2
    rb.put(b"b")
    with pytest.raises(Full):
        rb.put(b"c", timeout=0.05)
    assert rb.put_waits >= 1
    before = rb.put_waits
    putter = Call(rb.put, b"d", timeout=None)
    settle(rb, "put_waits", before + 1)
    assert rb.get() == b"b"
    putter.join()
    assert putter.error is None
    assert rb.put_waits >= before + 1
    assert rb.get() == b"d"
    assert (rb.pushed, rb.popped) == (3, 3)


def test_len_and_nbytes_on_a_full_ring_of_mixed_sizes():
    """len and nbytes count records and payload bytes exactly, inline and out-of-line."""
    rb = RingBuffer(5, slot_size=32, max_record_size=2 * KiB)
    sizes = [0, 16, 17, 2 * KiB, 3]
    for i, s in enumerate(sizes):
        rb.put(payload(i, s))
    assert len(rb) == 5 and rb.nbytes == sum(sizes)
    assert rb.usage == pytest.approx(1.0)
    rb.get_many(2)
    assert len(rb) == 3 and rb.nbytes == sum(sizes[2:])


def test_batch_knows_when_its_oldest_record_entered():
    """Batch.oldest_enqueue is the push time of its oldest record, on time.monotonic()'s clock."""
    rb = RingBuffer(8)
    before = time.monotonic()
    rb.put(b"old")
    time.sleep(0.2)
    rb.put(b"new")
    batch = rb.get_batch(8, timeout=0)
    waited = time.monotonic() - batch.oldest_enqueue
    assert 0.15 <= waited < 5.0
    assert batch.oldest_enqueue >= before - 0.05  # coarse clock: a few ms of slack
    assert RingBuffer(2).get_batch(1, timeout=0).oldest_enqueue == float("inf")
