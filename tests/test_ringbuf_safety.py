"""Regressions of the core safety review (issue 8): each test fails on the
ring as it was before the fix it names.

Memory errors (the batch overflow) show as wrong bytes or a crash in a normal
build, and as an AddressSanitizer report in the sanitizer build that CI runs
these tests under. Out-of-memory paths are driven for real: a child process
lowers its address-space limit so the next large allocation fails.
"""

from __future__ import annotations

import ctypes
import gc
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from logpipe import Closed, Empty, RingBuffer, StopSignal, _nogil_stress

DEFAULT_INLINE = 128 - 16


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; fail with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


# -- 1, 12: room for a batch comes from the records' real lengths -------------------

def test_long_record_then_short_ones_fit_in_one_batch():
    """The issue's reproducer: one out-of-line record followed by 49 inline ones."""
    rb = RingBuffer(1500)
    records = [b"L" * 1024] + [b"s" * 100] * 49
    rb.put(records[0])
    rb.put_many(records[1:])
    batch = rb.get_batch(50, timeout=0)
    assert list(batch) == records
    assert bytes(batch) == b"".join(r + b"\n" for r in records)


@pytest.mark.parametrize("slot_size", [32, 128, 1024])
def test_every_mix_of_long_and_short_records_in_one_claim(slot_size):
    """Long records at every place among inline ones, every batch size: exact bytes."""
    inline = slot_size - 17  # longest record that is stored inline (with its newline)
    sizes = [0, 1, inline - 1, inline, inline + 1, inline + 2, 3000, 70_000]
    rb = RingBuffer(64, slot_size=slot_size, max_record_size=1 << 17)
    for rotation in range(len(sizes)):
        records = [bytes([65 + i % 26]) * sizes[(i + rotation) % len(sizes)] for i in range(40)]
        for take in (1, 7, 40, 64):
            rb.put_many(records)
            got = []
            while len(got) < len(records):
                got.extend(rb.get_batch(take, timeout=0))
            assert got == records
            assert rb.nbytes == 0


def test_get_batch_does_not_reserve_for_the_worst_case():
    """get_batch(1024) on a 64 KiB-slot ring reserves what three small records need
    (before the fix it asked for 64 MiB per call: here a 32 MiB address-space
    headroom makes that fail)."""
    run_child("""
        import resource
        from logpipe import RingBuffer
        rb = RingBuffer(2048, slot_size=65536)
        rb.put_many([b"a" * 10, b"b" * 20, b"c" * 30])
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (32 << 20), resource.RLIM_INFINITY))
        for _ in range(50):
            batch = rb.get_batch(1024, timeout=0)
            assert list(batch) == [b"a" * 10, b"b" * 20, b"c" * 30], list(batch)
            rb.put_many(list(batch))
    """)


# -- 2: construction never leaves a half-made ring behind ----------------------------

@pytest.mark.parametrize("max_bytes", [2**64, 2**63, -1, 2**62 + 1, True, 1.5])
def test_out_of_range_max_bytes_is_a_value_error(max_bytes):
    """max_bytes beyond 2**62 (or not an int) raises ValueError; no crash in __dealloc__."""
    with pytest.raises(ValueError, match="max_bytes"):
        RingBuffer(8, max_bytes=max_bytes)
    gc.collect()


def test_max_bytes_limit_itself_is_accepted():
    rb = RingBuffer(8, max_bytes=2**62)
    rb.put(b"x")
    assert rb.get() == b"x"


# -- 3, 7: no lost wake-ups, no false "full" -----------------------------------------

@pytest.mark.parametrize("capacity", [1, 2, 3])
def test_one_shot_consumers_all_wake(capacity):
    """Pairs of consumers that each take one record and leave: both records are
    pushed back to back, so a consumer that reads a stale head after the other
    took it must re-read, not park (it would never be woken again).
    Repeated many times to open the window."""
    rb = RingBuffer(capacity)
    for round_ in range(300):
        got: list[bytes] = []
        consumers = [threading.Thread(target=lambda: got.append(rb.get(timeout=10))) for _ in range(2)]
        for t in consumers:
            t.start()
        rb.put(b"%d-a" % round_)
        rb.put(b"%d-b" % round_)
        for t in consumers:
            t.join(15)
            assert not t.is_alive(), f"consumer parked with a record ready (round {round_})"
        assert sorted(got) == [b"%d-a" % round_, b"%d-b" % round_]


