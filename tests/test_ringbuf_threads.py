"""Concurrency tests: many Python threads producing into and consuming from one ring.

Every record is tagged ``b"<producer>:<seq>"``. The checks: nothing lost,
nothing duplicated, each producer's records seen in order by any one consumer
(a FIFO ring hands a consumer records in ring order), exact per-producer order
with a single consumer, and every thread joined within a timeout.

Shutdown is the pipeline's: producers finish, the main thread closes the
ring, consumers drain until Closed.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import time

import pytest

from _support import join_all, start_daemon

from logpipe import Closed, Empty, RingBuffer, StopSignal

N_PRODUCERS = 4


# --------------------------------------------------------------------------
# producers and consumers


def mixed_length(pid: int, seq: int, inline_max: int) -> int:
    """A heavy-tailed record length, the same for the same (pid, seq): mostly
    short, many on the inline limit, some KiB, a few tens of KiB."""
    roll = (pid * 1_000_003 + seq * 7919) % 1000
    if roll < 550:
        return 8 + roll % 53
    if roll < 750:
        return inline_max - 2 + roll % 5          # limit - 2 .. limit + 2
    if roll < 900:
        return 100 + roll * 7 % 201
    if roll < 985:
        return 1024 + roll * 31 % 3072            # a stack trace
    return 10_000 + roll * 997 % 30_000           # tens of KiB


def record_of(pid: int, seq: int, inline_max: int | None = None) -> bytes:
    """The record producer ``pid`` puts as number ``seq``: ``pid:seq``, or with
    ``inline_max`` a ``pid:seq:`` tag and a filler of a mixed length made
    from (pid, seq), newlines included, so a consumer can check every byte."""
    tag = b"%d:%d" % (pid, seq)
    if inline_max is None:
        return tag
    length = max(mixed_length(pid, seq, inline_max), len(tag) + 1)
    unit = bytes([65 + (pid + seq) % 26]) * 7 + (b"\n" if seq % 3 == 0 else b"-")
    return (tag + b":" + unit * (length // len(unit) + 1))[:length]


def produce(ring: RingBuffer, pid: int, count: int, style: str, errors: list,
            inline_max: int | None = None) -> None:
    """Put records pid:0 .. pid:count-1 (record_of), one by one or in put_many chunks."""
    try:
        if style == "put":
            for seq in range(count):
                ring.put(record_of(pid, seq, inline_max))
        else:
            rng = random.Random(pid)
            seq = 0
            while seq < count:
                k = min(rng.randint(1, 64), count - seq)
                chunk = [record_of(pid, i, inline_max) for i in range(seq, seq + k)]
                taken = ring.put_many(chunk)
                if taken != k:
                    raise AssertionError(f"put_many took {taken} of {k} on an open ring")
                seq += k
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def consume(ring: RingBuffer, style: str, out: list, errors: list, stop: StopSignal | None = None):
    """Take records until Closed (or until ``stop``), appending them to ``out``."""
    styles = ["get", "get_many", "get_batch"] if style == "mixed" else [style]
    turn = 0
    try:
        while True:
            how = styles[turn % len(styles)]
            turn += 1
            try:
                if how == "get":
                    out.append(ring.get(stop=stop))
                elif how == "get_many":
                    out.extend(ring.get_many(256, stop=stop))
                else:
                    batch = ring.get_batch(128, timeout=0.05, stop=stop)
                    records = list(batch)
                    if bytes(batch) != b"".join(r + b"\n" for r in records):
                        raise AssertionError("batch bytes do not match its records")
                    out.extend(records)
            except Empty:
                if stop is None:
                    raise
            except Closed:
                return
            if stop is not None and stop.is_set():
                return
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


@contextlib.contextmanager
def fine_switching(interval: float = 1e-5):
    """Make the interpreter switch threads often, so more interleavings are tried."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def parse(record: bytes) -> tuple[int, int]:
    pid, seq = record.split(b":", 2)[:2]
    return int(pid), int(seq)


