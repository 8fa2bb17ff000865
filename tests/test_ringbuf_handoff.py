"""The GIL hand-off between a Python producer and a Python consumer.

A Python caller whose wait in the ring has ended lingers without the GIL
while the other side keeps moving, and takes the GIL once that side waits
in turn (see "Handing the GIL over" in logpipe/_ringbuf.pyx). That must
never change what a call returns, lose, duplicate or reorder a record, or
leave the hand-off bookkeeping (waiting counts, linger tokens) behind; and a
side that stops moving, or keeps the GIL busy in Python, must not stall the
other. Each test below could fail on one of those.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from _support import join_all, start_daemon

from logpipe import Empty, Full, RingBuffer, StopSignal

IDLE = (0, 0, 0, 0)  # nobody waiting, nobody lingering


def transfer(ring: RingBuffer, count: int, put_style: str, get_style: str) -> list[bytes]:
    """One producer thread -> one consumer thread at the default switch interval."""
    received: list[bytes] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            if put_style == "put":
                for i in range(count):
                    ring.put(b"%d" % i)
            else:
                for first in range(0, count, 100):
                    chunk = [b"%d" % i for i in range(first, min(first + 100, count))]
                    assert ring.put_many(chunk) == len(chunk)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def consume() -> None:
        try:
            while len(received) < count:
                if get_style == "get":
                    received.append(ring.get())
                elif get_style == "get_many":
                    received.extend(ring.get_many(100))
                else:
                    received.extend(ring.get_batch(100, timeout=0.05))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    join_all([start_daemon(consume), start_daemon(produce)])
    assert not errors, errors
    return received


@pytest.mark.parametrize("capacity", [1, 64, 1500])
@pytest.mark.parametrize(
    "put_style, get_style", [("put", "get"), ("put_many", "get_many"), ("put_many", "get_batch")]
)
def test_one_producer_one_consumer_hand_off_keeps_every_record_in_order(
    capacity, put_style, get_style
):
    """Fill-and-drain turns (the lingering regime) move every record once, in order."""
    ring = RingBuffer(capacity)
    count = 30_000 if capacity > 1 else 3_000
    received = transfer(ring, count, put_style, get_style)
    assert received == [b"%d" % i for i in range(count)]
    assert ring._wait_state() == IDLE


def test_waits_that_time_out_or_are_stopped_leave_nothing_behind():
    """Empty/Full timeouts, a StopSignal and a non-blocking miss all undo their counts."""
    ring = RingBuffer(2)
    with pytest.raises(Empty):
        ring.get(timeout=0.01)
    with pytest.raises(Empty):
        ring.get_many(10, timeout=0.01)
    assert len(ring.get_batch(10, timeout=0.01)) == 0
    ring.put_many([b"a", b"b"])
    with pytest.raises(Full):
        ring.put(b"c", timeout=0.01)
    assert ring.put_many([b"c"], timeout=0.01) == 0
    assert ring._wait_state() == IDLE
    assert ring.get_many(2) == [b"a", b"b"]
    stop = StopSignal(ring)
    threading.Timer(0.05, stop.set).start()
    assert len(ring.get_batch(10, timeout=10, stop=stop)) == 0
    assert ring._wait_state() == IDLE


def test_a_wait_interrupted_by_a_signal_leaves_nothing_behind():
    """A handler that raises out of a blocked get ends the wait with the counts undone."""

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    ring = RingBuffer(4)
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        with pytest.raises(Interrupted):
            ring.get(timeout=10)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert ring._wait_state() == IDLE


def test_a_trickling_producer_is_never_waited_for():
    """A producer that pauses between records: each reaches the blocked consumer alone."""
    ring = RingBuffer(64)
    got: list[tuple[bytes, float]] = []

    def consume() -> None:
        for _ in range(20):
            got.append((ring.get(timeout=10), time.monotonic()))

    consumer = start_daemon(consume)
    sent = []
    for i in range(20):
        time.sleep(0.002)
        sent.append(time.monotonic())
        ring.put(b"%d" % i)
    join_all([consumer])
    assert [record for record, _ in got] == [b"%d" % i for i in range(20)]
    # The consumer had each record before the producer sent the next one
    # (the producer sleeps 2 ms between them): no linger waits for a batch.
    late = [i for i in range(19) if got[i][1] > sent[i + 1]]
    assert len(late) <= 2, f"records taken only after the next was sent: {late}"


def test_a_producer_that_keeps_the_gil_busy_does_not_stall_the_consumer():
    """After its put, the producer runs pure Python for 0.3 s: the consumer still gets the record."""
    ring = RingBuffer(8)
    got: list[bytes] = []
    busy_until = []

    def consume() -> None:
        got.append(ring.get(timeout=10))
        got.append(b"at %f" % time.monotonic())

    consumer = start_daemon(consume)
    time.sleep(0.05)  # the consumer is parked in get()
    ring.put(b"x")
    end = time.monotonic() + 0.3
    spins = 0
    while time.monotonic() < end:  # holds the GIL but for the interpreter's switches
        spins += 1
    busy_until.append(end)
    join_all([consumer])
    assert got[0] == b"x"
    # It got the GIL at a switch interval while the producer was still busy.
    assert float(got[1][3:]) < busy_until[0], "the consumer waited for the producer to go idle"
    assert ring._wait_state() == IDLE


def test_on_one_cpu_the_hand_off_still_moves_everything():
    """Pinned to one CPU (where lingering is off), 1 -> 1 threads move every record in order."""
    code = textwrap.dedent(
        """
        import os, threading
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        from logpipe import RingBuffer
        ring = RingBuffer(16)
        got = []
        def consume():
            while len(got) < 20000:
                got.extend(ring.get_many(100))
        t = threading.Thread(target=consume, daemon=True)
        t.start()
        for first in range(0, 20000, 50):
            ring.put_many([b"%d" % i for i in range(first, first + 50)])
        t.join(60)
        assert not t.is_alive(), "consumer stuck"
        assert got == [b"%d" % i for i in range(20000)]
        assert ring._wait_state() == (0, 0, 0, 0)
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_consumer_never_lingers_behind_a_producer_that_pushes_without_the_gil():
    """The batch encoder pushes with the GIL let go: nobody to linger for.

    A third thread samples the getter's linger token while a get_batch
    consumer drains a ring that put_logs fills; a consumer that lingered
    behind it (up to 200 us a batch, with the GIL free) would be seen.
    """
    import numpy as np
    import orjson

    from logpipe._encoder import put_logs

    count = 400_000
    ring = RingBuffer(16384)
    seen_lingering = []
    taken = [0]
    done = threading.Event()

    def consume() -> None:
        while taken[0] < count:
            taken[0] += len(ring.get_batch(1024, timeout=1.0))
        done.set()

    def sample() -> None:
        while not done.is_set():
            if ring._wait_state()[2]:
                seen_lingering.append(ring.popped)
            time.sleep(0)

    threads = [start_daemon(consume), start_daemon(sample)]
    seqs = np.arange(count, dtype=np.uint64)
    ts = np.zeros(count, dtype=np.int64)
    assert put_logs(ring, seqs, ts, orjson.dumps("m"), orjson.dumps("INFO")) == count
    join_all(threads)
    assert taken[0] == count
    assert not seen_lingering, f"the consumer lingered behind a nogil producer {len(seen_lingering)} times"
    assert ring._wait_state() == IDLE