def test_one_shot_producers_all_wake_on_a_two_slot_ring():
    """The mirror case: producers that each put one record into a full ring."""
    rb = RingBuffer(2)
    for round_ in range(300):
        rb.put_many([b"x", b"y"])
        producers = [threading.Thread(target=rb.put, args=(b"p%d" % i,), kwargs={"timeout": 10})
                     for i in range(2)]
        for t in producers:
            t.start()
        assert rb.get() == b"x"
        assert rb.get() == b"y"
        for t in producers:
            t.join(15)
            assert not t.is_alive(), f"producer parked with room free (round {round_})"
        assert sorted(rb.get_many(2)) == [b"p0", b"p1"]


@pytest.mark.parametrize("use_batches", [False, True])
def test_capacity_one_ring_under_contention_without_gil(use_batches):
    """Capacity 1 (two slots and an explicit bound): 3 producers, 2 consumers in
    C threads, mixed sizes. A stale tail position used to wrap the occupancy
    and make an empty ring look full; everything must still arrive once."""
    rb = RingBuffer(1, max_record_size=1 << 16)
    logs = _nogil_stress.run(rb, 3, 2, 20_000, batch=4, mixed_sizes=True, use_batches=use_batches)
    ids = sorted((int(p), int(q)) for pl, ql in logs for p, q in zip(pl, ql))
    assert ids == [(p, q) for p in range(3) for q in range(20_000)]


def test_capacity_one_nonblocking_put_many_takes_a_record_into_an_empty_ring():
    """The simple case of the same rule, with the positions far along."""
    rb = RingBuffer(1)
    for i in range(10_000):
        assert rb.put_many([b"%d" % i], block=False) == 1
        assert rb.put_many([b"extra"], block=False) == 0
        assert rb.get_nowait() == b"%d" % i


# -- 4, 6: put_many lets go of everything it gathered -------------------------------

def test_put_many_releases_gathered_buffers_when_a_later_item_fails():
    """A released memoryview after a bytearray: ValueError, and the bytearray is
    no longer exported (before the fix it stayed exported and could never grow)."""
    rb = RingBuffer(8)
    first = bytearray(b"x")
    released = memoryview(b"gone")
    released.release()
    refs = sys.getrefcount(first)
    with pytest.raises(ValueError):
        rb.put_many([first, released])
    first.extend(b"y")          # BufferError if still exported
    assert sys.getrefcount(first) == refs
    assert rb.get_many(8) == [b"x"]   # the records before the bad one were taken


def test_put_many_releases_buffers_when_interrupted_by_any_exception():
    """An exception of any kind from a buffer export leaves nothing exported."""
    class Exploding:
        def __buffer__(self, flags):
            raise KeyError("boom")

    rb = RingBuffer(8)
    first = bytearray(b"a")
    with pytest.raises((KeyError, TypeError)):
        rb.put_many([first, Exploding()])
    first.extend(b"b")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="__buffer__ (PEP 688) exists from 3.12")
def test_put_many_survives_a_buffer_export_that_empties_the_list():
    """__buffer__ clearing the list mid-gather: no use after free; what was
    gathered is pushed, the rest is simply gone from the list."""
    items: list = []

    class Mutating:
        def __buffer__(self, flags):
            items.clear()
            gc.collect()
            return memoryview(b"mutating")

    items.extend([b"one", bytearray(b"two"), Mutating(), b"never", b"seen"])
    rb = RingBuffer(16)
    taken = rb.put_many(items)
    assert rb.get_many(16) == [b"one", b"two", b"mutating"][:taken]


# -- 5: blocking calls wake for signals -----------------------------------------------

class Interrupted(Exception):
    pass


@pytest.fixture
def alarm():
    """Arm SIGALRM to raise Interrupted after ``delay`` s; a watchdog closes the
    ring if the call never wakes, so a regression fails instead of hanging."""
    def handler(signum, frame):
        raise Interrupted()

    old = signal.signal(signal.SIGALRM, handler)
    watchdogs = []

    def arm(rb, delay=0.2):
        signal.setitimer(signal.ITIMER_REAL, delay)
        dog = threading.Timer(10, rb.close)
        dog.start()
        watchdogs.append(dog)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)
    for dog in watchdogs:
        dog.cancel()


