"""Property tests: a RingBuffer behaves like a bounded deque model.

Random sequences of non-blocking operations (put_nowait, put_many(block=False),
get_nowait, get_many(block=False), get_batch(timeout=0), close) run against
both the ring and a ``collections.deque`` model with the same capacity,
max_record_size and max_bytes. After every step they must agree on results,
exceptions, len, nbytes, usage, closed and the pushed/popped counters.

Where docs/ringbuffer.md does not fix which of two errors wins (a record over
max_record_size offered to a closed or full ring), either documented outcome is
accepted, but the ring's contents must match the model in every case.
"""

from __future__ import annotations

import collections
import os

import pytest
from _support import examples
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from logpipe import Batch, Closed, Empty, Full, RingBuffer

OK = "ok"


class Model:
    """A bounded FIFO of byte records with the ring's documented rules."""

    def __init__(self, capacity: int, max_record_size: int, max_bytes: int):
        self.capacity = capacity
        self.max_record_size = max_record_size
        self.max_bytes = max_bytes
        self.items: collections.deque[bytes] = collections.deque()
        self.nbytes = 0
        self.closed = False
        self.pushed = 0
        self.popped = 0

    def fits(self, record: bytes) -> bool:
        return len(self.items) < self.capacity and self.nbytes + len(record) <= self.max_bytes

    def take(self, record: bytes) -> None:
        self.items.append(record)
        self.nbytes += len(record)
        self.pushed += 1

    def pop(self) -> bytes:
        record = self.items.popleft()
        self.nbytes -= len(record)
        self.popped += 1
        return record

    def put_outcomes(self, record: bytes) -> set:
        """The acceptable outcomes of put_nowait(record): OK or exception classes."""
        oversize = len(record) > self.max_record_size
        if self.closed:
            return {Closed, ValueError} if oversize else {Closed}
        if oversize:
            return {ValueError} if self.fits_any_room() else {ValueError, Full}
        return {OK} if self.fits(record) else {Full}

    def fits_any_room(self) -> bool:
        return len(self.items) < self.capacity and self.nbytes < self.max_bytes

    def put_many_plan(self, records: list[bytes]):
        """(k, acceptable outcomes): the prefix length taken and the allowed results.

        An outcome is an int (the count returned) or an exception class.
        """
        if self.closed:
            if not records:
                return 0, {0, Closed}
            first_oversize = len(records[0]) > self.max_record_size
            return 0, ({Closed, ValueError} if first_oversize else {Closed})
        items, nbytes, k = len(self.items), self.nbytes, 0
        for r in records:
            if len(r) > self.max_record_size:
                room = items < self.capacity and nbytes < self.max_bytes
                return k, ({ValueError} if room else {ValueError, k})
            if items >= self.capacity or nbytes + len(r) > self.max_bytes:
                later_bad = any(len(x) > self.max_record_size for x in records[k:])
                return k, ({k, ValueError} if later_bad else {k})
            items += 1
            nbytes += len(r)
            k += 1
        return k, {k}


def outcome(fn, *args, **kwargs):
    try:
        return OK, fn(*args, **kwargs)
    except (Closed, Empty, Full, ValueError, TypeError) as exc:
        return type(exc), exc


