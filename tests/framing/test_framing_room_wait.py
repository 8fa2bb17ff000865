"""How a LineFramer waits for room in a full ring (``lp_wait_room``).

A framer whose last wait for room was short spins up to 50 us before it
parks, so that a busy worker does not pay a futex wake for every batch it
frees; after a long wait it parks at once, so that a slow consumer costs
no CPU. These tests check what users rely on either way: every line
arrives once and in order, with the spin on and off, whatever the
consumer's pace; and a slow consumer does not make the framer spin (a
closed ring ending a wait, spinning or parked, is in test_framing_lines.py).
None asserts on speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from _corpus import make_corpus

import logpipe._ringbuf as ringbuf
from logpipe import Empty, RingBuffer
from logpipe._framing import LineFramer

JOIN = 30.0  # seconds a helper thread gets to finish once it should
ROOM_SPIN_US = 50.0  # lp_wait_room's longest spin


@pytest.fixture(params=[True, False], ids=["spin", "no-spin"])
def bulk_spin(request: pytest.FixtureRequest) -> Iterator[bool]:
    was = ringbuf._set_bulk_spin(request.param)
    try:
        yield request.param
    finally:
        ringbuf._set_bulk_spin(was)


def consume(ring: RingBuffer, got: list[bytes], done: threading.Event, pause_every: int, pause: float) -> None:
    """Take batches of up to 50 until ``done`` and the ring is empty; every
    ``pause_every`` batches sleep ``pause`` (a slow write)."""
    batches = 0
    while not done.is_set() or len(ring):
        try:
            got.extend(ring.get_many(50, timeout=0.01))
        except Empty:
            continue
        batches += 1
        if pause_every and batches % pause_every == 0:
            time.sleep(pause)


@pytest.mark.parametrize(
    ("pause_every", "pause"),
    [(0, 0.0), (7, 0.0005), (1, 0.002)],
    ids=["busy-consumer", "uneven-consumer", "slow-consumer"],
)
def test_every_line_arrives_once_in_order(bulk_spin: bool, pause_every: int, pause: float) -> None:
    """Production-like lines (CRLF, blank, KiB stack traces, lines over the
    limit, invalid UTF-8) through a 64-record ring that a consumer of the
    given pace drains: the records are exactly the framing rule's, in order."""
    corpus = make_corpus(seed=91, lines=3000 if pause_every == 1 else 20_000, max_record_size=65536)
    ring = RingBuffer(64, max_record_size=65536)
    framer = LineFramer(ring, max_line=65536)
    got: list[bytes] = []
    done = threading.Event()
    consumer = threading.Thread(target=consume, args=(ring, got, done, pause_every, pause), daemon=True)
    consumer.start()
    try:
        step = 256 * 1024  # as a source reads: a receive's worth at a time
        for start in range(0, len(corpus.data), step):
            framer.feed(corpus.data[start : start + step])
        framer.finish()
    finally:
        done.set()
        consumer.join(JOIN)
    assert not consumer.is_alive()
    assert got == corpus.records
    assert framer.too_long == len(corpus.too_long)
    assert ring.put_waits + ring.pushed > 0  # the framer did wait: the ring is far smaller than the input


def cpu_per_wait_with_a_slow_consumer(spin: bool) -> float:
    """Feed 960 lines into an 8-record ring that a consumer empties every
    3 ms; the feeding thread's CPU time per park, in microseconds (thread
    CPU time, not wall time: a loaded machine adds little to it)."""
    was = ringbuf._set_bulk_spin(spin)
    try:
        ring = RingBuffer(8)
        framer = LineFramer(ring, max_line=100)
        lines = [b"line %06d" % i for i in range(8 * 120)]
        got: list[bytes] = []
        done = threading.Event()

        def slow_consumer() -> None:
            while not done.is_set() or len(ring):
                time.sleep(0.003)
                got.extend(ring.get_many(8, block=False) if len(ring) else [])

        consumer = threading.Thread(target=slow_consumer, daemon=True)
        consumer.start()
        try:
            cpu = time.thread_time()
            framer.feed(b"\n".join(lines) + b"\n")
            cpu = time.thread_time() - cpu
        finally:
            done.set()
            consumer.join(JOIN)
    finally:
        ringbuf._set_bulk_spin(was)
    assert not consumer.is_alive()
    assert got == lines
    assert ring.put_waits >= 100  # it waited for nearly every batch, and parked
    return cpu / ring.put_waits * 1e6


def test_a_slow_consumer_does_not_make_the_framer_spin() -> None:
    """With a consumer that frees room only every 3 ms, the framer parks at
    once after its first long wait, so the spin costs it next to nothing
    per wait. A framer that spun before every park would add up to
    ROOM_SPIN_US of CPU to each wait (~50 us measured when it did, against
    ~25 us a wait without the spin). Both settings run here, twice and
    interleaved, and the cheapest of each is compared, so the machine's
    load (which makes every wait dearer) falls on both."""
    without, with_spin = [], []
    for _ in range(2):
        without.append(cpu_per_wait_with_a_slow_consumer(False))
        with_spin.append(cpu_per_wait_with_a_slow_consumer(True))
    extra = min(with_spin) - min(without)
    assert extra < ROOM_SPIN_US / 2, (
        f"the spin added {extra:.1f} us of CPU per wait (without: {without}, with: {with_spin})"
    )


def test_set_bulk_spin_returns_the_previous_setting() -> None:
    was = ringbuf._set_bulk_spin(False)
    try:
        assert ringbuf._set_bulk_spin(True) is False
        assert ringbuf._set_bulk_spin(True) is True
    finally:
        ringbuf._set_bulk_spin(was)