@pytest.mark.parametrize("call", ["get", "get_many", "get_batch", "put", "put_many"])
def test_a_signal_handler_interrupts_a_blocking_call(alarm, call):
    """The handler's exception ends a call that would wait forever, at once."""
    rb = RingBuffer(2)
    if call.startswith("put"):
        rb.put_many([b"a", b"b"])
    invoke = {
        "get": lambda: rb.get(),
        "get_many": lambda: rb.get_many(5),
        "get_batch": lambda: rb.get_batch(5),
        "put": lambda: rb.put(b"c"),
        "put_many": lambda: rb.put_many([b"c", b"d"]),
    }[call]
    alarm(rb)
    started = time.monotonic()
    with pytest.raises(Interrupted):
        invoke()
    assert time.monotonic() - started < 5
    assert not rb.closed, "the watchdog had to close the ring: the signal did not wake the call"


def test_an_interrupted_get_batch_hands_over_what_it_took(alarm):
    """Records get_batch claimed before the signal travel on the exception."""
    rb = RingBuffer(8)
    rb.put_many([b"r1", b"r2", b"r3"])
    alarm(rb)
    with pytest.raises(Interrupted) as info:
        rb.get_batch(10)
    assert list(info.value.logpipe_batch) == [b"r1", b"r2", b"r3"]
    assert len(rb) == 0


def test_an_interrupted_put_many_says_how_many_went_in(alarm):
    rb = RingBuffer(2)
    alarm(rb)
    with pytest.raises(Interrupted) as info:
        rb.put_many([b"1", b"2", b"3", b"4"])
    assert info.value.logpipe_put_count == 2
    assert rb.get_many(4) == [b"1", b"2"]


def test_a_handler_that_returns_lets_the_call_go_on_waiting():
    """A signal whose handler does not raise: the call keeps waiting, to its deadline."""
    calls = []
    old = signal.signal(signal.SIGALRM, lambda s, f: calls.append(s))
    try:
        rb = RingBuffer(2)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        started = time.monotonic()
        with pytest.raises(Empty):
            rb.get(timeout=0.5)
        assert time.monotonic() - started >= 0.45
        assert calls == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_ctrl_c_stops_a_main_thread_blocked_in_get_even_if_another_thread_takes_it():
    """SIGINT sent to a non-main thread (tgkill) still interrupts the main thread's
    get(): it wakes in slices to run the handler; exit by KeyboardInterrupt."""
    # The child sets Python's SIGINT handler itself: a shell without job
    # control starts a background job (`pytest ... &`) with SIGINT ignored,
    # the child would inherit that, and Python leaves an ignored SIGINT
    # ignored (the test then hung in every backgrounded run).
    # -X faulthandler: should the child hang, SIGABRT makes it print every
    # thread's stack, and the failure shows where the signal was lost.
    proc = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent("""
            import signal, threading, time, sys
            signal.signal(signal.SIGINT, signal.default_int_handler)
            from logpipe import RingBuffer
            rb = RingBuffer(4)
            idle = threading.Thread(target=time.sleep, args=(60,), daemon=True)
            idle.start()
            print(idle.native_id, flush=True)
            try:
                rb.get()
            except KeyboardInterrupt:
                print("interrupted", flush=True)
                sys.exit(7)
        """)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        tid = int(proc.stdout.readline())
        time.sleep(0.3)
        # tgkill: signal.pthread_kill reaches threads of this process only.
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(234, proc.pid, tid, signal.SIGINT) == 0   # tgkill, x86_64
        try:
            status = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, stacks = proc.communicate(timeout=10)
            pytest.fail(f"SIGINT did not end the child's get() within 10 s; its threads:\n{stacks}")
        assert status == 7, proc.stderr.read()
        assert proc.stdout.read().strip() == "interrupted"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# -- 8, 9: arguments that could never work are refused -------------------------------

def test_a_stop_signal_of_another_ring_is_refused():
    rb, other = RingBuffer(4), RingBuffer(4)
    stop = StopSignal(other)
    for call in (lambda: rb.get(stop=stop), lambda: rb.get_many(2, stop=stop),
                 lambda: rb.get_batch(2, stop=stop)):
        with pytest.raises(ValueError, match="another RingBuffer"):
            call()