class RingMachine(RuleBasedStateMachine):
    """Drive a RingBuffer and a deque model with the same random operations."""

    @initialize(
        capacity=st.integers(1, 8),
        max_record_size=st.integers(0, 60),
        extra_bytes=st.integers(0, 200),
        slot_size=st.sampled_from([32, 40, 64]),
    )
    def setup(self, capacity, max_record_size, extra_bytes, slot_size):
        max_bytes = max_record_size + extra_bytes
        self.ring = RingBuffer(
            capacity, max_record_size=max_record_size, max_bytes=max_bytes, slot_size=slot_size
        )
        self.model = Model(capacity, max_record_size, max_bytes)
        self.seq = 0

    def record(self, size: int) -> bytes:
        """A fresh record of ``size`` bytes, distinct content, sometimes with newlines."""
        self.seq += 1
        unit = b"%d\n" % self.seq if self.seq % 3 == 0 else b"%d," % self.seq
        return (unit * (size // len(unit) + 1))[:size]

    def size(self, data) -> int:
        # mostly valid sizes, sometimes exactly the limit, occasionally over it
        limit = self.model.max_record_size
        roll = data.draw(st.integers(0, 9))
        if roll == 0:
            return data.draw(st.integers(limit + 1, limit + 3))
        if roll == 1:
            return limit
        return data.draw(st.integers(0, limit))

    # ---- producers

    @rule(data=st.data())
    def put_nowait(self, data):
        rec = self.record(self.size(data))
        expected = self.model.put_outcomes(rec)
        kind, _ = outcome(self.ring.put_nowait, rec)
        assert kind in expected, (kind, expected, len(rec))
        if kind is OK:
            self.model.take(rec)

    @rule(data=st.data(), n=st.integers(0, 6))
    def put_many_nonblocking(self, data, n):
        recs = [self.record(self.size(data)) for _ in range(n)]
        k, expected = self.model.put_many_plan(recs)
        kind, value = outcome(self.ring.put_many, recs, block=False)
        got = value if kind is OK else kind
        assert got in expected, (got, expected, [len(r) for r in recs])
        # k records were taken whether the call returned k or raised ValueError
        if got is not Closed:
            for r in recs[:k]:
                self.model.take(r)

    # ---- consumers

    @rule()
    def get_nowait(self):
        kind, value = outcome(self.ring.get_nowait)
        if self.model.items:
            assert kind is OK, kind
            assert value == self.model.pop()
        else:
            assert kind is (Closed if self.model.closed else Empty), kind

    @rule(n=st.integers(1, 10))
    def get_many_nonblocking(self, n):
        kind, value = outcome(self.ring.get_many, n, block=False)
        if self.model.items:
            assert kind is OK, kind
            expected = [self.model.pop() for _ in range(min(n, len(self.model.items)))]
            assert value == expected
        else:
            assert kind is (Closed if self.model.closed else Empty), kind

    @rule(n=st.integers(1, 10))
    def get_batch_now(self, n):
        kind, value = outcome(self.ring.get_batch, n, timeout=0)
        if not self.model.items and self.model.closed:
            assert kind is Closed, kind
            return
        assert kind is OK, kind
        assert isinstance(value, Batch)
        expected = [self.model.pop() for _ in range(min(n, len(self.model.items)))]
        assert list(value) == expected
        assert len(value) == len(expected)
        assert bool(value) == bool(expected)
        assert bytes(value) == b"".join(r + b"\n" for r in expected)
        assert value.nbytes == sum(len(r) + 1 for r in expected)

    @rule(n=st.integers(1, 10), read=st.booleans())
    def get_batch_held_now(self, n, read):
        """hold=True: the same records, written from the ring's memory by
        write_to (or copied out by reading them), then released at once."""
        kind, value = outcome(self.ring.get_batch, n, timeout=0, hold=True)
        if not self.model.items and self.model.closed:
            assert kind is Closed, kind
            return
        assert kind is OK, kind
        expected = [self.model.pop() for _ in range(min(n, len(self.model.items)))]
        framed = b"".join(r + b"\n" for r in expected)
        assert value.held == (bool(expected) and self.ring.capacity > 1)  # capacity 1 always copies
        assert len(value) == len(expected) and value.nbytes == len(framed)
        if read:
            assert list(value) == expected and not value.held
        fd = os.memfd_create("held-batch")
        try:
            assert value.write_to(fd) == len(framed)
            assert os.pread(fd, len(framed) + 1, 0) == framed
        finally:
            os.close(fd)
        value.release()
        assert len(value) == 0 and not value.held

    # ---- lifecycle

    @rule(roll=st.integers(0, 7))
    def close(self, roll):
        # closing ends the interesting part of a run, so do it only now and then
        if roll == 0:
            self.ring.close()
            self.model.closed = True

    # ---- invariants

    @invariant()
    def same_occupancy(self):
        if not hasattr(self, "ring"):
            return
        m = self.model
        assert len(self.ring) == len(m.items)
        assert self.ring.nbytes == m.nbytes
        assert self.ring.closed == m.closed
        assert (self.ring.pushed, self.ring.popped) == (m.pushed, m.popped)
        by_records = len(m.items) / m.capacity
        by_bytes = m.nbytes / m.max_bytes if m.max_bytes else 0.0
        assert self.ring.usage == pytest.approx(max(by_records, by_bytes))


RingMachine.TestCase.settings = settings(
    max_examples=examples(250),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_ring_matches_deque_model = RingMachine.TestCase
test_ring_matches_deque_model.__doc__ = "Random non-blocking operations give the same results as a deque model."


class RealisticRingMachine(RingMachine):
    """The same model check with production-like record sizes: a heavy-tailed
    mix of empty records, every inline boundary (slot payload - 1, =, + 1),
    KiB stack traces, tens of KiB and max_record_size itself, and get_batch /
    get_many sizes up to the capacity, so one claim mixes inline and
    out-of-line records in every order."""

    @initialize(
        capacity=st.integers(1, 64),
        slot_size=st.sampled_from([32, 128, 256]),
        max_record_size=st.sampled_from([300, 5000, 70_000]),
        budget=st.sampled_from(["default", "tight"]),
    )
    def setup(self, capacity, slot_size, max_record_size, budget):
        max_bytes = None if budget == "default" else max_record_size * 3
        self.ring = RingBuffer(
            capacity, max_record_size=max_record_size, max_bytes=max_bytes, slot_size=slot_size
        )
        self.model = Model(capacity, max_record_size, self.ring.max_bytes)
        self.inline_max = slot_size - 17  # a record this long and its newline fill one share
        self.seq = 0

    def size(self, data) -> int:
        limit = self.model.max_record_size
        inline = self.inline_max
        choice = data.draw(st.sampled_from(
            ["short"] * 6 + ["empty", "boundary", "boundary", "kib", "tens_kib", "limit", "over"]))
        if choice == "short":
            return data.draw(st.integers(1, 300))
        if choice == "empty":
            return 0
        if choice == "boundary":
            return data.draw(st.sampled_from([1, inline - 1, inline, inline + 1, inline + 2]))
        if choice == "kib":
            return data.draw(st.integers(1024, 4096))
        if choice == "tens_kib":
            return data.draw(st.integers(10_000, 60_000))
        if choice == "limit":
            return limit
        return limit + data.draw(st.integers(1, 3))

    def record(self, size: int) -> bytes:
        return super().record(min(size, self.model.max_record_size + 3))

    @rule(data=st.data())
    def get_batch_up_to_capacity(self, data):
        self.get_batch_now(data.draw(st.integers(1, self.model.capacity + 2)))

    @rule(data=st.data())
    def get_many_up_to_capacity(self, data):
        self.get_many_nonblocking(data.draw(st.integers(1, self.model.capacity + 2)))

    @rule(data=st.data(), n=st.integers(1, 40))
    def put_many_long(self, data, n):
        self.put_many_nonblocking(data, n)


RealisticRingMachine.TestCase.settings = settings(
    max_examples=examples(120),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_ring_with_realistic_sizes_matches_deque_model = RealisticRingMachine.TestCase
test_ring_with_realistic_sizes_matches_deque_model.__doc__ = (
    "Heavy-tailed record sizes through every put/get path give the model's results.")
