# cython: freethreading_compatible = True
"""Test-only: hammer a RingBuffer from C threads that never hold the GIL.

Producers and consumers are POSIX threads running the ring's C functions
(declared in _ringbuf.pxd) directly, so the ring's correctness is checked with
no GIL serialising anything. Each record is 12 bytes: producer id (uint32)
and sequence number (uint64). Consumers log what they receive; Python then
checks the log: nothing lost, nothing duplicated, per-producer order kept.
"""

import numpy as np

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from logpipe._ringbuf cimport (
    LP_CLOSED, LP_OK, RingBuffer, lp_claim_pop, lp_release_pop, lp_push_wait,
    lp_ring_close, lp_ring_drained, lp_ring_t, lp_slot_record, lp_wait_readable,
    lp_fetch_add_u64,
)

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts)
    int CLOCK_REALTIME

cdef extern from *:
    """
    #include <pthread.h>
    static int lp_join_timeout(pthread_t t, double seconds) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)seconds;
        return pthread_timedjoin_np(t, NULL, &ts);
    }
    """
    int lp_join_timeout(pthread_t t, double seconds) nogil


cdef struct worker_t:
    lp_ring_t *ring
    uint32_t id
    uint64_t count          # producer: records to send; consumer: records received
    uint64_t batch          # consumer: most records per claim
    uint32_t *log_producer  # consumer: producer id of each record received
    uint64_t *log_seq       # consumer: sequence of each record received
    uint64_t log_cap
    int failed              # a push that was refused, or a log overflow


cdef void *produce(void *arg) noexcept nogil:
    cdef worker_t *w = <worker_t *>arg
    cdef char record[12]
    cdef uint64_t seq
    memcpy(record, &w.id, 4)
    for seq in range(w.count):
        memcpy(record + 4, &seq, 8)
        if lp_push_wait(w.ring, record, 12, -1.0) != LP_OK:
            w.failed = 1
            return NULL
    return NULL


cdef void *consume(void *arg) noexcept nogil:
    cdef worker_t *w = <worker_t *>arg
    cdef uint64_t pos, n, i
    cdef uint32_t length
    cdef const char *data
    while True:
        n = lp_claim_pop(w.ring, w.batch, &pos)
        if n == 0:
            if lp_ring_drained(w.ring):
                return NULL
            lp_wait_readable(w.ring, -1.0, NULL, -1.0)
            continue
        for i in range(n):
            data = lp_slot_record(w.ring, pos + i, &length)
            if length != 12 or w.count >= w.log_cap:
                w.failed = 1
            else:
                memcpy(&w.log_producer[w.count], data, 4)
                memcpy(&w.log_seq[w.count], data + 4, 8)
                w.count += 1
        lp_release_pop(w.ring, pos, n)


def run(RingBuffer ring not None, int producers, int consumers, uint64_t per_producer,
        uint64_t batch=1, double timeout=60.0):
    """Run the C threads to completion; return one (producer_ids, seqs) pair of
    numpy arrays per consumer, in the order that consumer received them.

    Raises RuntimeError if a thread is still running after ``timeout`` seconds
    or a push was refused.
    """
    cdef uint64_t total = per_producer * producers
    cdef worker_t *workers = <worker_t *>calloc(producers + consumers, sizeof(worker_t))
    cdef pthread_t *threads = <pthread_t *>calloc(producers + consumers, sizeof(pthread_t))
    cdef int i, started = 0, stuck = 0
    cdef uint32_t[::1] ids
    cdef uint64_t[::1] seqs
    logs = []
    if workers == NULL or threads == NULL:
        free(workers)
        free(threads)
        raise MemoryError()
    try:
        for i in range(consumers):
            ids = np.zeros(total, dtype=np.uint32)
            seqs = np.zeros(total, dtype=np.uint64)
            logs.append((ids, seqs))
            workers[i].ring = ring.ring
            workers[i].batch = batch
            workers[i].log_producer = &ids[0]
            workers[i].log_seq = &seqs[0]
            workers[i].log_cap = total
        for i in range(producers):
            workers[consumers + i].ring = ring.ring
            workers[consumers + i].id = i
            workers[consumers + i].count = per_producer
        with nogil:
            for i in range(producers + consumers):
                if pthread_create(&threads[i], NULL,
                                  consume if i < consumers else produce, &workers[i]) != 0:
                    break
                started += 1
            # Producers first; then close, so consumers drain and leave.
            for i in range(consumers, started):
                if lp_join_timeout(threads[i], timeout) != 0:
                    stuck += 1
            lp_ring_close(ring.ring)
            for i in range(min(started, consumers)):
                if lp_join_timeout(threads[i], timeout) != 0:
                    stuck += 1
        if started != producers + consumers:
            raise RuntimeError(f"could only start {started} threads")
        if stuck:
            raise RuntimeError(f"{stuck} threads still running after {timeout} s")
        for i in range(producers + consumers):
            if workers[i].failed:
                raise RuntimeError(f"thread {i} failed (refused push or bad record)")
        return [(np.asarray(ids_)[: workers[i].count], np.asarray(seqs_)[: workers[i].count])
                for i, (ids_, seqs_) in enumerate(logs)]
    finally:
        free(workers)
        free(threads)