@pytest.mark.parametrize("call", ["get", "get_many", "get_batch", "put", "put_many"])
def test_nan_timeout_is_a_value_error(call):
    rb = RingBuffer(1)
    nan = float("nan")
    invoke = {
        "get": lambda: rb.get(timeout=nan),
        "get_many": lambda: rb.get_many(1, timeout=nan),
        "get_batch": lambda: rb.get_batch(1, timeout=nan),
        "put": lambda: rb.put(b"x", timeout=nan),
        "put_many": lambda: rb.put_many([b"x"], timeout=nan),
    }[call]
    with pytest.raises(ValueError, match="timeout"):
        invoke()


# -- 10: out of memory loses nothing -------------------------------------------------

OOM_PRELUDE = """
    import resource
    from logpipe import RingBuffer
    def squeeze(headroom):
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + headroom, resource.RLIM_INFINITY))
    def relax():
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    BIG = 64 << 20
    def expect_memory_error(call):
        try:
            call()
        except MemoryError:
            return
        raise AssertionError("expected MemoryError")
"""


@pytest.mark.parametrize("call", ["get", "get_many", "get_batch"])
def test_memory_error_on_the_way_out_leaves_the_record_in_the_ring(call):
    """No room for the copy of a 64 MiB record: MemoryError, and the record is
    still there, whole, once memory is back."""
    run_child(OOM_PRELUDE + f"""
    rb = RingBuffer(4, max_record_size=BIG, max_bytes=2 * BIG)
    big = b"z" * BIG
    rb.put_many([b"first", big, b"last"])
    assert rb.get() == b"first"
    del big
    squeeze(16 << 20)
    call = {{"get": lambda: rb.get(timeout=0), "get_many": lambda: rb.get_many(3, timeout=0),
            "get_batch": lambda: rb.get_batch(3, timeout=0)}}["{call}"]
    expect_memory_error(call)
    assert len(rb) == 2 and rb.nbytes == BIG + 4, (len(rb), rb.nbytes)
    relax()
    assert rb.get() == b"z" * BIG
    assert rb.get() == b"last"
    """)


def test_get_batch_returns_what_it_holds_when_memory_runs_out():
    """Short records went in; the 64 MiB one behind them cannot: the batch comes
    back with the short ones and the big one waits in the ring."""
    run_child(OOM_PRELUDE + """
    rb = RingBuffer(8, max_record_size=BIG, max_bytes=2 * BIG)
    rb.put_many([b"a", b"b"])
    rb.put(b"q" * BIG)
    squeeze(16 << 20)
    batch = rb.get_batch(8, timeout=0)
    assert list(batch) == [b"a", b"b"], list(batch)
    assert len(rb) == 1
    relax()
    assert len(rb.get()) == BIG
    """)


def test_memory_error_on_the_way_in_gives_the_byte_budget_back():
    """A put whose out-of-line copy cannot be made: MemoryError, nbytes back to
    what it was, nothing half-pushed, and the ring takes records afterwards."""
    run_child(OOM_PRELUDE + """
    rb = RingBuffer(8, max_record_size=BIG, max_bytes=2 * BIG)
    rb.put(b"h" * 100)
    big = bytes(BIG - 100)
    squeeze(16 << 20)
    for call in (lambda: rb.put(big, timeout=0), lambda: rb.put_many([b"s", big], block=False)):
        expect_memory_error(call)
    assert rb.nbytes == 101 and len(rb) == 2, (rb.nbytes, len(rb))   # b"s" went in
    relax()
    rb.put(big, timeout=0)
    assert [len(r) for r in rb.get_many(8)] == [100, 1, BIG - 100]
    """)


def test_nogil_stress_abandons_memory_of_threads_that_outlive_it():
    """run() with threads that cannot finish in time raises; nothing it freed is
    still in use (the process stays healthy, checked by more work after)."""
    rb = RingBuffer(16)
    with pytest.raises(RuntimeError):
        _nogil_stress.run(rb, 2, 1, 10**9, batch=1, timeout=0.1)
    rb2 = RingBuffer(64)
    logs = _nogil_stress.run(rb2, 2, 2, 10_000, batch=8, mixed_sizes=True)
    assert sum(len(ids) for ids, _ in logs) == 20_000


def test_close_still_drains_after_all_this():
    rb = RingBuffer(4)
    rb.put(b"x")
    rb.close()
    assert rb.get() == b"x"
    with pytest.raises(Closed):
        rb.get()
