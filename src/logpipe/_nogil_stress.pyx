# cython: freethreading_compatible = True
"""Test-only: hammer a RingBuffer from C threads that never hold the GIL.

Producers and consumers are POSIX threads running the ring's C functions
(declared in _ringbuf.pxd) directly, so the ring's correctness is checked with
no GIL serialising anything. A record starts with its producer id (uint32)
and sequence number (uint64); with ``mixed_sizes`` its length comes from a
heavy-tailed mix keyed by (id, seq) - mostly short, many around the slot's
inline limit, some KiB, a few tens of KiB - and the rest is a fill pattern
the consumer checks byte by byte. Consumers take records either one claim
at a time (lp_claim_pop) or into a batch (lp_batch_take, the get_batch path;
``hold``: batches that leave the records in the ring, read there or detached),
and log what they receive; Python then checks the log: nothing lost, nothing
duplicated, per-producer order kept.
"""

import numpy as np

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from logpipe._ringbuf cimport (
    LP_OK, Batch, RingBuffer, lp_batch_clear, lp_batch_detach, lp_batch_t, lp_batch_take,
    lp_claim_pop,
    lp_release_pop, lp_push_wait,
    lp_ring_close, lp_ring_drained, lp_ring_t, lp_slot_record, lp_wait_readable,
)

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *thread, void *attr, void *(*start)(void *) noexcept nogil, void *arg)

cdef extern from *:
    """
    #include <pthread.h>
    #include <time.h>
    static int lp_join_timeout(pthread_t t, double seconds) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)seconds;
        return pthread_timedjoin_np(t, NULL, &ts);
    }
    """
    int lp_join_timeout(pthread_t t, double seconds) nogil

cdef enum:
    HEADER = 12             # producer id (4) + seq (8)

# When threads outlive run()'s timeout they still use what run() allocated,
# so run() gives it up to this list instead of freeing it under them.
_abandoned = []


cdef struct worker_t:
    lp_ring_t *ring
    uint32_t id
    uint64_t count          # producer: records to send; consumer: records received
    uint64_t batch          # consumer: most records per claim
    bint mixed              # record lengths from the mix (else HEADER bytes each)
    lp_batch_t *take_batch  # consumer: a batch to take into (else lp_claim_pop)
    bint hold               # consumer: take_batch holds its records (see consume_batches)
    uint32_t *log_producer  # consumer: producer id of each record received
    uint64_t *log_seq       # consumer: sequence of each record received
    uint64_t log_cap
    int failed              # a refused push, a wrong length or fill, a log overflow


cdef inline uint32_t record_length(lp_ring_t *r, uint32_t id, uint64_t seq, bint mixed) noexcept nogil:
    """The length of record (id, seq): deterministic, so consumers can check it."""
    cdef uint64_t h = (seq * 2654435761u + id * 40503u + 7) % 1000
    cdef uint64_t length
    if not mixed:
        return HEADER
    if h < 550:
        length = HEADER + h % 100                     # short lines
    elif h < 850:
        length = r.inline_max - 1 + h % 3             # inline limit - 1, =, + 1
    elif h < 980:
        length = 200 + (h * 37) % 1800                # a few hundred bytes to 2 KiB
    elif h < 997:
        length = 4096 + (h * 131) % 4096              # stack traces
    else:
        length = 40000 + h                            # tens of KiB
    if length > r.max_record:
        length = r.max_record
    return <uint32_t>(length if length >= HEADER else HEADER)


cdef inline char fill_byte(uint32_t id, uint64_t seq, uint64_t offset) noexcept nogil:
    return <char>((id * 7 + seq + offset) & 0xFF)


