"""RingBuffer as a drop-in for queue.Queue: the stdlib names, shutdown(), byte room.

Two halves:

* CPython's own ``Lib/test/test_queue.py`` (loaded from this interpreter's
  ``test`` package, never copied) runs its FIFO ``queue.Queue`` and
  ``SimpleQueue`` tests, and on 3.13 its shutdown tests, against a ring
  through ``Queue`` below: the thinnest honest adapter, which pickles items
  to bytes on put and back on get and leaves everything else to the ring.
  The tests catch the stdlib's own ``queue.Full`` / ``queue.Empty`` /
  ``queue.ShutDown``. What does not apply, and why, is listed where it is
  left out and in docs/ringbuffer.md.
* Our own tests of the same API on bytes: qsize/empty/full under a byte
  bound, fits()/free_bytes, Closed as a queue.ShutDown, task_done()/join(),
  the whole surface against a model (hypothesis), and shutdown(immediate=True)
  racing with producers (also mid-copy) and consumers.
"""

from __future__ import annotations

import importlib
import pickle
import queue as stdlib_queue
import random
import signal
import struct
import sys
import threading
import time
import unittest

import pytest
from _support import examples, wait_until
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from logpipe import Closed, Empty, Full, RingBuffer
from logpipe.exceptions import LogpipeError

JOIN = 10.0  # seconds a thread gets to finish once it should


# --------------------------------------------------------------------------
# CPython's test_queue, through the thinnest adapter

# "Unbounded" (maxsize <= 0) has no ring equivalent: a ring always has a
# capacity. The stand-in holds twice what any of these tests holds at once
# (the 3.13 many-threads shutdown test puts 64 Ki items).
UNBOUNDED_STAND_IN = 1 << 17