def check_exactly_once(received: list[list[bytes]], per_producer: int,
                       inline_max: int | None = None) -> None:
    """Every pid:seq arrived exactly once, byte for byte; each consumer saw
    each producer in order."""
    counts = [bytearray(per_producer) for _ in range(N_PRODUCERS)]
    total = 0
    for consumer, records in enumerate(received):
        last = [-1] * N_PRODUCERS
        for record in records:
            pid, seq = parse(record)
            if record != record_of(pid, seq, inline_max):
                raise AssertionError(f"record {pid}:{seq} corrupted ({len(record)} bytes)")
            if counts[pid][seq] == 1:
                raise AssertionError(f"duplicate record {record!r}")
            counts[pid][seq] = 1
            if seq <= last[pid]:
                raise AssertionError(
                    f"consumer {consumer} got {pid}:{seq} after {pid}:{last[pid]} (out of order)"
                )
            last[pid] = seq
        total += len(records)
    for pid in range(N_PRODUCERS):
        missing = per_producer - sum(counts[pid])
        assert missing == 0, f"producer {pid}: {missing} records lost"
    assert total == N_PRODUCERS * per_producer


def run_pipeline(ring, per_producer, producer_styles, consumer_styles, inline_max=None):
    """Producers finish, the main thread closes the ring, consumers drain until Closed."""
    errors: list = []
    outs = [[] for _ in consumer_styles]
    with fine_switching():
        consumers = [
            start_daemon(consume, ring, style, out, errors) for style, out in zip(consumer_styles, outs)
        ]
        producers = [
            start_daemon(produce, ring, pid, per_producer, style, errors, inline_max)
            for pid, style in enumerate(producer_styles)
        ]
        join_all(producers)
        ring.close()
        join_all(consumers)
    assert not errors, errors
    return outs


# --------------------------------------------------------------------------
# tests


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_4_producers_4_consumers_one_million_records():
    """4 x 4 threads move 1,000,000 tagged records with none lost, duplicated or reordered."""
    ring = RingBuffer(1024)
    per_producer = 250_000
    outs = run_pipeline(
        ring,
        per_producer,
        producer_styles=["put", "put_many", "put", "put_many"],
        consumer_styles=["get", "get_many", "get_batch", "mixed"],
    )
    check_exactly_once(outs, per_producer)
    assert ring.pushed == ring.popped == 1_000_000
    assert len(ring) == 0 and ring.nbytes == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("capacity, per_producer", [(16, 20_000), (1, 2_000)])
@pytest.mark.parametrize("consumer_style", ["get", "get_many", "get_batch"])
def test_4_producers_4_consumers_small_ring(consumer_style, capacity, per_producer):
    """On a tiny ring (constant blocking), 4 x 4 threads lose and duplicate nothing."""
    ring = RingBuffer(capacity, slot_size=32)
    outs = run_pipeline(
        ring,
        per_producer,
        producer_styles=["put", "put_many", "put", "put_many"],
        consumer_styles=[consumer_style] * 4,
    )
    check_exactly_once(outs, per_producer)
    assert ring.pushed == ring.popped == 4 * per_producer


@pytest.mark.timeout(120)
@pytest.mark.parametrize("slot_size, capacity, max_bytes", [
    (32, 16, None), (128, 64, None), (128, 64, 96 * 1024), (256, 7, None),
])
def test_4_producers_4_consumers_mixed_sizes_byte_for_byte(slot_size, capacity, max_bytes):
    """Heavy-tailed record sizes (on the inline limit, KiB, tens of KiB),
    put one by one and packed by put_many, taken by get, get_many and
    get_batch in turn on every consumer: each record arrives once, intact,
    in its producer's order, whatever order the consumers hand slots back."""
    ring = RingBuffer(capacity, slot_size=slot_size, max_record_size=64 * 1024, max_bytes=max_bytes)
    per_producer = 3000
    inline_max = slot_size - 17
    outs = run_pipeline(
        ring,
        per_producer,
        producer_styles=["put", "put_many", "put_many", "put_many"],
        consumer_styles=["mixed"] * 4,
        inline_max=inline_max,
    )
    check_exactly_once(outs, per_producer, inline_max)
    assert ring.pushed == ring.popped == 4 * per_producer
    assert ring.nbytes == 0