cdef void *produce(void *arg) noexcept nogil:
    cdef worker_t *w = <worker_t *>arg
    cdef uint64_t most = w.ring.max_record if w.mixed else HEADER
    cdef char *record = <char *>malloc(most if most > HEADER else HEADER)
    cdef uint64_t seq, k
    cdef uint32_t length
    if record == NULL:
        w.failed = 1
        return NULL
    memcpy(record, &w.id, 4)
    for seq in range(w.count):
        memcpy(record + 4, &seq, 8)
        length = record_length(w.ring, w.id, seq, w.mixed)
        for k in range(HEADER, length):
            record[k] = fill_byte(w.id, seq, k)
        if lp_push_wait(w.ring, record, length, -1.0) != LP_OK:
            w.failed = 1
            break
    free(record)
    return NULL


cdef inline void log_record(worker_t *w, const char *data, uint32_t length) noexcept nogil:
    """Check one received record and append its (producer, seq) to the log."""
    cdef uint32_t id
    cdef uint64_t seq, k
    if length < HEADER or w.count >= w.log_cap:
        w.failed = 1
        return
    memcpy(&id, data, 4)
    memcpy(&seq, data + 4, 8)
    if length != record_length(w.ring, id, seq, w.mixed):
        w.failed = 1
        return
    for k in range(HEADER, length):
        if data[k] != fill_byte(id, seq, k):
            w.failed = 1
            return
    w.log_producer[w.count] = id
    w.log_seq[w.count] = seq
    w.count += 1


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
            log_record(w, data, length)
        lp_release_pop(w.ring, pos, n)


cdef void check_held(worker_t *w, lp_batch_t *batch) noexcept nogil:
    """Check and log the records of a held batch where they lie in the ring:
    each inline record and its newline inside one piece, an out-of-line
    record alone in its piece with the newline in the next."""
    cdef Py_ssize_t i, k = 0, length
    cdef size_t at = 0
    cdef const char *base
    for i in range(batch.count):
        length = batch.offsets[i + 1] - batch.offsets[i]      # framed
        if k >= batch.npieces:
            w.failed = 1
            return
        base = <const char *>batch.pieces[k].iov_base
        if batch.pieces[k].iov_len - at >= <size_t>length:
            if base[at + length - 1] != b'\n':
                w.failed = 1
            log_record(w, base + at, <uint32_t>(length - 1))
            at += length
            if at == batch.pieces[k].iov_len:
                k += 1
                at = 0
        else:
            # Out of line: the whole piece is the record, the next its newline.
            if (at != 0 or batch.pieces[k].iov_len != <size_t>(length - 1) or k + 1 >= batch.npieces
                    or batch.pieces[k + 1].iov_len != 1
                    or (<const char *>batch.pieces[k + 1].iov_base)[0] != b'\n'):
                w.failed = 1
                return
            log_record(w, base, <uint32_t>(length - 1))
            k += 2
    if k != batch.npieces:
        w.failed = 1


cdef void *consume_batches(void *arg) noexcept nogil:
    """The get_batch path: lp_batch_take, check the framing, reuse the batch.
    With ``hold``, every other batch is held and checked in the ring, then
    given back (lp_batch_unhold); the others are held, then detached
    (lp_batch_detach) and checked in the batch's own buffer."""
    cdef worker_t *w = <worker_t *>arg
    cdef lp_batch_t *batch = w.take_batch
    cdef Py_ssize_t i, start, end
    cdef uint64_t taken = 0
    while True:
        if w.hold:
            batch.hold = w.ring
        if lp_batch_take(batch, w.ring, w.batch) != LP_OK:
            w.failed = 1
            return NULL
        if batch.count == 0:
            if lp_ring_drained(w.ring):
                return NULL
            lp_wait_readable(w.ring, -1.0, NULL, -1.0)
            continue
        if batch.offsets[0] != 0 or batch.offsets[batch.count] != batch.size:
            w.failed = 1
        taken += 1
        if w.hold and taken % 2:
            check_held(w, batch)
            lp_batch_clear(batch)           # gives the slots back
            continue
        if w.hold and lp_batch_detach(batch) != LP_OK:
            w.failed = 1
            return NULL
        for i in range(batch.count):
            start = batch.offsets[i]
            end = batch.offsets[i + 1] - 1             # the newline
            if batch.buf[end] != b'\n':
                w.failed = 1
            log_record(w, batch.buf + start, <uint32_t>(end - start))
        lp_batch_clear(batch)


