"""A getter gathering a batch is woken once its batch can be had, not by every put.

``get_batch(n, timeout)`` that has fewer than ``n`` records parks with its
need noted (``lp_wait_gather``): puts wake it once that many records are
in the ring, or a putter starts waiting for room, or the ring closes, or
its stop signal is set, or its deadline passes; a plain getter waiting at
the same time is still woken by every put. Each test below fails if one of
those wake-ups is missing (the call would return only at its timeout, set
far beyond the test's bound) or if the puts woke the gatherer per record.
"""

from __future__ import annotations

import random
import time

import pytest

from _support import join_all, start_daemon, wait_until
from logpipe import Full, RingBuffer, StopSignal

FAR = 30.0  # a gatherer's timeout: a test that waits for it has failed
PROMPT = 5.0  # how long a wake-up may take on a loaded machine


def _gathering(ring: RingBuffer) -> bool:
    """A getter is inside the ring's wait (spinning or parked)."""
    return ring._wait_state()[0] > 0


def _parked_getters(ring: RingBuffer, before: int) -> bool:
    return ring.get_waits > before


def test_a_trickle_wakes_the_gatherer_once_a_batch_not_once_a_record() -> None:
    """400 records, one every ~0.3 ms, gathered 50 at a time: a handful of wake-ups, every record in order."""
    ring = RingBuffer(1024)
    batches: list[list[bytes]] = []

    def gather() -> None:
        taken = 0
        while taken < 400:
            batch = ring.get_batch(50, FAR)
            batches.append(bytes(batch).splitlines())
            taken += len(batch)

    consumer = start_daemon(gather)
    for i in range(400):
        ring.put(b"%d" % i)
        time.sleep(0.0003)
    join_all([consumer], timeout=60)
    assert [record for batch in batches for record in batch] == [b"%d" % i for i in range(400)]
    assert all(len(batch) == 50 for batch in batches)
    # Before, every put woke the parked gatherer: ~400 wake-ups and parks.
    assert ring.get_wakes <= 40, f"{ring.get_wakes} wake-ups for 8 batches"
    assert ring.get_waits <= 40, f"{ring.get_waits} parks for 8 batches"


def test_a_putter_waiting_for_room_has_the_gatherer_make_it() -> None:
    """A ring full by its byte budget long before the batch of 500 is: each waiting putter wakes the
    gatherer, which takes what is there, so the producer never stalls (its puts would raise Full)."""
    ring = RingBuffer(1000, max_record_size=100, max_bytes=1000)  # 10 records of 100 bytes fill it
    stop = StopSignal(ring)
    got: list[bytes] = []
    consumer = start_daemon(lambda: got.extend(bytes(ring.get_batch(500, FAR, stop=stop)).splitlines()))
    started = time.monotonic()
    for i in range(100):
        ring.put(b"%03d" % i + b"x" * 97, timeout=PROMPT)
    elapsed = time.monotonic() - started
    stop.set()
    join_all([consumer], timeout=PROMPT)
    assert [record[:3] for record in got] == [b"%03d" % i for i in range(100)]
    assert elapsed < PROMPT


def test_a_need_beyond_half_the_capacity_is_met_at_half() -> None:
    """get_batch(100) on a ring of 8: four records (half of it) wake it to take them, making room,
    though its batch waits on for the rest (until its stop signal here)."""
    ring = RingBuffer(8)
    stop = StopSignal(ring)
    got: list[int] = []
    before = ring.get_waits
    consumer = start_daemon(lambda: got.append(len(ring.get_batch(100, FAR, stop=stop))))
    assert wait_until(lambda: _parked_getters(ring, before), timeout=PROMPT)
    ring.put_many([b"a", b"b", b"c", b"d"])
    assert wait_until(lambda: len(ring) == 0, timeout=PROMPT), "the four records were left in the ring"
    assert consumer.is_alive()  # 4 of 100: the batch goes on gathering
    ring.put_many([b"e", b"f", b"g"])  # fewer than half: they wait in the ring
    time.sleep(0.05)
    stop.set()
    join_all([consumer], timeout=PROMPT)
    assert got == [7]