@pytest.mark.timeout(120)
def test_4_producers_1_consumer_keeps_per_producer_order():
    """With one consumer, each producer's records arrive complete and exactly in order."""
    ring = RingBuffer(32)
    per_producer = 25_000
    (out,) = run_pipeline(
        ring,
        per_producer,
        producer_styles=["put", "put_many", "put", "put_many"],
        consumer_styles=["mixed"],
    )
    by_producer: list[list[int]] = [[] for _ in range(N_PRODUCERS)]
    for record in out:
        pid, seq = parse(record)
        by_producer[pid].append(seq)
    for pid, seqs in enumerate(by_producer):
        assert seqs == list(range(per_producer)), f"producer {pid} out of order or incomplete"


@pytest.mark.timeout(120)
def test_close_while_producers_are_pushing():
    """A put that succeeded is received exactly once; a put refused with Closed never is."""
    ring = RingBuffer(64)
    errors: list = []
    accepted: list[list[bytes]] = [[] for _ in range(N_PRODUCERS)]
    refused: list[list[bytes]] = [[] for _ in range(N_PRODUCERS)]
    ended_closed = [False] * N_PRODUCERS

    def pusher(pid: int) -> None:
        rng = random.Random(100 + pid)
        seq = 0
        try:
            while True:
                if pid % 2 == 0:
                    record = b"%d:%d" % (pid, seq)
                    seq += 1
                    try:
                        ring.put(record)
                    except Closed:
                        refused[pid].append(record)
                        ended_closed[pid] = True
                        return
                    accepted[pid].append(record)
                else:
                    k = rng.randint(1, 32)
                    chunk = [b"%d:%d" % (pid, i) for i in range(seq, seq + k)]
                    seq += k
                    try:
                        taken = ring.put_many(chunk)
                    except Closed:
                        refused[pid].extend(chunk)
                        ended_closed[pid] = True
                        return
                    accepted[pid].extend(chunk[:taken])
                    refused[pid].extend(chunk[taken:])
                    if taken < k:
                        ended_closed[pid] = True  # closed part-way; the next call would raise
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    outs: list[list[bytes]] = [[] for _ in range(4)]
    with fine_switching():
        consumers = [
            start_daemon(consume, ring, style, out, errors)
            for style, out in zip(["get", "get_many", "get_batch", "mixed"], outs)
        ]
        producers = [start_daemon(pusher, pid) for pid in range(N_PRODUCERS)]
        deadline = time.monotonic() + 30
        while ring.pushed < 20_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        ring.close()
        join_all(producers)
        join_all(consumers)
    assert not errors, errors
    assert all(ended_closed), ended_closed

    received = [r for out in outs for r in out]
    assert len(received) == len(set(received)), "a record was received twice"
    all_accepted = {r for recs in accepted for r in recs}
    all_refused = {r for recs in refused for r in recs}
    assert all(refused), "every producer had a put refused"
    assert not (all_accepted & all_refused)
    assert set(received) == all_accepted
    assert not (set(received) & all_refused)
    assert ring.pushed == ring.popped == len(received)
    # each consumer still saw each producer's records in order
    for out in outs:
        last = [-1] * N_PRODUCERS
        for record in out:
            pid, seq = parse(record)
            assert seq > last[pid]
            last[pid] = seq


@pytest.mark.timeout(120)
def test_stopping_one_consumer_loses_nothing():
    """Stopping one of 3 consumers with its StopSignal mid-stream leaves the others to take the rest."""
    ring = RingBuffer(64)
    per_producer = 20_000
    errors: list = []
    signals = [StopSignal(ring) for _ in range(3)]
    outs: list[list[bytes]] = [[] for _ in range(3)]
    with fine_switching():
        consumers = [
            start_daemon(consume, ring, "get_batch", outs[i], errors, signals[i]) for i in range(3)
        ]
        producers = [
            start_daemon(produce, ring, pid, per_producer, "put_many" if pid % 2 else "put", errors)
            for pid in range(N_PRODUCERS)
        ]
        deadline = time.monotonic() + 30
        while ring.popped < 10_000 and time.monotonic() < deadline:
            time.sleep(0.005)
        signals[0].set()
        join_all(consumers[:1])  # the stopped consumer leaves while others keep going
        stopped_at = len(outs[0])
        join_all(producers)
        ring.close()
        join_all(consumers[1:])
    assert not errors, errors
    assert len(outs[0]) == stopped_at
    assert not signals[1].is_set() and not signals[2].is_set()
    check_exactly_once(outs, per_producer)
    assert ring.pushed == ring.popped == N_PRODUCERS * per_producer