def test_on_one_cpu_a_woken_waiter_costs_one_wake_not_one_per_record():
    """A waiter woken but not yet run (one CPU) is not woken again by every put.

    The consumer parks on an empty ring; the producer's first put wakes it,
    but on one CPU it runs only when the producer lets go of the CPU. Each
    further put used to make a futex system call of its own in that time
    (the waiter was still registered): the event is now disarmed by the
    first wake, and re-armed only when a waiter registers again.
    """
    code = textwrap.dedent(
        """
        import os, threading
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        from logpipe import RingBuffer
        count = 30000
        ring = RingBuffer(1500)
        got = []
        def consume():
            for _ in range(count):
                got.append(ring.get())
        t = threading.Thread(target=consume, daemon=True)
        t.start()
        for i in range(count):
            ring.put(b"%d" % i)
        t.join(60)
        assert not t.is_alive(), "consumer stuck"
        assert got == [b"%d" % i for i in range(count)]
        print(ring.get_wakes, ring.put_wakes, ring.get_waits, ring.put_waits)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    get_wakes, put_wakes, get_waits, put_waits = map(int, done.stdout.split())
    # About one wake per park (20 fills and drains of the ring here), far
    # from one per record.
    assert get_wakes + put_wakes <= 2 * (get_waits + put_waits) + 10, done.stdout
    assert get_wakes + put_wakes < 30000 // 20, done.stdout