def test_a_plain_getter_is_still_woken_by_each_put_beside_a_gatherer() -> None:
    """A get() parked beside a gathering get_batch(50) has its record at once; the gatherer its 50 after."""
    ring = RingBuffer(1024)
    gathered: list[list[bytes]] = []
    single: list[bytes] = []
    before = ring.get_waits
    gatherer = start_daemon(lambda: gathered.append(bytes(ring.get_batch(50, FAR)).splitlines()))
    assert wait_until(lambda: _parked_getters(ring, before), timeout=PROMPT)
    getter = start_daemon(lambda: single.append(ring.get(timeout=FAR)))
    assert wait_until(lambda: _parked_getters(ring, before + 1), timeout=PROMPT)
    ring.put(b"first")
    join_all([getter], timeout=PROMPT)
    assert single == [b"first"]
    assert gatherer.is_alive() and not gathered  # one record in the ring is not its batch
    ring.put_many([b"%d" % i for i in range(50)])
    join_all([gatherer], timeout=PROMPT)
    assert gathered == [[b"%d" % i for i in range(50)]]


@pytest.mark.parametrize("how", ["close", "stop"])
def test_close_and_stop_end_a_gathering_wait(how: str) -> None:
    """Three records of a batch of 50: close() hands them over, StopSignal.set() too."""
    ring = RingBuffer(1024)
    stop = StopSignal(ring)
    got: list[list[bytes]] = []
    ring.put_many([b"a", b"b", b"c"])
    before = ring.get_waits
    consumer = start_daemon(lambda: got.append(bytes(ring.get_batch(50, FAR, stop=stop)).splitlines()))
    assert wait_until(lambda: _parked_getters(ring, before), timeout=PROMPT)
    started = time.monotonic()
    ring.close() if how == "close" else stop.set()
    join_all([consumer], timeout=PROMPT)
    assert got == [[b"a", b"b", b"c"]]
    assert time.monotonic() - started < PROMPT


def test_every_record_put_before_close_reaches_a_gatherer_at_once() -> None:
    """A gatherer short of its batch when the ring closes takes what is left and sees Closed, at once."""
    ring = RingBuffer(1024)
    got: list[int] = []

    def gather() -> None:
        total = 0
        while True:
            try:
                total += len(ring.get_batch(50, FAR))
            except Exception:  # Closed, once drained
                break
        got.append(total)

    ring.put_many([b"x"] * 7)
    consumer = start_daemon(gather)
    ring.put_many([b"y"] * 3)
    started = time.monotonic()
    ring.close()
    join_all([consumer], timeout=PROMPT)
    assert got == [10]
    assert time.monotonic() - started < PROMPT


def test_gatherers_and_getters_of_every_kind_lose_and_duplicate_nothing() -> None:
    """4 producers with random pauses, 4 consumers (get_batch of 1-64, held or not, get_many, get):
    every tagged record taken exactly once, each producer's records in order within every call."""
    ring = RingBuffer(256)
    producers, per_producer = 4, 3000
    taken: list[list[bytes]] = [[] for _ in range(4)]

    def produce(p: int) -> None:
        rng = random.Random(p)
        for i in range(per_producer):
            ring.put(b"%d:%d" % (p, i), timeout=FAR)
            if rng.random() < 0.02:
                time.sleep(rng.random() * 0.002)

    def consume(c: int) -> None:
        rng = random.Random(100 + c)
        while True:
            try:
                if c == 0:
                    calls = [ring.get(timeout=0.05)]
                elif c == 1:
                    calls = ring.get_many(rng.randint(1, 64), timeout=0.05)
                else:
                    batch = ring.get_batch(rng.randint(1, 64), rng.choice([0.001, 0.05, 0.5]), hold=c == 3)
                    calls = bytes(batch).splitlines()
                    batch.release()
            except Exception as exc:  # Empty: look again; Closed: drained, the end
                if type(exc).__name__ == "Closed":
                    return
                continue
            last: dict[bytes, int] = {}
            for record in calls:
                producer, index = record.split(b":")
                assert int(index) > last.get(producer, -1), "a call's records out of order"
                last[producer] = int(index)
            taken[c].extend(calls)

    consumers = [start_daemon(consume, c) for c in range(4)]
    makers = [start_daemon(produce, p) for p in range(producers)]
    join_all(makers, timeout=120)
    ring.close()
    join_all(consumers, timeout=PROMPT * 4)
    everything = sorted(record for part in taken for record in part)
    assert everything == sorted(b"%d:%d" % (p, i) for p in range(producers) for i in range(per_producer))
    assert ring._wait_state() == (0, 0, 0, 0)


