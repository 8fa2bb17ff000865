"""The ring buffer driven from C threads that never hold the GIL.

logpipe._nogil_stress runs producers and consumers as POSIX threads calling
the ring's C functions directly; these tests check what they logged.
"""

import numpy as np
import pytest

from logpipe import RingBuffer, _nogil_stress


def check_logs(logs, producers, per_producer):
    """Every (producer, seq) exactly once; each consumer saw each producer in order."""
    ids = np.concatenate([log[0] for log in logs])
    seqs = np.concatenate([log[1] for log in logs])
    assert len(ids) == producers * per_producer, "records lost or duplicated"
    keys = ids.astype(np.uint64) * np.uint64(per_producer) + seqs
    assert np.array_equal(np.sort(keys), np.arange(producers * per_producer, dtype=np.uint64))
    for consumer_ids, consumer_seqs in logs:
        for producer in range(producers):
            mine = consumer_seqs[consumer_ids == producer]
            assert np.all(np.diff(mine.astype(np.int64)) > 0), "per-producer order broken"


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_4_producers_4_consumers_without_gil(batch):
    """4 x 4 C threads, 1,000,000 records: nothing lost, duplicated or reordered."""
    ring = RingBuffer(256)
    logs = _nogil_stress.run(ring, 4, 4, 250_000, batch=batch, timeout=60)
    check_logs(logs, 4, 250_000)
    assert ring.pushed == ring.popped == 1_000_000
    assert len(ring) == 0 and ring.nbytes == 0


def test_single_consumer_sees_fifo_per_producer_without_gil():
    """With one consumer, every producer's records arrive in the order sent."""
    ring = RingBuffer(32)
    logs = _nogil_stress.run(ring, 4, 1, 100_000, batch=16, timeout=60)
    check_logs(logs, 4, 100_000)


def test_tiny_ring_with_byte_budget_without_gil():
    """A 2-slot ring whose byte budget fits one record still moves everything."""
    ring = RingBuffer(2, max_record_size=12, max_bytes=12)
    logs = _nogil_stress.run(ring, 3, 2, 20_000, batch=4, timeout=60)
    check_logs(logs, 3, 20_000)
    assert ring.put_waits > 0


@pytest.mark.parametrize("capacity", [2, 64, 1500])
def test_held_batches_without_gil(capacity):
    """Consumers that hold their batches in the ring (get_batch(hold=True)'s
    path): every other batch is read where it lies and given back, the others
    are detached and read from their own buffer. Mixed sizes, out-of-line
    records and wrap-around included: nothing lost, duplicated, reordered or
    changed, and the ring's slots and byte budget are all given back."""
    ring = RingBuffer(capacity, max_record_size=1 << 16)
    logs = _nogil_stress.run(ring, 4, 3, 30_000, batch=48, mixed_sizes=True,
                             use_batches=True, hold=True, timeout=60)
    check_logs(logs, 4, 30_000)
    assert ring.pushed == ring.popped == 120_000
    assert len(ring) == 0 and ring.nbytes == 0


def test_held_batches_on_a_capacity_one_ring_without_gil():
    """Capacity 1: a held record is the whole ring; producers wait for its release."""
    ring = RingBuffer(1, max_record_size=1 << 16)
    logs = _nogil_stress.run(ring, 3, 2, 10_000, batch=4, mixed_sizes=True,
                             use_batches=True, hold=True, timeout=60)
    check_logs(logs, 3, 10_000)
    assert ring.nbytes == 0
