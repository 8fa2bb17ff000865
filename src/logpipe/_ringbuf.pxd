# C-level interface of the ring buffer, for other Cython modules to cimport
# (the batch encoder, the nogil stress test). Everything declared nogil here is
# safe to call from any thread, with or without the GIL.

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from posix.uio cimport iovec

cdef extern from "_lp_sync.h" nogil:
    ctypedef struct lp_event_t:
        uint32_t epoch
        uint32_t waiters
        uint64_t wakes
    uint64_t lp_load_relaxed(uint64_t *p)
    uint32_t lp_load_relaxed_u32 "lp_load_relaxed"(uint32_t *p)
    void lp_store_relaxed_u32 "lp_store_relaxed"(uint32_t *p, uint32_t v)
    void lp_store_release_u32 "lp_store_release"(uint32_t *p, uint32_t v)
    uint64_t lp_load_acquire(uint64_t *p)
    int lp_load_acquire_int "lp_load_acquire"(int *p)
    void lp_store_relaxed(uint64_t *p, uint64_t v)
    void lp_store_release(uint64_t *p, uint64_t v)
    void lp_store_release_int "lp_store_release"(int *p, int v)
    bint lp_cas_u64(uint64_t *p, uint64_t *expected, uint64_t desired)
    bint lp_cas_strong_u64(uint64_t *p, uint64_t expected, uint64_t desired)
    uint64_t lp_fetch_or_u64(uint64_t *p, uint64_t v)
    uint64_t lp_fetch_add_u64(uint64_t *p, uint64_t v)
    uint64_t lp_fetch_sub_u64(uint64_t *p, uint64_t v)
    uint32_t lp_fetch_add_u32(uint32_t *p, uint32_t v)
    uint32_t lp_fetch_sub_u32(uint32_t *p, uint32_t v)
    bint lp_cas_strong_u32(uint32_t *p, uint32_t expected, uint32_t desired)
    void lp_fence()
    void lp_cpu_relax()
    void lp_prefetch(const void *p)
    void lp_copy(char *dst, const char *src, size_t n)
    double lp_now()
    uint32_t lp_now_ms()
    uint32_t lp_ec_prepare(lp_event_t *ev)
    void lp_ec_done(lp_event_t *ev)
    bint lp_ec_wait(lp_event_t *ev, uint32_t epoch, double timeout)
    void lp_ec_notify(lp_event_t *ev)
    void lp_ec_notify_after_rmw(lp_event_t *ev)
    uint64_t LP_CLOSED_BIT
    uint64_t LP_SLOT_HEADER
    uint32_t LP_OUT_OF_LINE
    int LP_SPIN_LIMIT
    double LP_MAIN_THREAD_SLICE
    uint64_t LP_TAKE_CHUNK
    bint LP_FREE_THREADED

# Status codes of the C-level calls.
cdef enum:
    LP_OK = 0
    LP_WOULD_BLOCK = 1   # full (push) or empty (pop) right now
    LP_CLOSED = 2        # push: ring closed; pop: closed and drained
    LP_NOMEM = 3
    LP_TIMEOUT = 4
    LP_STOPPED = 5       # a StopSignal was set while waiting
    LP_INTERRUPTED = 6   # a wait ended early so the caller can run signal handlers

# Most records one lp_push_many call takes (it keeps per-record scratch on the stack).
cdef enum:
    LP_PUSH_CHUNK = 256

# A slot's header: one per ring position, all in one dense array (four to a
# cache line), apart from the record bytes. The bytes of the records one
# claim took are packed one after another in the shares (slot_size - 16
# bytes each) of the positions claimed, each record followed by a newline,
# so a run of records is one contiguous block a batch copies at once.
cdef struct lp_slot_t:
    uint64_t seq       # Vyukov sequence: == pos free for push at pos, == pos+1 ready to pop
    uint32_t length    # Atomic (relaxed) where a consumer may read it before its claim.
    uint32_t offset    # where the record's stored bytes start, from the start of its
                       # position's share (never before it: see lp_push_many);
                       # LP_OUT_OF_LINE set: they are a pointer to a separate copy

# The shared state. Fields written by producers, by consumers and by both sit
# on separate cache lines so the two sides do not invalidate each other.
cdef struct lp_ring_t:
    uint64_t enqueue_pos     # next position to claim for push; bit 63: closed
    uint64_t gil_enqueue_pos # enqueue_pos after the last push made with the GIL held
    uint8_t _pad0[48]
    uint64_t dequeue_pos     # next position to claim for pop
    uint64_t gil_dequeue_pos # dequeue_pos after the last pop made with the GIL held
    uint8_t _pad1[48]
    uint64_t nbytes          # payload bytes held or reserved by pushers
    uint64_t gathering       # batch gatherers parked for several records: count << 32 | fewest needed
    uint64_t refused_puts    # non-blocking puts refused for want of room (give_up_for_room)
    uint8_t _pad2[40]
    lp_event_t not_empty     # getters park here; pushers notify
    lp_event_t not_full      # putters park here; poppers notify
    uint64_t put_waits
    uint64_t get_waits
    uint32_t getters_waiting  # threads inside lp_wait_readable (spinning or parked)
    uint32_t putters_waiting  # threads inside lp_wait_writable
    uint32_t getter_lingering # 1 while a getter lingers for the GIL (see linger_for_gil)
    uint32_t putter_lingering # (these event fields fill their 64-byte line exactly)
    # read-only after lp_ring_init
    lp_slot_t *slots         # nslots headers
    lp_slot_t *slots_end     # slots + nslots
    uint32_t *stamps         # lp_now_ms() when each position's record was pushed
    char *data               # nslots shares of record bytes
    uint64_t nslots          # max(capacity, 2): Vyukov's sequences need two slots
    uint64_t capacity        # most records held; < nslots only when capacity is 1
    uint64_t slot_size
    uint64_t share           # record bytes per position: slot_size - 16
    uint64_t inline_max      # share - 1: a record this long and its newline fit one share
    uint64_t max_record
    uint64_t max_bytes