class Queue:
    """queue.Queue's interface on a RingBuffer, for CPython's tests.

    Items are pickled to bytes on the way in and unpickled on the way out;
    every other name (qsize, empty, full, maxsize, task_done, join,
    unfinished_tasks, shutdown, is_shutdown) is the ring's own, unchanged.
    Named ``Queue`` because CPython's basic test picks the expected order
    (FIFO) by the class name.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self._ring = RingBuffer(maxsize if maxsize > 0 else UNBOUNDED_STAND_IN)

    def put(self, item, block=True, timeout=None):
        self._ring.put(pickle.dumps(item), block, timeout)

    def put_nowait(self, item):
        self._ring.put_nowait(pickle.dumps(item))

    def get(self, block=True, timeout=None):
        return pickle.loads(self._ring.get(block, timeout))

    def get_nowait(self):
        return pickle.loads(self._ring.get_nowait())

    def __getattr__(self, name):
        return getattr(self._ring, name)


try:
    cpython_test_queue = importlib.import_module("test.test_queue")
except ImportError as exc:  # a Python built without its test suite (Debian: libpython3.X-testsuite)
    cpython_test_queue = None
    CPYTHON_SUITE_MISSING = f"CPython's test.test_queue cannot be imported ({exc})"


def test_cpython_test_queue_is_available():
    """This interpreter ships CPython's test_queue, so the classes below run
    (CI's pyenv 3.11, 3.12 and 3.13 all do). Deselect with
    ``-k 'not cpython'`` on an interpreter packaged without its test suite."""
    assert cpython_test_queue is not None, CPYTHON_SUITE_MISSING


if cpython_test_queue is not None:

    class TestCPythonQueue(cpython_test_queue.BaseQueueTestMixin, unittest.TestCase):
        """CPython's queue.Queue tests (FIFO; on 3.13 also every shutdown test), on a ring."""

        queue = stdlib_queue  # the tests catch the stdlib's Full, Empty and ShutDown

        def setUp(self):
            self.type2test = Queue
            super().setUp()

        # Does not apply: it shrinks a live queue (q.maxsize = 2); a ring's
        # capacity is fixed at construction and maxsize is read-only.
        test_shrinking_queue = None

    class TestCPythonSimpleQueue(cpython_test_queue.BaseSimpleQueueTest, unittest.TestCase):
        """CPython's SimpleQueue tests (unbounded FIFO, many threads), on a ring."""

        queue = stdlib_queue

        def setUp(self):
            self.type2test = Queue
            super().setUp()

        # Does not apply: it checks that the queue drops its reference to an
        # item once got. A ring holds copies of bytes, never references (and
        # the test's local class cannot be pickled).
        test_references = None
        # The C SimpleQueue's reentrancy test (put from a __del__ run by the
        # GC in the middle of a put or get) applies to a lock-free ring too.
        test_reentrancy = cpython_test_queue.CSimpleQueueTest.test_reentrancy


# --------------------------------------------------------------------------
# helpers


def run_thread(fn, *args) -> dict:
    """Start ``fn(*args)`` in a daemon thread; the dict gets 'result' or 'error'."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - kept for the test to inspect
            box["error"] = exc

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


def joined(box: dict, timeout: float = JOIN) -> dict:
    box["thread"].join(timeout)
    assert not box["thread"].is_alive(), "thread still blocked after the join timeout"
    return box


def filled(ring: RingBuffer, sizes) -> list[bytes]:
    """Put one record of each size (bytes that are not UTF-8); return them."""
    records = [bytes([0xFF, 0xFE]) * (n // 2) + b"\x80" * (n % 2) for n in sizes]
    for record in records:
        ring.put_nowait(record)
    return records


# --------------------------------------------------------------------------
# qsize / empty / full / maxsize / free_bytes / fits


def test_stdlib_names_report_records_and_bytes():
    """qsize/empty/full/maxsize/free_bytes follow every put and get, with
    records inline, at the inline limit and out of line."""
    ring = RingBuffer(4, slot_size=64, max_record_size=600, max_bytes=1000)  # inline up to 48
    assert (ring.maxsize, ring.qsize(), ring.empty(), ring.full(), ring.free_bytes) == (4, 0, True, False, 1000)
    held = 0
    for count, size in enumerate([10, 48, 49, 500], start=1):
        filled(ring, [size])
        held += size
        assert ring.qsize() == len(ring) == count
        assert not ring.empty()
        assert ring.free_bytes == 1000 - held == ring.max_bytes - ring.nbytes
        assert ring.full() is (count == 4)
    for count, size in zip([3, 2, 1, 0], [10, 48, 49, 500]):
        assert len(ring.get_nowait()) == size
        held -= size
        assert (ring.qsize(), ring.empty(), ring.full(), ring.free_bytes) == (count, count == 0, False, 1000 - held)


def test_full_by_bytes_while_records_remain():
    """On a byte-bounded ring a put can be refused while usage < 1.0: fits()
    says which sizes would go in, and full() turns True (usage 1.0) only when
    the budget is spent; then only an empty record still fits."""
    ring = RingBuffer(8, max_record_size=1024, max_bytes=1024)
    filled(ring, [1000])
    assert ring.usage < 1.0 and not ring.full() and ring.free_bytes == 24
    assert ring.fits(24) and not ring.fits(25)
    with pytest.raises(Full):
        ring.put_nowait(b"x" * 25)
    ring.put_nowait(b"x" * 24)
    assert ring.full() and ring.usage == 1.0 and ring.free_bytes == 0
    assert ring.fits(0) and not ring.fits(1)
    ring.put_nowait(b"")
    assert len(ring) == 3


def test_fits_at_each_limit():
    """fits() is False one byte over max_record_size, when every slot is
    taken (whatever the bytes), and on a closed ring; bad sizes are refused."""
    ring = RingBuffer(2, max_record_size=300, max_bytes=1000)
    assert ring.fits(0) and ring.fits(300) and not ring.fits(301) and not ring.fits(1 << 70)
    filled(ring, [1, 1])
    assert ring.free_bytes == 998 and not ring.fits(0)
    ring.get_nowait()
    assert ring.fits(300)
    ring.close()
    assert not ring.fits(0)
    with pytest.raises(ValueError, match="nbytes must be >= 0, got -1"):
        ring.fits(-1)
    for bad in (1.0, True, "3", None):
        with pytest.raises(TypeError, match="nbytes must be an integer"):
            ring.fits(bad)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fits_predicts_put_nowait(seed):
    """Single-threaded, fits(n) is exactly whether put_nowait of n bytes
    succeeds, over a random mix of puts and gets of KiB-sized and tiny
    records on a ring bounded by both records and bytes."""
    rng = random.Random(seed)
    ring = RingBuffer(16, slot_size=64, max_record_size=4096, max_bytes=8192)
    model: list[int] = []
    for _ in range(3000):
        if rng.random() < 0.55:
            size = rng.choice([0, 1, 47, 48, 49, 700, 1500, 4096, 4097])
            predicted = ring.fits(size)
            try:
                ring.put_nowait(b"\xff" * size)
                taken = True
            except (Full, ValueError):
                taken = False
            assert taken is predicted, (size, model)
            if taken:
                model.append(size)
        elif model:
            assert len(ring.get_nowait()) == model.pop(0)
        assert ring.qsize() == len(model) and ring.free_bytes == 8192 - sum(model)
        assert ring.full() is (len(model) == 16 or sum(model) == 8192)


def test_maxsize_is_read_only():
    """maxsize is the capacity and cannot be changed on a live ring."""
    ring = RingBuffer(7)
    assert ring.maxsize == ring.capacity == 7
    with pytest.raises(AttributeError):
        ring.maxsize = 2


# --------------------------------------------------------------------------
# Closed as queue.ShutDown

# Every except clause that must stop a loop on a closed ring. queue.ShutDown
# exists from 3.13: listed only there, so no version skips anything.
CLOSED_CATCHERS = [Closed, LogpipeError] + ([stdlib_queue.ShutDown] if hasattr(stdlib_queue, "ShutDown") else [])


@pytest.mark.parametrize("catcher", CLOSED_CATCHERS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_closed_is_caught_as(catcher):
    """After shutdown(), put and a drained get raise an error that ``except
    Closed``, ``except LogpipeError`` and (3.13+) ``except queue.ShutDown`` catch."""
    ring = RingBuffer(4)
    ring.put(b"last")
    ring.shutdown()
    with pytest.raises(catcher):
        ring.put(b"late")
    assert ring.get() == b"last"
    with pytest.raises(catcher):
        ring.get()


def test_closed_is_neither_empty_nor_full():
    """Closed is not a queue.Empty or queue.Full, so a loop that retries on
    those does not spin forever on a closed ring."""
    assert not issubclass(Closed, (stdlib_queue.Empty, stdlib_queue.Full))
    assert (getattr(stdlib_queue, "ShutDown", None) in Closed.__mro__) is (sys.version_info >= (3, 13))


# --------------------------------------------------------------------------
# shutdown()


def test_shutdown_not_immediate_is_close():
    """shutdown() is close(): puts refused, gets drain in order, then raise
    Closed; a getter parked on an empty ring wakes with Closed."""
    ring = RingBuffer(4)
    records = filled(ring, [3, 200])
    ring.shutdown()
    assert ring.is_shutdown and ring.closed
    with pytest.raises(Closed):
        ring.put_nowait(b"x")
    assert [ring.get(), ring.get()] == records
    with pytest.raises(Closed):
        ring.get(timeout=None)

    empty = RingBuffer(4)
    getter = run_thread(empty.get)
    assert wait_until(lambda: empty.get_waits >= 1)
    empty.shutdown(immediate=False)
    assert isinstance(joined(getter)["error"], Closed)


def test_shutdown_immediate_discards_and_frees():
    """shutdown(immediate=True) empties the ring: out-of-line copies freed,
    the byte budget whole again, counters balanced, unfinished tasks gone;
    every get (blocking or not, one, many or a batch) raises Closed at once."""
    ring = RingBuffer(8, slot_size=64, max_record_size=4096, max_bytes=1 << 16)
    filled(ring, [0, 48, 49, 4096, 1])
    ring.get_nowait()
    ring.task_done()
    ring.shutdown(immediate=True)
    assert (len(ring), ring.nbytes, ring.free_bytes) == (0, 0, 1 << 16)
    assert (ring.pushed, ring.popped, ring.discarded) == (5, 5, 4)
    assert ring.unfinished_tasks == 0 and ring.is_shutdown and ring.empty()
    calls = [ring.get, ring.get_nowait, lambda: ring.get_many(10), lambda: ring.get_batch(10)]
    for call in calls:
        assert isinstance(joined(run_thread(call))["error"], Closed)
    with pytest.raises(Closed):
        ring.put(b"x")
    with pytest.raises(ValueError, match="task_done"):
        ring.task_done()
    joined(run_thread(ring.join))


def test_shutdown_immediate_wakes_blocked_putters_and_getters():
    """Putters parked on a full ring and getters parked on an empty one all
    wake with Closed; a refused put's record never enters (pushed unchanged)."""
    full = RingBuffer(2)
    filled(full, [5, 5])
    putters = [run_thread(full.put, b"p" * n) for n in (1, 300)]
    assert wait_until(lambda: full.put_waits >= 2)
    full.shutdown(immediate=True)
    assert all(isinstance(joined(p)["error"], Closed) for p in putters)
    assert (full.pushed, full.discarded, full.nbytes) == (2, 2, 0)

    empty = RingBuffer(2)
    getters = [run_thread(empty.get), run_thread(empty.get_batch, 5), run_thread(empty.get_many, 5)]
    assert wait_until(lambda: empty.get_waits >= 3)
    empty.shutdown(immediate=True)
    assert all(isinstance(joined(g)["error"], Closed) for g in getters)


def test_shutdown_transitions():
    """close() then shutdown(immediate=True) discards what close() left;
    repeating either is harmless."""
    ring = RingBuffer(4)
    filled(ring, [1, 2, 3])
    ring.close()
    assert ring.get() == b"\x80"
    ring.shutdown(immediate=True)
    ring.shutdown(immediate=True)
    ring.shutdown()
    ring.close()
    assert (ring.discarded, len(ring), ring.popped) == (2, 0, 3)


def test_concurrent_immediate_shutdowns_discard_each_record_once():
    """Four threads calling shutdown(immediate=True) at once discard every
    record exactly once between them."""
    ring = RingBuffer(4096)
    filled(ring, [random.Random(5).choice([0, 17, 200, 2000]) for _ in range(4000)])
    barrier = threading.Barrier(4)

    def shut():
        barrier.wait()
        ring.shutdown(immediate=True)

    for t in [run_thread(shut) for _ in range(4)]:
        assert "error" not in joined(t)
    assert (ring.discarded, ring.popped, len(ring), ring.nbytes) == (4000, 4000, 0, 0)


# --------------------------------------------------------------------------
# task_done() / join()


def test_task_done_counts_and_refuses_extra_calls():
    """Each record put is a task; task_done(count) marks several (a batch);
    one call too many raises ValueError and marks nothing."""
    ring = RingBuffer(64)
    with pytest.raises(ValueError, match="task_done\\(\\) called too many times"):
        ring.task_done()
    ring.put_many([b"r%d" % i for i in range(10)])
    assert ring.unfinished_tasks == 10
    batch = ring.get_batch(10, timeout=0)
    ring.task_done(len(batch) - 1)
    assert ring.unfinished_tasks == 1
    with pytest.raises(ValueError, match="too many"):
        ring.task_done(2)
    assert ring.unfinished_tasks == 1
    ring.task_done()
    assert ring.unfinished_tasks == 0
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="count must be an integer >= 1"):
            ring.task_done(bad)


