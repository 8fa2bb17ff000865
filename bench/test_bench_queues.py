"""RingBuffer against the pure-Python queues, group by group (pytest-benchmark).

Run (under a minute on 2 cores):

    .venv/bin/python -m pytest bench/ --benchmark-only
    .venv/bin/python bench/report.py            # the same, as markdown tables

Groups (pytest-benchmark compares within a group; every record is 70 bytes):

- S1: one thread, per item. Each round moves N records as N/1000 cycles of
  "1000 puts, then 1000 gets" (1000 fits in every bounded queue, so nothing
  blocks; every queue does exactly the same calls).
- S2: one producer thread -> one consumer thread, per item (put / get).
- S3: one producer thread -> four consumer threads, per item; the producer
  ends with one empty record (the sentinel) per consumer.
- S4: one producer thread -> one consumer thread, batches of 100 records
  (1,000,000 records per round, for every queue); each queue uses its best
  batched equivalent (see the comment above S4_VARIANTS).
- S5: S4 with production-like record sizes instead of 70 bytes: a fixed
  mix, mostly 60-300 bytes, 1% stack traces of 2-8 KiB (``mixed_records``),
  200,000 records per round; the ring (default slots, and the pipeline's
  512-byte slots), deque+Condition and queue.Queue.

Bounded queues hold at most CAPACITY = 1024 records (LOGPIPE_BENCH_CAPACITY
overrides it; SimpleQueue is unbounded by design). LOGPIPE_BENCH_ONE_CPU=1
runs everything pinned to one CPU (see conftest.py). A round times only the data movement: threads are started before
the clock starts and wait on an Event that the timed function sets; the round
ends when every thread has been joined. The threads of a round run in this
process; multiprocessing.Queue is measured the same way (its pickling, pipe
and feeder thread are what it costs even between threads) and with fewer
records per round, since it is ~50x slower; records/s is always per record.

Each benchmark stores in ``extra_info``: queue (label), records (per round),
records_per_s (records / median round time), records_per_s_best (records /
fastest round), and for a threaded RingBuffer its put_waits / get_waits (how
often a call parked on the futex) in the last round. Rounds: 10 timed after
one warm-up (LOGPIPE_BENCH_ROUNDS overrides). bench/report.py turns them into
tables with ratios against queue.Queue measured in the same run.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from baselines import DequeQueue, dispose

from logpipe import RingBuffer

ROUNDS = int(os.environ.get("LOGPIPE_BENCH_ROUNDS", "10"))
CAPACITY = int(os.environ.get("LOGPIPE_BENCH_CAPACITY", "1024"))  # issue 9 also asks for 1500 and 65536
BATCH = 100
CONSUMERS = 4
N_S1 = 100_000
N_THREADED = 200_000
N_MP = 20_000  # multiprocessing.Queue, per item
N_S4 = 1_000_000  # batched: the 200,000 records, five times over
SENTINEL = b""  # S3's end marker; real records are never empty
JOIN_TIMEOUT = 120.0

#: label -> (factory, records per round in S1/S2/S3)
PER_ITEM: dict[str, tuple[Callable[[], Any], int]] = {
    "RingBuffer": (lambda: RingBuffer(CAPACITY), N_THREADED),
    "queue.Queue": (lambda: queue.Queue(CAPACITY), N_THREADED),
    "queue.SimpleQueue": (queue.SimpleQueue, N_THREADED),  # unbounded, no maxsize
    "deque+Condition": (lambda: DequeQueue(CAPACITY), N_THREADED),
    "multiprocessing.Queue": (lambda: multiprocessing.Queue(CAPACITY), N_MP),
}
REFERENCE = "queue.Queue"
_last_ring_waits: dict[str, int] = {}


def _note(benchmark: Any, label: str, n: int) -> None:
    """Record the label, the records per round and the records/s in extra_info."""
    benchmark.extra_info.update(queue=label, records=n, reference=label.startswith(REFERENCE))
    if _last_ring_waits:  # a RingBuffer's parks in the last round, for the why
        benchmark.extra_info.update(_last_ring_waits)
        _last_ring_waits.clear()
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["records_per_s"] = n / stats.stats.median
        benchmark.extra_info["records_per_s_best"] = n / stats.stats.min


def _run_threads(
    benchmark: Any, make_queue: Callable[[], Any], targets: Sequence[Callable[[Any], Any]]
) -> list[Any]:
    """Time rounds of threads that each run one target(q); return the last round's results.

    Setup (untimed) makes a fresh queue and starts the threads parked on an
    Event; the timed part sets the Event and joins them all.
    """

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        q = make_queue()
        go = threading.Event()
        results: list[Any] = [None] * len(targets)
        errors: list[BaseException] = []

        def body(i: int, fn: Callable[[Any], Any]) -> None:
            go.wait()
            try:
                results[i] = fn(q)
            except BaseException as exc:  # reported by run() below
                errors.append(exc)

        threads = [
            threading.Thread(target=body, args=(i, fn), daemon=True, name=f"bench-{i}")
            for i, fn in enumerate(targets)
        ]
        for t in threads:
            t.start()
        return (q, go, threads, results, errors), {}

    def run(q: Any, go: threading.Event, threads: list[threading.Thread], results: list[Any],
            errors: list[BaseException]) -> list[Any]:
        go.set()
        for t in threads:
            t.join(JOIN_TIMEOUT)
        return results

    def teardown(q: Any, go: threading.Event, threads: list[threading.Thread], results: list[Any],
                 errors: list[BaseException]) -> None:
        stuck = [t.name for t in threads if t.is_alive()]
        if isinstance(q, RingBuffer):
            _last_ring_waits.update(put_waits=q.put_waits, get_waits=q.get_waits)
        dispose(q)
        if errors:
            raise errors[0]
        assert not stuck, f"threads still running after {JOIN_TIMEOUT}s: {stuck}"

    return benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=1)


# --- S1: one thread --------------------------------------------------------


def _s1_round(q: Any, chunks: list[list[bytes]]) -> bytes:
    put, get = q.put, q.get
    last = b""
    for chunk in chunks:
        for r in chunk:
            put(r)
        for _ in chunk:
            last = get()
    return last


@pytest.mark.benchmark(group="S1")
@pytest.mark.parametrize("label", list(PER_ITEM))
def test_s1_one_thread(benchmark: Any, records: list[bytes], label: str) -> None:
    """S1: one thread puts 1000 records then gets them back, N/1000 times."""
    make, n = PER_ITEM[label]
    n = min(n, N_S1)
    chunks = [records[i : i + 1000] for i in range(0, n, 1000)]

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (make(), chunks), {}

    last = benchmark.pedantic(_s1_round, setup=setup, teardown=lambda q, _chunks: dispose(q),
                              rounds=ROUNDS, warmup_rounds=1)
    assert last == records[n - 1]
    _note(benchmark, label, n)


# --- S2 / S3: per item across threads --------------------------------------


def _produce(q: Any, records: list[bytes], sentinels: int = 0) -> int:
    put = q.put
    for r in records:
        put(r)
    for _ in range(sentinels):
        put(SENTINEL)
    return len(records)


def _consume_n(q: Any, n: int) -> bytes:
    get = q.get
    last = b""
    for _ in range(n):
        last = get()
    return last


def _consume_until_sentinel(q: Any) -> int:
    get = q.get
    n = 0
    while get():
        n += 1
    return n


@pytest.mark.benchmark(group="S2")
@pytest.mark.parametrize("label", list(PER_ITEM))
def test_s2_one_producer_one_consumer(benchmark: Any, records: list[bytes], label: str) -> None:
    """S2: one producer thread puts N records one by one; one consumer thread gets N."""
    make, n = PER_ITEM[label]
    results = _run_threads(
        benchmark,
        make,
        [functools.partial(_produce, records=records[:n]), functools.partial(_consume_n, n=n)],
    )
    assert results == [n, records[n - 1]]  # all moved, FIFO kept at the tail
    _note(benchmark, label, n)


@pytest.mark.benchmark(group="S3")
@pytest.mark.parametrize("label", list(PER_ITEM))
def test_s3_one_producer_four_consumers(benchmark: Any, records: list[bytes], label: str) -> None:
    """S3: one producer thread puts N records one by one; four consumer threads share them."""
    make, n = PER_ITEM[label]
    producer = functools.partial(_produce, records=records[:n], sentinels=CONSUMERS)
    results = _run_threads(benchmark, make, [producer] + [_consume_until_sentinel] * CONSUMERS)
    assert results[0] == n and sum(results[1:]) == n
    _note(benchmark, label, n)


# --- S4: batches of 100 ----------------------------------------------------
#
# Each variant gets the same input: a list of chunks, each a list of 100
# distinct 70-byte records (made before timing). What moves through the queue:
#
# - RingBuffer put_many/get_many: put_many(chunk) copies the 100 records into
#   the ring; get_many(100) returns a list of up to 100 new bytes objects.
# - RingBuffer put_many/get_batch: same producer; get_batch(100) copies 100
#   records in one nogil pass into one newline-framed buffer (what a worker
#   writes to its sink in one call).
# - RingBuffer put_many/get_batch(hold=True): get_batch(100, hold=True)
#   copies nothing (the batch holds the records' slots; a sink would write
#   them from the ring with Batch.write_to) and release() gives the slots
#   back: the file sink's path. A call that must wait copies what it holds
#   out first, so this is no faster when the consumer outruns the producer.
# - queue.Queue / queue.SimpleQueue / multiprocessing.Queue (lists of 100):
#   the chunk list itself is the item: one put and one get per 100 records.
#   This is the cheapest batched use of these queues: nothing is copied (a
#   list reference moves; multiprocessing.Queue pickles the list). The bounded
#   ones hold at most CAPACITY // 100 = 10 lists (1000 records).
# - deque+Condition put_many/get_many: DequeQueue.put_many extends the deque
#   with the chunk under one lock hold; get_many(100) pops up to 100 records
#   into a new list under one lock hold (bounded at 1024 records).
#
# The consumer counts records until it has all N; it does not touch them.


def _produce_put_many(q: Any, chunks: list[list[bytes]]) -> int:
    put_many = q.put_many
    total = 0
    for chunk in chunks:
        taken = put_many(chunk)
        while taken < len(chunk):  # never expected with block=True; kept honest
            taken += put_many(chunk[taken:])
        total += taken
    return total


def _produce_lists(q: Any, chunks: list[list[bytes]]) -> int:
    put = q.put
    for chunk in chunks:
        put(chunk)
    return sum(map(len, chunks))


def _consume_get_many(q: Any, n: int) -> int:
    get_many = q.get_many
    got = 0
    while got < n:
        got += len(get_many(BATCH))
    return got


def _consume_get_batch(q: Any, n: int) -> int:
    get_batch = q.get_batch
    got = 0
    while got < n:
        got += len(get_batch(BATCH))
    return got


def _consume_get_batch_held(q: Any, n: int) -> int:
    get_batch = q.get_batch
    got = 0
    while got < n:
        batch = get_batch(BATCH, hold=True)
        got += len(batch)
        batch.release()
    return got


def _consume_lists(q: Any, n: int) -> int:
    get = q.get
    got = 0
    while got < n:
        got += len(get())
    return got


#: label -> (factory, producer, consumer)
S4_VARIANTS: dict[str, tuple[Callable[[], Any], Callable[..., int], Callable[..., int]]] = {
    "RingBuffer put_many/get_many": (lambda: RingBuffer(CAPACITY), _produce_put_many, _consume_get_many),
    "RingBuffer put_many/get_batch": (lambda: RingBuffer(CAPACITY), _produce_put_many, _consume_get_batch),
    "RingBuffer put_many/get_batch(hold=True)": (
        lambda: RingBuffer(CAPACITY), _produce_put_many, _consume_get_batch_held),
    "queue.Queue (lists of 100)": (lambda: queue.Queue(CAPACITY // BATCH), _produce_lists, _consume_lists),
    "queue.SimpleQueue (lists of 100)": (queue.SimpleQueue, _produce_lists, _consume_lists),
    "deque+Condition put_many/get_many": (lambda: DequeQueue(CAPACITY), _produce_put_many, _consume_get_many),
    "multiprocessing.Queue (lists of 100)": (
        lambda: multiprocessing.Queue(CAPACITY // BATCH), _produce_lists, _consume_lists),
}


@pytest.mark.benchmark(group="S4")
@pytest.mark.parametrize("label", list(S4_VARIANTS))
def test_s4_batched_one_producer_one_consumer(benchmark: Any, records: list[bytes], label: str) -> None:
    """S4: one producer thread -> one consumer thread, 100 records per call."""
    chunks = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    _run_batched(benchmark, label, S4_VARIANTS[label], chunks * (N_S4 // len(records)))


def _run_batched(benchmark: Any, label: str, variant: tuple[Callable[..., Any], ...],
                 chunks: list[list[bytes]]) -> None:
    """One producer thread puts the chunks, one consumer takes them all (S4, S5)."""
    make, produce, consume = variant
    n = len(chunks) * BATCH
    results = _run_threads(
        benchmark,
        make,
        [functools.partial(produce, chunks=chunks), functools.partial(consume, n=n)],
    )
    assert results == [n, n]
    _note(benchmark, label, n)


# --- S5: S4 with production-like record sizes --------------------------------
#
# 70-byte records fit a slot's inline share; real log lines mostly do not
# (tests/_corpus.py: most lines 60-300 bytes, 1% stack traces of 2-8 KiB).
# A batch of 100 such lines is ~20 KiB, so this group also shows what a call
# costs once a batch is too big to copy with the GIL held.

N_S5 = 200_000


def mixed_records(n: int) -> list[bytes]:
    """n records of a fixed heavy-tailed size mix (the same every run)."""
    import random

    rng = random.Random(5)
    sizes = [rng.randint(2048, 8192) if rng.random() < 0.01 else rng.randint(60, 300) for _ in range(n)]
    return [(b"%d:" % i + b"x" * size)[:size] for i, size in enumerate(sizes)]


S5_VARIANTS = {label: S4_VARIANTS[label] for label in (
    "RingBuffer put_many/get_many", "RingBuffer put_many/get_batch",
    "deque+Condition put_many/get_many", "queue.Queue (lists of 100)",
)}
# The pipeline's ring: 512-byte slots, so lines up to 495 bytes sit inline
# (logpipe.application.pipeline.ring_slot_size).
S5_VARIANTS["RingBuffer(slot_size=512) put_many/get_batch"] = (
    lambda: RingBuffer(CAPACITY, slot_size=512), _produce_put_many, _consume_get_batch)


@pytest.mark.benchmark(group="S5")
@pytest.mark.parametrize("label", list(S5_VARIANTS))
def test_s5_batched_production_sizes(benchmark: Any, label: str) -> None:
    """S5: as S4, with production-like record sizes."""
    records = mixed_records(N_S5)
    _run_batched(benchmark, label, S5_VARIANTS[label],
                 [records[i : i + BATCH] for i in range(0, len(records), BATCH)])