cdef int lp_ring_init(lp_ring_t *r, uint64_t capacity, uint64_t slot_size,
                      uint64_t max_record, uint64_t max_bytes) noexcept nogil
cdef void lp_ring_destroy(lp_ring_t *r) noexcept nogil
cdef void lp_ring_close(lp_ring_t *r) noexcept nogil
# shutdown(immediate=True): close, then discard every record; returns how many.
cdef uint64_t lp_ring_close_discard(lp_ring_t *r) noexcept nogil
# queue.Queue's task accounting (task_done / join), on counters the caller owns.
cdef int lp_wait_tasks_done(lp_ring_t *r, uint64_t *tasks_done, lp_event_t *all_done,
                            double slice) noexcept nogil
cdef uint64_t lp_add_tasks_done(lp_ring_t *r, uint64_t *tasks_done, uint64_t count,
                                bint strict) noexcept nogil
cdef bint lp_ring_is_closed(lp_ring_t *r) noexcept nogil
cdef bint lp_ring_drained(lp_ring_t *r) noexcept nogil
cdef uint64_t lp_ring_len(lp_ring_t *r) noexcept nogil
cdef Py_ssize_t lp_push_many(lp_ring_t *r, const char **data, const uint32_t *lengths,
                             Py_ssize_t count, int *status) noexcept nogil
cdef int lp_push_wait(lp_ring_t *r, const char *data, uint32_t length,
                      double deadline) noexcept nogil
cdef uint64_t lp_peek_pop(lp_ring_t *r, uint64_t max_items, uint64_t *pos,
                         uint64_t *payload_bytes) noexcept nogil
cdef bint lp_commit_pop(lp_ring_t *r, uint64_t pos, uint64_t count) noexcept nogil
cdef uint64_t lp_claim_pop(lp_ring_t *r, uint64_t max_items, uint64_t *pos) noexcept nogil
cdef const char *lp_slot_record(lp_ring_t *r, uint64_t pos, uint32_t *length) noexcept nogil
cdef void lp_release_pop(lp_ring_t *r, uint64_t pos, uint64_t count) noexcept nogil
cdef int lp_wait_readable(lp_ring_t *r, double deadline, int *stop, double slice) noexcept nogil
cdef int lp_wait_room(lp_ring_t *r, uint64_t need_bytes, double deadline,
                      double *last_wait) noexcept nogil
cdef int lp_wait_writable(lp_ring_t *r, uint64_t need_bytes, double deadline,
                          double slice) noexcept nogil
cdef double lp_wait_slice() noexcept


cdef class RingBuffer:
    cdef lp_ring_t *ring
    cdef object __weakref__
    # queue.Queue compatibility (zeroed by tp_alloc, then atomics only):
    cdef uint64_t tasks_done        # task_done() counts plus records discarded
    cdef uint64_t discarded_count   # records discarded by shutdown(immediate=True)
    cdef lp_event_t all_tasks_done  # join() parks here; task_done() notifies
    cdef Py_ssize_t _put_many(self, object items, bint block, object timeout) except -1
    cdef int _wait_for_records(self, bint block, double deadline, int *stop) except -1


cdef class StopSignal:
    cdef int flag
    cdef readonly RingBuffer ring


# A batch's storage, usable from nogil code: records copied out of a ring,
# newline framed, with where each starts and which ring positions they held.
# Or, with ``hold`` set, records left in that ring's memory: their claims
# stay taken (the slots out of the producers' reach) and ``pieces`` say
# where their framed bytes lie, in order, until lp_batch_unhold gives the
# slots back or lp_batch_detach copies the bytes into ``buf`` first.
cdef struct lp_batch_t:
    char *buf
    Py_ssize_t size
    Py_ssize_t cap
    Py_ssize_t *offsets    # offsets[i]: start of record i; offsets[count]: end
    Py_ssize_t count
    Py_ssize_t offsets_cap
    uint64_t *runs         # pairs (first ring position, record count), one per claim run
    Py_ssize_t nruns
    Py_ssize_t runs_cap
    double oldest          # lp_now() scale: when the oldest record was pushed
    lp_ring_t *hold        # takes leave the records in this ring (NULL: copy them)
    iovec *pieces          # held: the framed bytes, in order (see hold_framed)
    Py_ssize_t npieces
    Py_ssize_t pieces_cap
    bint out_of_line       # held: some record is out of line (freed on unhold)

cdef int lp_batch_take(lp_batch_t *b, lp_ring_t *r, uint64_t max_items) noexcept nogil
cdef void lp_batch_clear(lp_batch_t *b) noexcept nogil
cdef void lp_batch_unhold(lp_batch_t *b) noexcept nogil
cdef int lp_batch_detach(lp_batch_t *b) noexcept nogil


cdef class Batch:
    cdef lp_batch_t b
    cdef object ring_ref       # the RingBuffer a held batch's bytes live in
    cdef uint32_t users        # buffer exports and writes in progress; USERS_BUSY: being changed
    cdef int enter(self) except -1
    cdef void leave(self) noexcept
    cdef int lock(self, str what) except -1
    cdef void unlock(self) noexcept
    cdef int copied(self) except -1
    # write_to's body: the bytes written (short only after progress), or OSError.
    cdef Py_ssize_t write_out(self, int fd, bint keep_gil) except -1