def test_join_waits_for_the_last_task_done():
    """join() returns at once with nothing unfinished, otherwise only after
    the last task_done(); a shut-down ring alone does not end the wait."""
    ring = RingBuffer(8)
    joined(run_thread(ring.join))
    filled(ring, [3, 3])
    waiter = run_thread(ring.join)
    ring.get()
    ring.task_done()
    ring.shutdown()
    waiter["thread"].join(0.2)
    assert waiter["thread"].is_alive(), "join returned with a task unfinished"
    ring.get()
    ring.task_done()
    assert "error" not in joined(waiter)


def test_join_wakes_when_an_immediate_shutdown_discards_the_rest():
    """Records discarded by shutdown(immediate=True) count as done: join()
    waiters wake once every record taken was marked done."""
    ring = RingBuffer(8)
    filled(ring, [10, 10, 10])
    ring.get()
    ring.task_done()
    waiters = [run_thread(ring.join) for _ in range(3)]
    time.sleep(0.05)  # let them park (had they not, they would return at once: the test still holds)
    ring.shutdown(immediate=True)
    for w in waiters:
        assert "error" not in joined(w)
    assert ring.unfinished_tasks == 0 and ring.discarded == 2


class Interrupted(Exception):
    pass


def test_a_signal_handler_interrupts_join():
    """join() in the main thread wakes for a signal: the handler's exception
    ends the wait at once (a watchdog marks the task done if it never does,
    so a regression fails instead of hanging); a handler that returns lets
    join wait on until the last task_done()."""
    ring = RingBuffer(4)
    ring.put(b"task")
    calls = []

    def handler(signum, frame):
        calls.append(signum)
        if len(calls) == 1:
            raise Interrupted()

    old = signal.signal(signal.SIGALRM, handler)
    dog = threading.Timer(10, ring.task_done)
    try:
        dog.start()
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupted):
            ring.join()
        assert ring.unfinished_tasks == 1, "the watchdog had to end the join: the signal did not wake it"
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # this handler returns: join goes on waiting
        threading.Timer(0.3, ring.task_done).start()
        ring.join()
        assert len(calls) == 2 and ring.unfinished_tasks == 0
    finally:
        dog.cancel()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------