@pytest.mark.parametrize("how", ["put_nowait", "put_many nonblocking"])
def test_a_put_that_gives_up_for_room_has_the_gatherer_make_it(how: str) -> None:
    """A ring full by its byte budget, a producer that does not wait for room (the logging handler's
    when_full="drop"): the put that finds no room wakes the gatherer, which takes what is there, so
    the next puts go in. Without that wake-up the ring stays full until the gatherer's timeout.
    (A blocking put wakes it as it starts to wait: test_a_putter_waiting_for_room_has_the_gatherer_make_it.)"""
    ring = RingBuffer(1000, max_record_size=100, max_bytes=1000)  # 10 records of 100 bytes fill it
    stop = StopSignal(ring)
    got: list[bytes] = []
    before = ring.get_waits
    consumer = start_daemon(lambda: got.extend(bytes(ring.get_batch(500, FAR, stop=stop)).splitlines()))
    assert wait_until(lambda: _parked_getters(ring, before), timeout=PROMPT)
    records = [b"%03d" % i + b"x" * 97 for i in range(30)]
    ring.put_many(records[:10])
    refused = records[10]
    if how == "put_nowait":
        with pytest.raises(Full):
            ring.put_nowait(refused)
    else:
        assert ring.put_many([refused], block=False) == 0
    assert wait_until(lambda: len(ring) == 0, timeout=PROMPT), "the gatherer was not woken to make room"
    for record in records[10:]:
        ring.put(record, timeout=PROMPT)  # the refused one again, and the rest
    stop.set()
    join_all([consumer], timeout=PROMPT)
    assert got == records


def test_a_held_batch_waits_for_its_records_before_it_takes_any() -> None:
    """get_batch(50, hold=True) with 5 records there and 45 to come: it takes nothing while it waits,
    so the whole batch comes held, to be written from the ring. (Taking the 5 first meant copying
    them out before the wait: a getter never waits holding slots.)"""
    ring = RingBuffer(1024)
    got: list = []
    ring.put_many([b"%d" % i for i in range(5)])
    before = ring.get_waits
    consumer = start_daemon(lambda: got.append(ring.get_batch(50, FAR, hold=True)))
    assert wait_until(lambda: _parked_getters(ring, before), timeout=PROMPT)
    assert len(ring) == 5  # nothing taken while it waits
    for i in range(5, 50):
        ring.put(b"%d" % i)
    join_all([consumer], timeout=PROMPT)
    (batch,) = got
    assert batch.held
    assert bytes(batch).splitlines() == [b"%d" % i for i in range(50)]
    batch.release()
    assert len(ring) == 0 and ring.nbytes == 0


@pytest.mark.parametrize("end", ["timeout", "stop", "close"])
def test_a_held_batch_short_of_its_records_ends_with_what_is_there(end: str) -> None:
    """A held gatherer whose batch never fills: at its timeout, stop signal or the ring's close it
    takes what is there, still held, and loses nothing."""
    ring = RingBuffer(1024)
    stop = StopSignal(ring)
    got: list = []
    ring.put_many([b"a", b"b"])
    timeout = 0.3 if end == "timeout" else FAR
    before = ring.get_waits
    consumer = start_daemon(lambda: got.append(ring.get_batch(50, timeout, stop=stop, hold=True)))
    assert wait_until(lambda: _parked_getters(ring, before), timeout=PROMPT)
    ring.put(b"c")
    if end == "stop":
        stop.set()
    elif end == "close":
        ring.close()
    join_all([consumer], timeout=PROMPT)
    (batch,) = got
    assert batch.held  # (before bytes(batch), which copies a held batch out)
    assert bytes(batch).splitlines() == [b"a", b"b", b"c"]
    batch.release()
    assert ring.nbytes == 0