def run(RingBuffer ring not None, int producers, int consumers, uint64_t per_producer,
        uint64_t batch=1, double timeout=60.0, bint mixed_sizes=False, bint use_batches=False,
        bint hold=False):
    """Run the C threads to completion; return one (producer_ids, seqs) pair of
    numpy arrays per consumer, in the order that consumer received them.

    Raises RuntimeError if a thread is still running after ``timeout`` seconds
    or a thread failed (a refused push, a record of the wrong length or
    content). Threads that outlive the timeout are never freed under: the
    ring is closed so they can end, and their memory is abandoned if not.
    """
    cdef uint64_t total = per_producer * producers
    cdef int nthreads = producers + consumers
    cdef worker_t *workers = <worker_t *>calloc(nthreads, sizeof(worker_t))
    cdef pthread_t *threads = <pthread_t *>calloc(nthreads, sizeof(pthread_t))
    cdef char *joined = <char *>calloc(nthreads, 1)
    cdef int i, started = 0, stuck = 0, late = 0
    cdef uint32_t[::1] ids
    cdef uint64_t[::1] seqs
    logs = []
    batches = []
    if workers == NULL or threads == NULL or joined == NULL:
        free(workers)
        free(threads)
        free(joined)
        raise MemoryError()
    try:
        for i in range(consumers):
            ids = np.zeros(total, dtype=np.uint32)
            seqs = np.zeros(total, dtype=np.uint64)
            logs.append((ids, seqs))
            workers[i].ring = ring.ring
            workers[i].batch = batch
            workers[i].mixed = mixed_sizes
            workers[i].log_producer = &ids[0]
            workers[i].log_seq = &seqs[0]
            workers[i].log_cap = total
            workers[i].hold = hold and use_batches
            if use_batches:
                batches.append(Batch.__new__(Batch))
                workers[i].take_batch = &(<Batch>batches[i]).b
        for i in range(producers):
            workers[consumers + i].ring = ring.ring
            workers[consumers + i].id = i
            workers[consumers + i].count = per_producer
            workers[consumers + i].mixed = mixed_sizes
        with nogil:
            for i in range(nthreads):
                if pthread_create(&threads[i], NULL,
                                  (consume_batches if use_batches else consume) if i < consumers
                                  else produce, &workers[i]) != 0:
                    break
                started += 1
            # Producers first; then close, so consumers drain and leave.
            for i in range(consumers, started):
                joined[i] = lp_join_timeout(threads[i], timeout) == 0
            lp_ring_close(ring.ring)
            for i in range(min(started, consumers)):
                joined[i] = lp_join_timeout(threads[i], timeout) == 0
            for i in range(started):
                if not joined[i]:
                    late += 1
                    # The ring is closed now, so a blocked thread can leave:
                    # give it a moment before giving up on it.
                    joined[i] = lp_join_timeout(threads[i], 5.0) == 0
                    if not joined[i]:
                        stuck += 1
        if stuck:
            # Never free what running threads use: abandon it instead.
            _abandoned.append((ring, logs, batches, <size_t>workers, <size_t>threads))
            workers = NULL
            threads = NULL
            raise RuntimeError(f"{stuck} threads still running after {timeout} s (memory abandoned)")
        if late:
            raise RuntimeError(f"{late} threads ended only after the ring was closed at {timeout} s")
        if started != nthreads:
            raise RuntimeError(f"could only start {started} threads")
        for i in range(nthreads):
            if workers[i].failed:
                raise RuntimeError(f"thread {i} failed (refused push, or a wrong record)")
        return [(np.asarray(ids_)[: workers[i].count], np.asarray(seqs_)[: workers[i].count])
                for i, (ids_, seqs_) in enumerate(logs)]
    finally:
        free(workers)
        free(threads)
        free(joined)