# the whole queue.Queue surface against a model


class QueueSurfaceMachine(RuleBasedStateMachine):
    """Random sequences of put_nowait, get_nowait, get_many, task_done(n),
    shutdown() and shutdown(immediate=True) on a ring bounded by records and
    bytes agree with a model of queue.Queue's rules at every step: results,
    errors, qsize/empty/full/free_bytes/fits, unfinished_tasks, discarded."""

    CAPACITY, MAX_BYTES = 6, 600

    def __init__(self):
        super().__init__()
        self.ring = RingBuffer(self.CAPACITY, slot_size=64, max_record_size=400, max_bytes=self.MAX_BYTES)
        self.items: list[bytes] = []
        self.closed = False
        self.pushed = self.done = self.discarded = 0

    @rule(size=st.sampled_from([0, 1, 47, 48, 49, 150, 400]), byte=st.integers(0, 255))
    def put(self, size, byte):
        record = bytes([byte]) * size
        room = len(self.items) < self.CAPACITY and sum(map(len, self.items)) + size <= self.MAX_BYTES
        assert self.ring.fits(size) is (room and not self.closed)
        expected = Closed if self.closed else (None if room else Full)
        try:
            self.ring.put_nowait(record)
            outcome = None
        except (Closed, Full) as exc:
            outcome = type(exc)
        assert outcome is expected
        if outcome is None:
            self.items.append(record)
            self.pushed += 1

    @rule(many=st.integers(1, 4))
    def get(self, many):
        if not self.items:
            with pytest.raises(Closed if self.closed else Empty):
                self.ring.get_many(many, block=False) if many > 1 else self.ring.get_nowait()
            return
        if many == 1:
            assert self.ring.get_nowait() == self.items.pop(0)
        else:
            taken, self.items = self.items[:many], self.items[many:]
            assert self.ring.get_many(many, block=False) == taken

    @rule(count=st.integers(1, 3))
    def task_done(self, count):
        if self.done + count > self.pushed:
            with pytest.raises(ValueError):
                self.ring.task_done(count)
        else:
            self.ring.task_done(count)
            self.done += count

    @rule(immediate=st.booleans())
    def shutdown(self, immediate):
        self.ring.shutdown(immediate=immediate)
        self.closed = True
        if immediate:
            self.discarded += len(self.items)
            self.done = min(self.pushed, self.done + len(self.items))
            self.items = []

    @invariant()
    def agrees(self):
        held = sum(map(len, self.items))
        ring = self.ring
        assert (ring.qsize(), ring.empty(), ring.free_bytes) == (len(self.items), not self.items, self.MAX_BYTES - held)
        assert ring.full() is (len(self.items) == self.CAPACITY or held == self.MAX_BYTES)
        assert (ring.unfinished_tasks, ring.discarded, ring.is_shutdown) == (self.pushed - self.done, self.discarded, self.closed)
        assert ring.pushed == self.pushed and ring.maxsize == self.CAPACITY


QueueSurfaceMachine.TestCase.settings = settings(
    max_examples=examples(80), stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_queue_surface_agrees_with_a_model = QueueSurfaceMachine.TestCase


# --------------------------------------------------------------------------
# shutdown(immediate=True) in the middle of a run

SIZES = [0, 1, 7, 110, 111, 112, 113, 600, 1024, 3000]  # around the default inline limit (111), KiB lines
HEADER = struct.Struct("<HI")  # producer, seq


def record(producer: int, seq: int) -> bytes:
    """A tagged record whose body is derived from its tag (invalid UTF-8 included)."""
    size = SIZES[(seq * 7 + producer) % len(SIZES)]
    return HEADER.pack(producer, seq) + bytes([0x80 | (seq + producer) & 0x7F]) * size


def check(rec: bytes) -> tuple[int, int]:
    producer, seq = HEADER.unpack_from(rec)
    assert rec == record(producer, seq), f"record {producer}/{seq} corrupted"
    return producer, seq


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_immediate_shutdown_mid_run_loses_and_duplicates_nothing(seed):
    """3 producers (put, big put_many chunks copied without the GIL, put of
    KiB records) and 3 consumers (get, get_many, get_batch, each calling
    task_done) run on a small ring bounded in records and bytes, plus a
    join() waiter; shutdown(immediate=True) lands mid-run while the ring is
    at least half full. Every thread ends within the timeout; every record
    delivered was put, intact, once, in per-producer order; and the counts
    balance: put = delivered + discarded = pushed = popped, nothing left."""
    rng = random.Random(seed)
    ring = RingBuffer(64, max_bytes=48 * 1024, max_record_size=4096)
    put_ok: list[list[tuple[int, int]]] = [[] for _ in range(3)]
    got: list[list[tuple[int, int]]] = [[] for _ in range(3)]

    def produce_one_by_one(p):
        seq = 0
        while True:
            try:
                ring.put(record(p, seq))
            except Closed:
                return
            put_ok[p].append((p, seq))
            seq += 1

    def produce_in_chunks(p):
        seq = 0
        while True:
            chunk = [record(p, s) for s in range(seq, seq + 128)]  # ~85 KB > 64 KiB: copied without the GIL
            try:
                n = ring.put_many(chunk)
            except Closed:
                return
            put_ok[p].extend((p, s) for s in range(seq, seq + n))
            seq += n
            if n < len(chunk):
                return  # closed part-way

    def consume(c, take):
        pause = rng.random() * 2e-4
        while True:
            try:
                records = take()
            except Closed:
                return
            except Empty:
                continue
            for rec in records:
                got[c].append(check(rec))
            if records:
                ring.task_done(len(records))
            time.sleep(pause)  # slower than the producers: the ring fills

    takers = [lambda: [ring.get()], lambda: ring.get_many(4), lambda: list(ring.get_batch(8, timeout=0.01))]
    threads = [run_thread(produce_one_by_one, 0), run_thread(produce_in_chunks, 1), run_thread(produce_one_by_one, 2)]
    threads += [run_thread(consume, c, takers[c]) for c in range(3)]
    enough = 300 + rng.randrange(300)  # delivered before the shutdown
    assert wait_until(lambda: sum(map(len, got)) >= enough and len(ring) >= 32)
    threads.append(run_thread(ring.join))
    ring.shutdown(immediate=True)
    assert len(ring) == 0, "records left behind by shutdown(immediate=True)"
    with pytest.raises(Closed):
        ring.get_nowait()
    for t in threads:
        assert "error" not in joined(t), t.get("error")

    delivered = [tag for tags in got for tag in tags]
    accepted = {tag for tags in put_ok for tag in tags}
    assert len(delivered) == len(set(delivered)), "a record was delivered twice"
    assert set(delivered) <= accepted, "a record delivered that no put returned for"
    for tags in got:
        for p in range(3):
            seqs = [s for q, s in tags if q == p]
            assert seqs == sorted(seqs), f"producer {p}'s records out of order"
    assert ring.discarded > 0
    assert len(accepted) == len(delivered) + ring.discarded == ring.pushed == ring.popped
    assert (len(ring), ring.nbytes, ring.unfinished_tasks) == (0, 0, 0)


def test_immediate_shutdown_waits_for_claims_being_copied():
    """Inline records are copied after their slots are claimed, so a big
    put_many chunk leaves claimed, unpublished slots while it copies. A
    shutdown(immediate=True) landing then waits for them and discards them
    too: the moment it returns the ring is empty and a get raises Closed;
    every record a put_many reported taken was discarded, the rest refused."""
    for attempt in range(8):
        ring = RingBuffer(512, slot_size=16384, max_record_size=16367)  # inline up to 16367 bytes
        chunk = [bytes([i]) * 16367 for i in range(64)]  # 1 MiB copied per call, without the GIL
        taken = []

        def produce():
            while True:
                try:
                    n = ring.put_many(chunk, timeout=JOIN)
                except Closed:
                    return
                taken.append(n)
                if n < len(chunk):
                    return

        producer = run_thread(produce)
        assert wait_until(lambda: ring.pushed > 0)
        time.sleep(random.Random(attempt).random() * 2e-3)
        ring.shutdown(immediate=True)
        assert len(ring) == 0
        with pytest.raises(Closed):
            ring.get_nowait()
        assert "error" not in joined(producer)
        assert sum(taken) == ring.pushed == ring.discarded == ring.popped
        assert ring.nbytes == 0
