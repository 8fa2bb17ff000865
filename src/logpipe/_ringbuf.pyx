# cython: freethreading_compatible = True, binding = False, embedsignature.format = clinic
# binding=False: the methods are plain method descriptors, which CPython calls
# without the cyfunction layer: put+get of one record 1099 -> 893
# instructions (bench/ring_cost.py). The clinic signature format keeps
# inspect.signature() and help() working on them.
"""A bounded, lock-free MPMC ring buffer of byte records, and its batches.

Algorithm
---------
Dmitry Vyukov's bounded MPMC queue: an array of ``capacity`` slots, each with
a 64-bit sequence number, and two 64-bit positions that only grow
(``enqueue_pos`` for producers, ``dequeue_pos`` for consumers). Position ``p``
lives in slot ``p % capacity``.

* A slot whose sequence equals ``p`` is free for the producer that claims
  position ``p``; one whose sequence equals ``p + 1`` holds the record of
  position ``p``, ready for the consumer that claims ``p``.
* A producer claims ``n`` consecutive positions with one compare-and-swap of
  ``enqueue_pos`` from ``p`` to ``p + n`` after checking that the ``n`` slots
  are free; it then copies the records in and publishes each slot with a
  *release* store of ``seq = p + i + 1``.
* A consumer claims ``n`` ready positions the same way on ``dequeue_pos``
  (checking ``seq == p + i + 1`` with *acquire* loads, so the record bytes are
  visible), copies them out, and hands each slot back with a *release* store
  of ``seq = p + i + capacity`` (free for the producer one lap later).

A slot checked free (or ready) stays so until someone claims its position, and
claims only move the positions forward by CAS, so the batch claim is as safe
as the single one. Positions are 64-bit: they do not wrap in practice (2**63
records at a billion a second is three centuries).

The per-slot loops of the batch calls go four slots at a time where they
can (``_lp_sync.h``): a claim checks four sequences with four acquire loads
compared at once (lp_count_run, lp_run_ready4), and hands four slots back
with four release stores in order (lp_store_release_run); every slot still
has its own sequence, checked and published with the same orderings.

Records are variable length. Each position has a 16-byte header (sequence,
length, offset) in one dense array, four to a cache line, and a share of
``slot_size - 16`` bytes in a separate data area. The records of one claim
are *packed*: laid out one after another, each followed by a newline, as one
contiguous block that ends at the end of the claim's last share, so a batch
copies a whole claim with one memcpy, and 70-byte records cost a little over
one cache line each instead of a 128-byte slot. A record and its newline
always fit the shares of its own position and those after it in its claim,
never one before it: a position's share can be written again one lap later
only once that position and every one before it are free (a producer claims
in order), so a consumer still reading a record never sees its bytes
overwritten, whatever order other consumers release theirs in. A record too
long for one share (over ``slot_size - 17`` bytes) is copied into its own
allocation (made *before* the claim, so a claimed slot is never left
unpublished by a failed malloc) whose pointer takes its place in the block,
and the consumer frees it. A byte budget bounds the payload: producers
reserve the
record bytes with a CAS on ``nbytes`` before they claim slots, consumers give
them back after; a record that does not fit the budget makes the ring "full"
exactly as a missing slot does.

Held batches (``get_batch(..., hold=True)``) rest on the same rule: a
batch may keep its claims instead of copying the records out, noting
where each block lies (hold_framed), and hand the slots and the byte
budget back later (lp_batch_unhold), in any order with the other
consumers. Nothing a consumer does can move bytes a claim still covers,
so ``Batch.write_to`` can ``writev`` them from the ring. A getter that
must wait copies what it holds out first (lp_batch_detach): a waiting
getter holding slots could keep out the very records it waits for.

Closing sets bit 63 of ``enqueue_pos`` (an atomic OR). A producer's claim CAS
then fails and it sees the bit, so no record enters after ``close()``;
producers that claimed before the bit publish normally. Consumers report
"closed" only when the bit is set *and* ``dequeue_pos`` has reached the
claimed end, i.e. every record that got in has been taken out: Go's closed
channel, the basis of logpipe's zero-loss shutdown.

An immediate shutdown (``shutdown(immediate=True)``, lp_ring_close_discard)
closes, then acts as one more consumer that frees what it claims instead of
copying it: claims at the head go to it or to a getter by the same CAS, so
no record is both delivered and discarded. With the closed bit set the
claimed end is final; the few claims still being copied into are waited
for (a publish notifies ``not_empty``), so when it returns the ring is
drained. The unfinished-task count of ``task_done()``/``join()`` is kept
beside the ring: ``pushed - tasks_done``, so puts pay nothing for it.

Waiting
-------
Nothing here takes a lock, and no waiting loop holds the GIL or sleeps in
Python. A blocked call first retries with a short spin (``pause``), then parks
on an event count over a Linux futex (``_lp_sync.h``): it registers as a
waiter, re-checks, and sleeps while the epoch is unchanged. Pushers notify
``not_empty``, poppers ``not_full``, ``close()`` and ``StopSignal.set()`` both.
A notify is one fence and one load when nobody waits, so the fast paths make
no system call; a consumer's notify follows its locked subtraction from the
byte budget, which is that fence on x86 (lp_fence_after_rmw). A ``get_batch``
short of its batch waits for the records it still needs (lp_wait_gather),
not for one: a push wakes getters only if one of them waits for any record,
or the gatherers' least need is in the ring (notify_getters), and a putter
that starts waiting for room, or a non-blocking put that finds none
(give_up_for_room), wakes them all. A held batch waits before it takes
anything (collect_batch), so it comes whole and held.
A waiter also arms the event (the epoch's low bit) when it registers, and
the notify that wakes disarms it: until a waiter registers again, later
notifies make no system call either, even while the woken waiter has not
run yet (on one CPU it waits for the notifier to let the
CPU go, and each put of that time slice used to make a futex call). The
fence on each side (after the publish, after the waiter registration)
guarantees that either the notifier sees the waiter or the
waiter's re-check sees the change. The re-check itself must not read a
stale position: readable() and writable() load the head (tail) position and
then that slot's sequence; if the sequence shows the slot has already moved
on (another thread claimed and released it between the two loads), they
reload the position and look again instead of reporting "empty" ("full").
Positions only grow, so the retry ends; and a waiter can only park after a
re-check that saw the ring as it was after its registration: no lost
wake-ups.

Handing the GIL over: under the GIL, a Python producer and a Python
consumer take turns, and every turn passes the GIL. A thread that takes the
GIL while the other holds it sleeps on the GIL's condition variable until
it is let go, and waking it costs tens of microseconds on a virtual
machine, twice per fill and drain of a small ring (S2 in bench/ moved
1.75x fewer records a second with it: docs/benchmarks.md). So a Python caller whose wait has ended
lingers (linger_for_gil), spinning without the GIL while the other side
keeps moving with the GIL held, and takes the GIL once the other side
starts waiting in the ring (it has let the GIL go: taking it is then
immediate), goes quiet for 10 us, moves without the GIL, or 200 us have
passed. Which moves were made with the GIL held is told by a stamp beside
each position (gil_enqueue_pos, gil_dequeue_pos, on the position's own
cache line), which the Python calls write after each push or pop they make
holding the GIL: a nogil pusher (the batch encoder, the line framer) leaves
it behind, and nobody lingers behind it. A thread that starts waiting
while the other side lingers spins longer before it parks, since that side
is about to move. Each side counts its waiting threads and holds a
one-thread linger token; all of it changes only when a thread takes the
GIL, never what any call returns. It is off on a free-threaded build and with one CPU.

Signals: a wait of a Python caller ends when a signal interrupts the futex
(EINTR), and on the main thread also every LP_MAIN_THREAD_SLICE seconds
(the kernel may deliver a process signal to any thread); the caller takes
the GIL, runs the handlers (PyErr_CheckSignals) and waits again to the same
deadline, or propagates the handler's exception.

Batches make room before they claim: lp_peek_pop reads the lengths of the
ready records at the head, the batch grows to fit them, and only then
lp_commit_pop claims exactly those positions (a CAS that fails if anyone
moved the head). Nothing can fail after a claim, so no claimed record is
ever dropped, not even when memory runs out.

get_batch (and lp_batch_take) peek with peek_framed, one pass over the
headers that also frames the batch: it writes each record's end into the
batch's offsets as it adds up the lengths, and finds the blocks (runs of
records whose stored bytes follow one another: one claim's, cut at the
wrap, or an out-of-line record alone) by comparing each offset with where
the record before it ended. The headers are read before the claim, so
offsets are stored and loaded as relaxed atomics like the lengths, and what
was read is what the claim gets whenever the commit succeeds. After the
claim the copy is one memcpy per block, reading no other header, then the
slots go back with one release store each. Against reading the headers
again after the claim, put_many+get_batch went from 150 to 130
instructions a record (bench/ring_cost.py).

Where a batch's instructions go (bench/ring_cost.py, callgrind, 70-byte
records in calls of 100; 107 a record for put_many+get_batch, down from
181 with the fused peek, the loops four slots at a time and the spare
memory): the producer's claim and copy-in (push_sized) 48, of which 22 are
the copy itself (lp_copy) and 5 the check that the slots are free;
put_many's gathering of the bytes objects 17; the peek that frames the
batch 18; its copy 7 (one memcpy per block); the hand back, the clock
reads and the wake-up check 5; the calls themselves (arguments, the Batch
object) the rest. Its
memory (buffer, offsets, runs) is the last batch's that was let go (one
spare for the module). put_many+get_many costs 258: get_many's own loops
65 (one bytes object made per record before the claim, one lp_copy into
each after it), its peek 9, and about 100 in CPython making and freeing
the bytes objects and the list.

Without the GIL
---------------
All shared state is read and written with atomics; the Python objects
(RingBuffer, Batch, StopSignal) are immutable after construction except
through those atomics, so the module is declared freethreading-compatible and
its C functions (declared in ``_ringbuf.pxd``) may be called from nogil code
in any thread.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.long cimport PyLong_AsDouble, PyLong_CheckExact
from cpython.object cimport PyObject, PyTypeObject
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.math cimport INFINITY, isnan
from libc.string cimport memcpy, memset
from posix.uio cimport iovec, writev

import os
import threading

from logpipe.exceptions import Closed, Empty, Full

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from "Python.h":
    PyObject *PySequence_Fast_GET_ITEM(object o, Py_ssize_t i)
    PyObject *PyList_GET_ITEM(object o, Py_ssize_t i)
    list PyList_New(Py_ssize_t n)
    void PyList_SET_ITEM(object o, Py_ssize_t i, object v)
    Py_ssize_t PySequence_Fast_GET_SIZE(object o)
    PyObject **PySequence_Fast_ITEMS(object o)
    bint Py_IS_TYPE(PyObject *o, PyTypeObject *t)
    PyTypeObject PyBytes_Type
    char *PyBytes_AS_STRING_P "PyBytes_AS_STRING"(PyObject *o)
    Py_ssize_t PyBytes_GET_SIZE_P "PyBytes_GET_SIZE"(PyObject *o)

# get's and get_many's bytes objects, made before the claim at the length peeked and
# filled after it: PyBytes_FromStringAndSize(NULL, n) without its argument
# checks and its own call, i.e. what CPython's _PyBytes_FromSize does, with
# the public PyObject_InitVar (13 of 271 instructions a record on
# put_many+get_many, bench/ring_cost.py). Where the layout of a bytes object
# is not ours to rely on (the limited API, PyPy, a CPython newer than those
# tested), the API call.
cdef extern from *:
    """
    #if !defined(Py_LIMITED_API) && !defined(PYPY_VERSION) && PY_VERSION_HEX < 0x030F0000
    static PyObject *lp_new_bytes(Py_ssize_t n) {
        PyBytesObject *op;
        if (n == 0)
            return PyBytes_FromStringAndSize(NULL, 0);   /* the shared empty bytes */
        op = (PyBytesObject *)PyObject_Malloc(offsetof(PyBytesObject, ob_sval) + 1 + (size_t)n);
        if (op == NULL)
            return PyErr_NoMemory();
        PyObject_InitVar((PyVarObject *)op, &PyBytes_Type, n);
    _Py_COMP_DIAG_PUSH
    _Py_COMP_DIAG_IGNORE_DEPR_DECLS
        op->ob_shash = -1;          /* not hashed yet */
    _Py_COMP_DIAG_POP
        op->ob_sval[n] = '\\0';
        return (PyObject *)op;
    }
    #else
    #define lp_new_bytes(n) PyBytes_FromStringAndSize(NULL, (n))
    #endif
    """
    # n >= 0 and at most a record's length; NULL (MemoryError) raises.
    PyObject *new_bytes "lp_new_bytes"(Py_ssize_t n) except NULL
    bytes new_bytes_object "lp_new_bytes"(Py_ssize_t n)

DEFAULT_MAX_RECORD_SIZE = 1 << 20
DEFAULT_SLOT_SIZE = 128
DEFAULT_MAX_BYTES = 64 << 20

MAX_RECORD_LIMIT = 0x7FFFFFFF
# Far above any real budget, and low enough that nbytes + one record never
# overflows a uint64.
MAX_BYTES_LIMIT = 1 << 62

# Python runs signal handlers only in the main thread, and only when that
# thread runs bytecode. The kernel may hand a process-directed signal to any
# thread, so a main thread parked in the ring also wakes every
# LP_MAIN_THREAD_SLICE seconds to look for handlers to run.
cdef unsigned long MAIN_THREAD_IDENT = threading.main_thread().ident

cdef enum:
    # How many items ahead put_many prefetches: enough to cover a memory
    # miss (~100 ns) with the ~10 ns each item takes to gather.
    PREFETCH_AHEAD = 8
    # get_batch copies a batch that is all there with the GIL held up to
    # this many payload bytes (a few us of copying here, less than handing
    # the GIL to another thread and getting it back), and put_many copies a
    # chunk that small with it too; larger ones go without it. At 16 KiB,
    # batches of 100 production-sized lines (~20 KiB) handed the GIL over
    # on every call and moved half as many records a second (S5 in
    # docs/benchmarks.md).
    GIL_TAKE_MAX_BYTES = 65536
    # Pause loops a wait spins before it parks when the other side is
    # lingering for the GIL (linger_for_gil): it is about to move, and
    # parking would put a wake-up (tens of microseconds here) on the way back.
    LP_SPIN_LIMIT_LONG = 20000

# linger_for_gil(): how long the other side may pause before we stop
# lingering, and the longest linger.
cdef double LINGER_QUIET = 10e-6
cdef double LINGER_MAX = 200e-6
cdef bint linger_enabled = not LP_FREE_THREADED and len(os.sched_getaffinity(0)) > 1
# lp_wait_room's spin: on one CPU a spinning producer only keeps the
# consumer it waits for from running.
cdef bint bulk_spin = len(os.sched_getaffinity(0)) > 1
# Its longest spin, in seconds: about the time a park and its wake-up cost.
cdef double ROOM_SPIN = 50e-6


def _set_bulk_spin(bint on):
    """Turn lp_wait_room's spin on or off (for benchmarks comparing the
    two); returns the previous setting."""
    global bulk_spin
    cdef bint was = bulk_spin
    bulk_spin = on
    return was

cdef char EMPTY_BUFFER[1]


# --------------------------------------------------------------------------
# The C core: everything below up to the Python classes runs without the GIL.
# --------------------------------------------------------------------------

cdef inline lp_slot_t *slot_at(lp_ring_t *r, uint64_t pos) noexcept nogil:
    return r.slots + pos % r.nslots


cdef inline lp_slot_t *next_slot(lp_ring_t *r, lp_slot_t *s) noexcept nogil:
    # The slot of position pos + 1, without the division slot_at needs.
    s += 1
    return r.slots if s == r.slots_end else s


cdef inline void prefetch_slot(lp_ring_t *r, lp_slot_t *s) noexcept nogil:
    # The header eight positions on, one cache line in four: walking slots
    # in order, asking for the line a few ahead overlaps the cross-core
    # misses (the packed record bytes are one stream, which the hardware
    # prefetcher follows by itself). Past the last slot the address is
    # still inside the ring's allocation (lp_ring_init pads its end), so
    # no bounds test: a prefetch never faults, and one of the stamps or the
    # record bytes costs nothing but the hint.
    lp_prefetch(s + PREFETCH_AHEAD)


cdef inline char *slot_share(lp_ring_t *r, lp_slot_t *s) noexcept nogil:
    # The start of the share of record bytes that belongs to slot ``s``.
    return r.data + <uint64_t>(s - r.slots) * r.share


cdef inline char *slot_stored(lp_ring_t *r, lp_slot_t *s) noexcept nogil:
    # Where the stored bytes of the record in ``s`` start: the record and its
    # newline, or the pointer to its out-of-line copy.
    return slot_share(r, s) + (s.offset & ~LP_OUT_OF_LINE)


cdef inline char *out_of_line_copy(char *stored) noexcept nogil:
    # Packed bytes are not aligned: read the pointer with a copy.
    cdef char *copy
    memcpy(&copy, stored, sizeof(char *))
    return copy


cdef inline char *slot_data(lp_ring_t *r, lp_slot_t *s) noexcept nogil:
    # Where the bytes of the record held in ``s`` are: packed, or in its
    # out-of-line copy.
    if s.offset & LP_OUT_OF_LINE:
        return out_of_line_copy(slot_stored(r, s))
    return slot_stored(r, s)


cdef inline void free_out_of_line(lp_ring_t *r, lp_slot_t *s) noexcept nogil:
    if s.offset & LP_OUT_OF_LINE:
        free(out_of_line_copy(slot_stored(r, s)))


cdef int lp_ring_init(lp_ring_t *r, uint64_t capacity, uint64_t slot_size,
                      uint64_t max_record, uint64_t max_bytes) noexcept nogil:
    cdef uint64_t i
    cdef void *mem = NULL
    cdef uint64_t nslots = capacity if capacity >= 2 else 2
    cdef uint64_t headers = nslots * sizeof(lp_slot_t)
    cdef uint64_t stamps = (nslots * sizeof(uint32_t) + 63) & ~(<uint64_t>63)
    cdef uint64_t share = slot_size - LP_SLOT_HEADER
    memset(r, 0, sizeof(lp_ring_t))
    # One allocation: headers, stamps, record bytes, each cache-line aligned,
    # and PREFETCH_AHEAD slots' worth of padding so that prefetch_slot's
    # address stays inside it on any ring.
    if posix_memalign(&mem, 64, headers + stamps + nslots * share
                      + PREFETCH_AHEAD * sizeof(lp_slot_t)) != 0:
        return LP_NOMEM
    r.slots = <lp_slot_t *>mem
    r.slots_end = r.slots + nslots
    r.stamps = <uint32_t *>((<char *>mem) + headers)
    r.data = (<char *>mem) + headers + stamps
    r.nslots = nslots
    r.capacity = capacity
    r.slot_size = slot_size
    r.share = share
    r.inline_max = share - 1
    r.max_record = max_record
    r.max_bytes = max_bytes
    for i in range(nslots):
        r.slots[i].seq = i
        r.slots[i].length = 0
        r.slots[i].offset = 0
        r.stamps[i] = 0
    # Touched now, so that the first lap does not pay a page fault every few
    # dozen records, and the memory a ring holds is all there from the start.
    memset(r.data, 0, nslots * share)
    lp_fence()
    return LP_OK


cdef void lp_ring_destroy(lp_ring_t *r) noexcept nogil:
    """Free the slots and every out-of-line record still held."""
    cdef uint64_t pos = r.dequeue_pos
    cdef uint64_t end = r.enqueue_pos & ~LP_CLOSED_BIT
    cdef lp_slot_t *s
    if r.slots == NULL:
        return
    while pos < end:
        s = slot_at(r, pos)
        if s.seq == pos + 1:
            free_out_of_line(r, s)
        pos += 1
    free(r.slots)
    r.slots = NULL


cdef void lp_ring_close(lp_ring_t *r) noexcept nogil:
    lp_fetch_or_u64(&r.enqueue_pos, LP_CLOSED_BIT)
    lp_ec_notify(&r.not_empty)
    lp_ec_notify(&r.not_full)


cdef uint64_t lp_ring_close_discard(lp_ring_t *r) noexcept nogil:
    """Close the ring and throw every record in it away: shutdown(immediate=True).

    Returns how many records this call discarded. The discard is a consumer
    like any other: it claims the ready records at the head (lp_claim_pop)
    and hands their slots back (lp_release_pop frees out-of-line copies and
    returns their bytes to the budget), so each record is taken exactly once,
    by a getter or by the discard, never by both.

    Producers that claimed a position before the closed bit was set still
    publish it (nothing can fail after a claim: the copy is all that is left);
    the discard waits for them, spinning briefly and then parked on
    ``not_empty``, which every publish notifies. Closed first, the claimed end
    is final, so the wait is bounded by those copies and never by a blocked
    put. On return every position below that end has been claimed: len() is
    0 and every get reports Closed at once.
    """
    cdef uint64_t pos, n, discarded = 0
    cdef int spins = 0
    cdef uint32_t epoch
    lp_ring_close(r)
    while not lp_ring_drained(r):
        n = lp_claim_pop(r, LP_TAKE_CHUNK, &pos)
        if n:
            lp_release_pop(r, pos, n)
            discarded += n
            spins = 0
            continue
        # Not drained, yet nothing ready: the head is a producer's claim it is
        # still copying into (or a getter took the last record just now).
        if spins < LP_SPIN_LIMIT:
            spins += 1
            lp_cpu_relax()
            continue
        epoch = lp_ec_prepare(&r.not_empty)
        if not readable(r):     # ready, or drained: both end the wait
            lp_ec_wait(&r.not_empty, epoch, -1.0)
        lp_ec_done(&r.not_empty)
    # Getters that parked while records were left must now see "drained".
    lp_ec_notify(&r.not_empty)
    return discarded


cdef inline bint tasks_all_done(lp_ring_t *r, uint64_t *tasks_done) noexcept nogil:
    """Every record ever pushed has been marked done (queue.Queue's join condition).

    tasks_done is read first: it can only have grown by the time pushed is
    read, so True means that at that instant no task was unfinished.
    """
    cdef uint64_t done = lp_load_acquire(tasks_done)
    return done >= (lp_load_acquire(&r.enqueue_pos) & ~LP_CLOSED_BIT)


cdef int lp_wait_tasks_done(lp_ring_t *r, uint64_t *tasks_done, lp_event_t *all_done,
                            double slice) noexcept nogil:
    """Wait until every pushed record is done (``tasks_done`` counts them and
    ``all_done`` is notified when it grows). LP_OK, or LP_INTERRUPTED as
    park() (``slice``) so that the caller runs the signal handlers."""
    cdef uint32_t epoch
    cdef uint64_t parks = 0     # join waits are not counted among put/get waits
    while True:
        if tasks_all_done(r, tasks_done):
            return LP_OK
        epoch = lp_ec_prepare(all_done)
        if tasks_all_done(r, tasks_done):
            lp_ec_done(all_done)
            return LP_OK
        if park(all_done, epoch, -1.0, slice, &parks) == LP_INTERRUPTED:
            return LP_INTERRUPTED


cdef uint64_t lp_add_tasks_done(lp_ring_t *r, uint64_t *tasks_done, uint64_t count,
                                bint strict) noexcept nogil:
    """Add ``count`` to ``tasks_done``, never past the records pushed.

    ``strict`` (task_done): add nothing and return 0 if that would pass
    them. Otherwise (records discarded) add up to that bound. Returns what
    was added. The acquire loads order: a caller's own get (which saw the
    record's claim) happens before its tasks_done load, and every done
    already counted was gotten after its claim, so ``pushed`` read after
    ``cur`` covers them all and a correct caller is never refused.
    """
    cdef uint64_t cur, pushed, add
    while True:
        cur = lp_load_acquire(tasks_done)
        pushed = lp_load_acquire(&r.enqueue_pos) & ~LP_CLOSED_BIT
        add = count
        if cur + add > pushed:
            if strict:
                return 0
            add = pushed - cur
        if add == 0 or lp_cas_strong_u64(tasks_done, cur, cur + add):
            return add


cdef bint lp_ring_is_closed(lp_ring_t *r) noexcept nogil:
    return (lp_load_acquire(&r.enqueue_pos) & LP_CLOSED_BIT) != 0


cdef bint lp_ring_drained(lp_ring_t *r) noexcept nogil:
    """Closed, and every record that got in has been claimed by a consumer."""
    cdef uint64_t enq = lp_load_acquire(&r.enqueue_pos)
    if not (enq & LP_CLOSED_BIT):
        return False
    return lp_load_acquire(&r.dequeue_pos) >= (enq & ~LP_CLOSED_BIT)


cdef uint64_t lp_ring_len(lp_ring_t *r) noexcept nogil:
    # dequeue_pos first: it can only have grown by the time enqueue_pos is
    # read, so the difference is never negative (at worst briefly stale).
    cdef uint64_t deq = lp_load_acquire(&r.dequeue_pos)
    cdef uint64_t enq = lp_load_acquire(&r.enqueue_pos) & ~LP_CLOSED_BIT
    cdef uint64_t n = enq - deq if enq > deq else 0
    return n if n < r.capacity else r.capacity


cdef inline uint64_t reserve_bytes(lp_ring_t *r, const uint32_t *lengths, Py_ssize_t count,
                                   uint64_t total, uint32_t longest,
                                   Py_ssize_t *fitting, uint32_t *most_out) noexcept nogil:
    """Reserve the bytes of the longest prefix of records that fits the budget
    (``fitting`` of them); ``most_out``: the longest of them. ``total`` and
    ``longest`` are those of all ``count`` records."""
    cdef uint64_t cur = lp_load_relaxed(&r.nbytes)
    cdef uint64_t room
    cdef uint32_t most
    cdef Py_ssize_t k
    # All of them fit, the common case: one test and the CAS, no pass over
    # the lengths. (No overflow: max_bytes <= 2**62, total < 2**40.)
    while cur <= r.max_bytes and total <= r.max_bytes - cur:
        if lp_cas_u64(&r.nbytes, &cur, cur + total):
            fitting[0] = count
            most_out[0] = longest
            return total
    while True:
        room = r.max_bytes - cur if cur < r.max_bytes else 0
        total = 0
        most = 0
        k = 0
        while k < count and total + lengths[k] <= room:
            total += lengths[k]
            if lengths[k] > most:
                most = lengths[k]
            k += 1
        if k == 0 or lp_cas_u64(&r.nbytes, &cur, cur + total):
            fitting[0] = k
            most_out[0] = most
            return total


cdef inline uint64_t stored_size(lp_ring_t *r, uint32_t length) noexcept nogil:
    # Bytes a record takes in its claim's packed block: itself and a newline,
    # or the pointer to its out-of-line copy.
    return length + 1 if length <= r.inline_max else sizeof(char *)


cdef void fill_claim(lp_ring_t *r, lp_slot_t *first, uint64_t pos, const char **data,
                     const uint32_t *lengths, char **copies, Py_ssize_t n,
                     uint32_t now_ms, uint64_t packed, bint all_inline) noexcept nogil:
    """Pack the ``n`` records just claimed at ``pos`` (slot ``first``) into one
    block that ends at the end of the last claimed share, and publish each slot.
    ``all_inline``: the caller knows none of them goes out of line.

    Each record then starts at or after its own position's share (the
    records after it take at most a share each), which is what lets
    consumers hand slots back in any order: a share is written again only
    once its position and all before it are free.
    """
    cdef Py_ssize_t i
    cdef lp_slot_t *s = first
    cdef uint32_t *stamp = r.stamps + (first - r.slots)
    cdef uint64_t share_size = r.share
    cdef uint64_t inline_max = r.inline_max
    cdef char *share = slot_share(r, first)
    cdef char *dst
    cdef const char *src
    cdef uint32_t length
    cdef uint64_t seq = pos + 1
    if packed == 0:             # not known to the caller: add it up
        for i in range(n):
            packed += stored_size(r, lengths[i])
    # Every stamp first, in a loop of their own that the compiler turns into
    # vector stores (a claim stamps all its records alike); each is
    # published with its slot's sequence below, like the header.
    for i in range(n):
        stamp[i] = now_ms
    # The ring's fields and each record's pointer and length are read into
    # locals: the newline is a char store, which may alias anything, so the
    # compiler would otherwise load them again for every record.
    dst = share + <uint64_t>n * share_size - packed
    if all_inline:
        # The common claim, in a loop without the test for out-of-line records.
        for i in range(n):
            length = lengths[i]
            src = data[i]
            lp_store_relaxed_u32(&s.length, length)     # consumers may peek at these
            lp_store_relaxed_u32(&s.offset, <uint32_t>(dst - share))
            lp_copy(dst, src, length)
            dst[length] = b'\n'
            dst += length + 1
            lp_store_release(&s.seq, seq)
            seq += 1
            s += 1
            share += share_size
        return
    for i in range(n):
        length = lengths[i]
        src = data[i]
        lp_store_relaxed_u32(&s.length, length)     # consumers may peek at it
        if length <= inline_max:
            lp_store_relaxed_u32(&s.offset, <uint32_t>(dst - share))  # and at this
            lp_copy(dst, src, length)
            dst[length] = b'\n'
            dst += length + 1
        else:
            lp_store_relaxed_u32(&s.offset, <uint32_t>(dst - share) | LP_OUT_OF_LINE)
            memcpy(dst, &copies[i], sizeof(char *))
            dst += sizeof(char *)
        lp_store_release(&s.seq, seq)
        seq += 1
        s += 1
        share += share_size


cdef Py_ssize_t lp_push_many(lp_ring_t *r, const char **data, const uint32_t *lengths,
                             Py_ssize_t count, int *status) noexcept nogil:
    """Push up to ``count`` (at most LP_PUSH_CHUNK) records without waiting.

    Returns how many were pushed, in order; ``status`` says why it stopped
    short (LP_WOULD_BLOCK, LP_CLOSED or LP_NOMEM), LP_OK when all went in.
    Lengths must already be checked against ``max_record``.
    """
    cdef Py_ssize_t i
    cdef uint64_t total = 0
    cdef uint32_t longest = 0
    if count > LP_PUSH_CHUNK:
        count = LP_PUSH_CHUNK
    for i in range(count):
        total += lengths[i]
        if lengths[i] > longest:
            longest = lengths[i]
    return push_sized(r, data, lengths, count, total, longest, status)


cdef Py_ssize_t push_sized(lp_ring_t *r, const char **data, const uint32_t *lengths,
                           Py_ssize_t count, uint64_t total, uint32_t longest,
                           int *status) noexcept nogil:
    """lp_push_many, for a caller that knows the ``total`` and the ``longest``
    of the ``count`` (<= LP_PUSH_CHUNK) lengths: put_many gathers them as it
    reads the records, which spares a pass over the lengths here."""
    cdef char *copies[LP_PUSH_CHUNK]
    cdef Py_ssize_t k, n, i, limit, done
    cdef uint64_t reserved, unused, pos, seq, held, deq
    cdef uint64_t packed
    cdef uint32_t now_ms
    cdef int64_t dif
    cdef bint at_end
    cdef lp_slot_t *s
    cdef lp_slot_t *first = NULL

    status[0] = LP_OK
    if count <= 0:
        return 0
    if lp_load_relaxed(&r.enqueue_pos) & LP_CLOSED_BIT:
        status[0] = LP_CLOSED
        return 0

    reserved = reserve_bytes(r, lengths, count, total, longest, &k, &longest)
    if k == 0:
        status[0] = LP_WOULD_BLOCK
        return 0

    # Out-of-line copies before the claim: a claimed slot must always be
    # published, so nothing may fail after it.
    # (copies[i] is set only for those: a record is out of line exactly when
    # it is longer than inline_max.)
    for i in range(k if longest > r.inline_max else 0):
        if lengths[i] > r.inline_max:
            copies[i] = <char *>malloc(lengths[i])
            if copies[i] == NULL:
                unused = 0
                for n in range(i, k):
                    unused += lengths[n]
                if unused:
                    give_back_bytes(r, unused)  # a putter may be waiting for those bytes
                k = i
                status[0] = LP_NOMEM
                break
            memcpy(copies[i], data[i], lengths[i])

    # Claim up to k consecutive free slots with one CAS, never past the end
    # of the ring (a claim's records are packed into one contiguous block):
    # one that stops at the end goes on with a second claim from slot 0.
    now_ms = lp_now_ms()
    done = 0
    pos = lp_load_relaxed(&r.enqueue_pos)
    while done < k:
        n = 0
        at_end = False
        while True:
            if pos & LP_CLOSED_BIT:
                status[0] = LP_CLOSED
                break
            first = slot_at(r, pos)
            limit = k - done
            if limit >= r.slots_end - first:
                limit = r.slots_end - first
                at_end = True
            if r.capacity < r.nslots:
                # Capacity 1 lives in 2 slots: bound the occupancy explicitly.
                deq = lp_load_acquire(&r.dequeue_pos)
                if deq > pos:
                    # pos is stale (consumers have passed it): reload, or the
                    # difference wraps and an empty ring looks full.
                    pos = lp_load_relaxed(&r.enqueue_pos)
                    continue
                held = pos - deq
                if held >= r.capacity:
                    status[0] = LP_WOULD_BLOCK
                    break
                if held + limit >= r.capacity:
                    limit = r.capacity - held
                    at_end = False
            seq = lp_load_acquire(&first.seq)
            dif = <int64_t>(seq - pos)
            if dif == 0:
                # And the slots after it, four at a time.
                n = 1 + <Py_ssize_t>lp_count_run(&first[1].seq, SLOT_WORDS, pos + 1, limit - 1,
                                                 PREFETCH_AHEAD * SLOT_WORDS)
                if lp_cas_u64(&r.enqueue_pos, &pos, pos + n):
                    break
                n = 0           # lost the race; pos now holds the fresh value
            elif dif < 0:
                status[0] = LP_WOULD_BLOCK   # the slot still holds last lap's record
                break
            else:
                pos = lp_load_relaxed(&r.enqueue_pos)
        if n == 0:
            break
        # Bytes the claim packs, when already known: every record and its
        # newline, unless some go out of line or the claim took only part of
        # them (else fill_claim adds them up; skipping that pass and the
        # malloc loop saved 13 instructions a record when put_many+get_batch
        # cost ~194, ring_cost.py).
        packed = reserved + n if done == 0 and n == k and longest <= r.inline_max else 0
        fill_claim(r, first, pos, &data[done], &lengths[done], &copies[done], n, now_ms, packed,
                   longest <= r.inline_max)
        done += n
        pos += n
        if not (at_end and n == limit):
            break               # stopped by a slot in use: full
    n = done

    # Give back what was reserved for records that did not get a slot.
    if n < k:
        unused = 0
        for i in range(n, k):
            unused += lengths[i]
            if lengths[i] > r.inline_max:
                free(copies[i])
        if unused:
            give_back_bytes(r, unused)
        if status[0] == LP_OK:
            status[0] = LP_WOULD_BLOCK
    elif k < count and status[0] == LP_OK:
        status[0] = LP_WOULD_BLOCK      # the byte budget stopped us
    if n > 0:
        notify_getters(r)
    return n


cdef int push_one(lp_ring_t *r, const char *data, uint32_t length) noexcept nogil:
    """put()'s path for one inline record on a ring of two slots or more: what
    lp_push_many does for it, without its arrays and loops. Returns LP_OK,
    LP_WOULD_BLOCK or LP_CLOSED. The length is checked against max_record."""
    cdef uint64_t cur, pos
    cdef int64_t dif
    cdef lp_slot_t *s
    cdef char *dst
    cdef int status = LP_WOULD_BLOCK
    if length:
        cur = lp_load_relaxed(&r.nbytes)
        while True:
            if cur + length > r.max_bytes:
                return LP_CLOSED if lp_load_relaxed(&r.enqueue_pos) & LP_CLOSED_BIT else LP_WOULD_BLOCK
            if lp_cas_u64(&r.nbytes, &cur, cur + length):
                break
    pos = lp_load_relaxed(&r.enqueue_pos)
    while True:
        if pos & LP_CLOSED_BIT:
            status = LP_CLOSED
            break
        s = slot_at(r, pos)
        dif = <int64_t>(lp_load_acquire(&s.seq) - pos)
        if dif == 0:
            if lp_cas_u64(&r.enqueue_pos, &pos, pos + 1):
                lp_store_relaxed_u32(&s.length, length)  # consumers may peek at it
                r.stamps[s - r.slots] = lp_now_ms()
                # A block of one record, ending where the share ends.
                lp_store_relaxed_u32(&s.offset, <uint32_t>(r.share - length - 1))  # consumers may peek at it
                dst = slot_share(r, s) + (r.share - length - 1)
                lp_copy(dst, data, length)
                dst[length] = b'\n'
                lp_store_release(&s.seq, pos + 1)
                notify_getters(r)
                return LP_OK
        elif dif < 0:
            break               # the slot still holds last lap's record: full
        else:
            pos = lp_load_relaxed(&r.enqueue_pos)
    if length:
        give_back_bytes(r, length)  # a putter may be waiting for those bytes
    return status


cdef inline void give_back_bytes(lp_ring_t *r, uint64_t nbytes) noexcept nogil:
    """Return ``nbytes`` of the byte budget (slots handed back, or a push's
    reservation it could not use) and wake the putters waiting for room. The
    subtraction orders the slots' release before the look at the waiters (a
    full barrier on x86), so the notify needs no fence of its own
    (lp_fence_after_rmw)."""
    if nbytes:
        lp_fetch_sub_u64(&r.nbytes, nbytes)
        lp_ec_notify_after_rmw(&r.not_full)
    else:
        lp_ec_notify(&r.not_full)


cdef inline lp_slot_t *peek_one(lp_ring_t *r, uint64_t *pos_out) noexcept nogil:
    """The slot of the record ready at the head (its position in ``pos_out``),
    or NULL if none is: lp_peek_pop for one record, returning its slot."""
    cdef uint64_t pos = lp_load_relaxed(&r.dequeue_pos)
    cdef lp_slot_t *s
    cdef int64_t dif
    while True:
        s = slot_at(r, pos)
        dif = <int64_t>(lp_load_acquire(&s.seq) - (pos + 1))
        if dif == 0:
            pos_out[0] = pos
            return s
        if dif < 0:
            return NULL
        pos = lp_load_relaxed(&r.dequeue_pos)   # another consumer took pos


cdef inline void release_one(lp_ring_t *r, lp_slot_t *s, uint64_t pos) noexcept nogil:
    """lp_release_pop for the one record claimed at ``pos``, in slot ``s``."""
    cdef uint32_t length = s.length
    free_out_of_line(r, s)
    lp_store_release(&s.seq, pos + r.nslots)
    give_back_bytes(r, length)


cdef uint64_t lp_peek_pop(lp_ring_t *r, uint64_t max_items, uint64_t *pos_out,
                         uint64_t *payload_bytes) noexcept nogil:
    """Find up to ``max_items`` records ready at the head, without claiming them.

    Returns how many (0: none ready), their first position and their total
    payload length. The caller makes room for them, then claims exactly
    these with lp_commit_pop; if that fails, another consumer took the head
    and the caller peeks again. The lengths read here are those of the
    records claimed whenever the commit succeeds: a slot changes only after
    its position is claimed, and that claim would have moved dequeue_pos and
    failed the commit.
    """
    cdef uint64_t pos = lp_load_relaxed(&r.dequeue_pos)
    cdef uint64_t n, room, total = 0
    cdef lp_slot_t *s = head_ready(r, &pos)
    if max_items == 0 or s == NULL:
        return 0
    # Up to the last slot, then on from slot 0 if all of those were ready:
    # two runs, so no test per slot for the wrap.
    room = <uint64_t>(r.slots_end - s)
    n = ready_run(s, 0, min(max_items, room), pos + 1, &total)
    if n == room and n < max_items and lp_load_acquire(&r.slots.seq) == pos + n + 1:
        n = ready_run(r.slots, n, max_items, pos + n + 1, &total)
    pos_out[0] = pos
    payload_bytes[0] = total
    return n


cdef inline lp_slot_t *head_ready(lp_ring_t *r, uint64_t *pos) noexcept nogil:
    """The slot of the record ready at the head, from ``pos`` (the head as
    loaded by the caller, updated if another consumer has moved it), or
    NULL if none is ready."""
    cdef lp_slot_t *s
    cdef int64_t dif
    while True:
        s = slot_at(r, pos[0])
        dif = <int64_t>(lp_load_acquire(&s.seq) - (pos[0] + 1))
        if dif == 0:
            return s
        if dif < 0:
            return NULL         # empty (or the head is still being written)
        pos[0] = lp_load_relaxed(&r.dequeue_pos)    # another consumer took pos


cdef inline uint64_t ready_run(lp_slot_t *s, uint64_t n, uint64_t stop, uint64_t seq,
                               uint64_t *total) noexcept nogil:
    """From slot ``s``, which holds record ``n`` (ready, sequence ``seq``), on
    to record ``stop`` at most, without passing the last slot: the index after
    the last record ready, their lengths added to ``total``."""
    cdef uint64_t t = total[0]
    # Four at a time while all four are ready (as frame_run), then one by one.
    while n + 4 <= stop and lp_run_ready4(&s.seq, SLOT_WORDS, seq):
        t += (<uint64_t>lp_load_relaxed_u32(&s[0].length) + lp_load_relaxed_u32(&s[1].length)
              + lp_load_relaxed_u32(&s[2].length) + lp_load_relaxed_u32(&s[3].length))
        lp_prefetch(s + PREFETCH_AHEAD)
        n += 4
        s += 4
        seq += 4
    while n < stop and lp_load_acquire(&s.seq) == seq:
        t += lp_load_relaxed_u32(&s.length)
        n += 1
        s += 1
        seq += 1
    total[0] = t
    return n


cdef bint lp_commit_pop(lp_ring_t *r, uint64_t pos, uint64_t count) noexcept nogil:
    """Claim the ``count`` records peeked at ``pos``; False if someone else
    claimed the head first (then nothing is claimed)."""
    return lp_cas_strong_u64(&r.dequeue_pos, pos, pos + count)


cdef uint64_t lp_claim_pop(lp_ring_t *r, uint64_t max_items, uint64_t *pos_out) noexcept nogil:
    """Claim up to ``max_items`` ready records; return the count (0: none ready).

    The caller reads them with lp_slot_record and must hand them back with
    lp_release_pop(r, pos, count). For callers that need no room first.
    """
    cdef uint64_t n, payload
    while True:
        n = lp_peek_pop(r, max_items, pos_out, &payload)
        if n == 0 or lp_commit_pop(r, pos_out[0], n):
            return n


cdef const char *lp_slot_record(lp_ring_t *r, uint64_t pos, uint32_t *length) noexcept nogil:
    cdef lp_slot_t *s = slot_at(r, pos)
    length[0] = s.length
    return slot_data(r, s)


cdef void lp_release_pop(lp_ring_t *r, uint64_t pos, uint64_t count) noexcept nogil:
    cdef uint64_t i, total = 0
    cdef lp_slot_t *s = slot_at(r, pos)
    for i in range(count):
        if i:
            s = next_slot(r, s)
        total += s.length
        free_out_of_line(r, s)
        lp_store_release(&s.seq, pos + i + r.nslots)
    give_back_bytes(r, total)


cdef inline int make_bytes(lp_slot_t *s, PyObject **items, uint64_t n) except -1:
    """get_many's allocation: a bytes object for each of the ``n`` records
    peeked from slot ``s`` on (not past the last slot), of its length, stored
    straight into the list's array, which takes the new reference."""
    cdef uint64_t i
    for i in range(n):
        items[i] = new_bytes(lp_load_relaxed_u32(&s[i].length))
    return 0


cdef inline uint32_t copy_to_bytes(lp_ring_t *r, lp_slot_t *s, PyObject **items,
                                   uint64_t n) noexcept:
    """get_many's copy: the records of the ``n`` claimed slots from ``s`` (not
    past the last slot) into the bytes objects ``items``, made to their
    lengths. Returns LP_OUT_OF_LINE if any of them was out of line."""
    cdef uint64_t i
    cdef uint32_t offset, flags = 0
    cdef uint64_t share_size = r.share      # a local: the copies' char stores may alias r
    cdef char *share = slot_share(r, s)
    cdef const char *stored
    cdef PyObject *item
    for i in range(n):
        offset = s[i].offset
        item = items[i]
        flags |= offset
        stored = share + (offset & ~LP_OUT_OF_LINE)
        if offset & LP_OUT_OF_LINE:
            stored = out_of_line_copy(stored)
        lp_copy(PyBytes_AS_STRING_P(item), stored, <size_t>PyBytes_GET_SIZE_P(item))
        share += share_size
    return flags & LP_OUT_OF_LINE


cdef inline void release_claimed(lp_ring_t *r, uint64_t pos, uint64_t n, uint64_t payload,
                                 uint32_t out_of_line) noexcept nogil:
    """lp_release_pop for records whose ``payload`` is known, their bytes
    copied out: free the out-of-line copies, if ``out_of_line`` says there
    are any, and hand the slots back."""
    cdef uint64_t i
    cdef lp_slot_t *s
    if out_of_line:
        s = slot_at(r, pos)
        for i in range(n):
            free_out_of_line(r, s)
            s = next_slot(r, s)
    release_slots(r, pos, n)
    give_back_bytes(r, payload)


cdef inline bint readable(lp_ring_t *r) noexcept nogil:
    """A record is ready at the head, or the ring is closed and drained.

    If the head slot has moved on (another consumer took it between our two
    loads), re-read the head rather than report "empty": a waiter that
    parks on a stale "empty" while the next record is ready is never woken,
    because that record's notify has already happened.
    """
    cdef uint64_t pos = lp_load_acquire(&r.dequeue_pos)
    cdef int64_t dif
    while True:
        dif = <int64_t>(lp_load_acquire(&slot_at(r, pos).seq) - (pos + 1))
        if dif == 0:
            return True
        if dif < 0:
            return lp_ring_drained(r)
        pos = lp_load_acquire(&r.dequeue_pos)


cdef inline bint writable(lp_ring_t *r, uint64_t need_bytes) noexcept nogil:
    """The tail slot is free and ``need_bytes`` fit the budget, or the ring is
    closed. Stale positions are re-read, as in readable()."""
    cdef uint64_t pos = lp_load_acquire(&r.enqueue_pos)
    cdef uint64_t deq
    cdef int64_t dif
    while True:
        if pos & LP_CLOSED_BIT:
            return True
        if r.capacity < r.nslots:
            deq = lp_load_acquire(&r.dequeue_pos)
            if deq > pos:
                pos = lp_load_acquire(&r.enqueue_pos)
                continue
            if pos - deq >= r.capacity:
                return False
        dif = <int64_t>(lp_load_acquire(&slot_at(r, pos).seq) - pos)
        if dif == 0:
            return lp_load_relaxed(&r.nbytes) + need_bytes <= r.max_bytes
        if dif < 0:
            return False        # the slot still holds last lap's record: full
        pos = lp_load_acquire(&r.enqueue_pos)


cdef inline double remaining(double deadline) noexcept nogil:
    return -1.0 if deadline < 0 else deadline - lp_now()


cdef inline int park(lp_event_t *ev, uint32_t epoch, double left, double slice,
                     uint64_t *waits) noexcept nogil:
    """Sleep on ``ev`` for at most ``left`` seconds (< 0: no limit).

    ``slice`` < 0: signals do not end the wait (C callers). ``slice`` >= 0:
    return LP_INTERRUPTED when a signal interrupts the sleep, or, if
    ``slice`` > 0, once ``slice`` seconds have passed, so the caller can
    take the GIL and run Python's signal handlers. Otherwise LP_OK (woken,
    timed out or spurious: the caller re-checks).
    """
    cdef bint sliced = slice > 0 and (left < 0 or left > slice)
    cdef double until = 0.0
    cdef bint interrupted
    if sliced:
        left = slice
        until = lp_now() + slice
    lp_fetch_add_u64(waits, 1)
    interrupted = lp_ec_wait(ev, epoch, left)
    lp_ec_done(ev)
    if slice >= 0 and (interrupted or (sliced and lp_now() >= until)):
        return LP_INTERRUPTED
    return LP_OK


cdef int lp_wait_readable(lp_ring_t *r, double deadline, int *stop, double slice) noexcept nogil:
    """Wait until a record is probably ready or the ring is drained.

    ``deadline`` is absolute (lp_now() scale), < 0 for none; ``slice`` as in
    park(). Returns LP_OK (the caller re-tries its pop), LP_TIMEOUT,
    LP_STOPPED or LP_INTERRUPTED.
    """
    return lp_wait_gather(r, 1, deadline, stop, slice)


cdef int lp_wait_gather(lp_ring_t *r, uint64_t need, double deadline, int *stop,
                        double slice) noexcept nogil:
    """lp_wait_readable for a getter gathering a batch that still needs
    ``need`` records: wait until that many are in the ring (or a putter waits
    for room, or the ring is closed), not for each one.

    A worker gathering a batch of 50 from a trickle (the spec's generator:
    a record every 100 us) used to be woken by every put, take that one
    record and park again: a futex wake in the producer and a sleep and
    wake-up in the worker per record. Parked with its need noted in
    ``gathering``, it is woken once its batch can be had (notify_getters).
    A putter that starts waiting for room wakes it too (it takes what is
    there, which makes room), so a ring full by its byte budget before
    ``need`` records never stalls; ``close()`` and ``StopSignal.set()``
    wake every waiter as before. ``need`` is capped at half the capacity.
    Returns as lp_wait_readable.
    """
    if need > r.capacity // 2:
        need = r.capacity // 2
    if need <= 1:
        need = 1
    if gathered(r, need, True):
        return LP_OK
    # Counted as waiting from here, before the spin: a putter lingering for
    # the GIL (linger_for_gil) takes it as soon as this thread has let it go.
    # Read before we count ourselves: a putter lingering now stops only once
    # it sees us waiting, so it is about to take the GIL and put; worth a
    # longer spin than parking and being woken.
    cdef bint other_lingering = lp_load_relaxed_u32(&r.putter_lingering) != 0
    lp_fetch_add_u32(&r.getters_waiting, 1)
    if need > 1:
        note_gatherer(r, need)
    cdef int status = wait_readable(r, need, deadline, stop, slice, other_lingering)
    if need > 1:
        forget_gatherer(r)
    lp_fetch_sub_u32(&r.getters_waiting, 1)
    return status


cdef inline bint gathered(lp_ring_t *r, uint64_t need, bint look_closed) noexcept nogil:
    """What a getter needing ``need`` records waits for: a record ready at the
    head (or the ring drained), and, for more than one, the ``need``-th one
    from the head published too, a putter waiting for room, or (with
    ``look_closed``) the ring closed. It reads the ``need``-th record's header,
    not the count of claims, and the closed bit only before parking: a
    gatherer spins on this, and ``enqueue_pos`` is the producers' busiest line."""
    cdef uint64_t last
    if not readable(r):
        return False
    if need <= 1:
        return True
    last = lp_load_acquire(&r.dequeue_pos) + need - 1
    return (lp_load_acquire(&slot_at(r, last).seq) == last + 1
            or lp_load_relaxed_u32(&r.putters_waiting) != 0
            or (look_closed and lp_ring_is_closed(r)))


# ``gathering``'s low half: the least need of the gatherers counted in its high half.
cdef uint64_t LEAST_NEED = 0xFFFFFFFFULL


cdef inline void note_gatherer(lp_ring_t *r, uint64_t need) noexcept nogil:
    """Count a parked gatherer in ``gathering`` and lower its least need to ``need``."""
    cdef uint64_t old = lp_load_relaxed(&r.gathering)
    cdef uint64_t count, least
    while True:
        count = old >> 32
        least = old & LEAST_NEED
        if count == 0 or need < least:
            least = need
        if lp_cas_u64(&r.gathering, &old, ((count + 1) << 32) | least):
            return


cdef inline void forget_gatherer(lp_ring_t *r) noexcept nogil:
    """Undo note_gatherer. The least need of those left may be too low (only
    the last one out clears it): a notify then wakes them early, never late."""
    cdef uint64_t old = lp_load_relaxed(&r.gathering)
    cdef uint64_t count
    while True:
        count = (old >> 32) - 1
        if lp_cas_u64(&r.gathering, &old, (count << 32) | (old & LEAST_NEED) if count else 0):
            return


cdef inline void notify_getters(lp_ring_t *r) noexcept nogil:
    """After a publish: wake the parked getters (lp_ec_notify), unless every
    one of them is a gatherer whose batch is not there yet. The fence pairs
    with lp_ec_prepare's after note_gatherer: either this sees the gatherer
    and its need, or the gatherer's re-check sees this publish."""
    cdef uint32_t waiters
    cdef uint64_t gathering
    lp_fence()
    waiters = lp_load_relaxed_u32(&r.not_empty.waiters)
    if waiters == 0:
        return
    gathering = lp_load_relaxed(&r.gathering)
    if ((gathering >> 32) >= waiters and lp_ring_len(r) < (gathering & LEAST_NEED)
            and not lp_ring_is_closed(r)):
        return
    lp_ec_notify(&r.not_empty)


cdef inline bint wait_over(lp_ring_t *r, uint64_t need, bint look_closed, uint64_t refused) noexcept nogil:
    """wait_readable's test: gathered(), or, for a gatherer, a put refused for
    want of room since the wait began (``refused``: refused_puts then; see
    give_up_for_room)."""
    return gathered(r, need, look_closed) or (need > 1 and lp_load_relaxed(&r.refused_puts) != refused)


cdef inline int wait_readable(lp_ring_t *r, uint64_t need, double deadline, int *stop, double slice,
                              bint spin_long) noexcept nogil:
    cdef int spins = 0
    cdef int spin_limit = LP_SPIN_LIMIT_LONG if spin_long else LP_SPIN_LIMIT
    cdef int spun = 0
    cdef uint64_t seen = lp_ring_len(r) if need > 1 else 0
    cdef uint64_t refused = lp_load_relaxed(&r.refused_puts)
    cdef uint64_t count
    cdef uint32_t epoch
    cdef double left
    while True:
        if wait_over(r, need, False, refused):
            return LP_OK
        if stop != NULL and lp_load_acquire_int(stop):
            return LP_STOPPED
        if spins < spin_limit:
            spins += 1
            if spins == spin_limit and need > 1 and spun < LP_SPIN_LIMIT_LONG:
                # A gatherer whose records came in while it spun: the batch
                # fills faster than a park and a wake-up would take, so it
                # spins on (up to LP_SPIN_LIMIT_LONG pauses in all). From a
                # trickle nothing comes in a spin, and it parks.
                count = lp_ring_len(r)
                if count > seen:
                    seen = count
                    spun += spins
                    spins = 0
            lp_cpu_relax()
            continue
        epoch = lp_ec_prepare(&r.not_empty)
        if wait_over(r, need, True, refused):
            lp_ec_done(&r.not_empty)
            return LP_OK
        if stop != NULL and lp_load_acquire_int(stop):
            lp_ec_done(&r.not_empty)
            return LP_STOPPED
        left = remaining(deadline)
        if deadline >= 0 and left <= 0:
            lp_ec_done(&r.not_empty)
            return LP_TIMEOUT
        if park(&r.not_empty, epoch, left, slice, &r.get_waits) == LP_INTERRUPTED:
            return LP_INTERRUPTED


cdef int lp_wait_writable(lp_ring_t *r, uint64_t need_bytes, double deadline,
                          double slice) noexcept nogil:
    """Wait until a record of ``need_bytes`` probably fits, or the ring is closed.

    Returns LP_OK (the caller re-tries its push), LP_TIMEOUT or LP_INTERRUPTED
    (``slice`` as in park()).
    """
    if writable(r, need_bytes):
        return LP_OK
    # As in lp_wait_readable, the other way round.
    cdef bint other_lingering = lp_load_relaxed_u32(&r.getter_lingering) != 0
    lp_fetch_add_u32(&r.putters_waiting, 1)
    wake_gatherers(r)
    cdef int status = wait_writable(r, need_bytes, deadline, slice, other_lingering)
    lp_fetch_sub_u32(&r.putters_waiting, 1)
    return status


cdef int lp_wait_room(lp_ring_t *r, uint64_t need_bytes, double deadline,
                      double *last_wait) noexcept nogil:
    """lp_wait_writable for a producer that pushes lines in bulk (a line
    framer), with no signal slice, which keeps in ``last_wait`` how long its
    last wait took (start it at 0).

    If that wait was short, room is likely to come as soon again: a busy
    worker frees its slots every batch, ~30 us apart at the spec's batch of
    50. So it spins up to ROOM_SPIN seconds before it parks. Parked, it would
    sleep through each batch, and the worker would pay a futex wake (a
    system call and an interrupt to this CPU) for every batch it frees: 1 in
    8 of its time (docs/benchmarks.md, issue 9's tenth round). After a long
    wait (a slow sink) it spins only as briefly as lp_wait_writable, so a
    slow consumer costs no CPU.
    """
    if writable(r, need_bytes):
        return LP_OK
    cdef double started = lp_now()
    cdef double spin_until = started
    cdef uint32_t spins = 0
    cdef int status = LP_OK
    if bulk_spin and last_wait[0] <= ROOM_SPIN:
        spin_until += ROOM_SPIN
        if 0 <= deadline < spin_until:
            spin_until = deadline   # never past the caller's deadline (timeout=0: no spin)
    lp_fetch_add_u32(&r.putters_waiting, 1)
    wake_gatherers(r)
    while not writable(r, need_bytes):
        lp_cpu_relax()
        spins += 1
        if spins % 32 == 0 and lp_now() >= spin_until:
            # Spun out: wait as any putter does (a short spin, then park).
            status = wait_writable(r, need_bytes, deadline, -1.0,
                                   lp_load_relaxed_u32(&r.getter_lingering) != 0)
            break
    lp_fetch_sub_u32(&r.putters_waiting, 1)
    last_wait[0] = lp_now() - started
    return status


cdef inline void wake_gatherers(lp_ring_t *r) noexcept nogil:
    """A putter starts waiting for room: getters gathering a batch (lp_wait_gather)
    take what is there now. After the putters_waiting increment, whose
    counterpart is the gatherer's re-check; lp_ec_notify fences first."""
    lp_ec_notify(&r.not_empty)


cdef inline void give_up_for_room(lp_ring_t *r) noexcept nogil:
    """A non-blocking put or put_many gives up for want of room: the ring is
    full, so a getter gathering a batch takes what is there now, as for a
    putter that starts waiting (wake_gatherers; a blocking put that times
    out has woken them so when it started to wait).
    A program that drops records when the ring is full (the logging
    handler's when_full="drop") would otherwise drop until the gatherer's
    timeout. The gatherers see the count move (wait_readable); the
    increment comes before their wake-up, as a waiting putter's does."""
    if not lp_ring_is_closed(r):
        lp_fetch_add_u64(&r.refused_puts, 1)
        wake_gatherers(r)


cdef inline int wait_writable(lp_ring_t *r, uint64_t need_bytes, double deadline,
                              double slice, bint spin_long) noexcept nogil:
    cdef int spins = 0
    cdef int spin_limit = LP_SPIN_LIMIT_LONG if spin_long else LP_SPIN_LIMIT
    cdef uint32_t epoch
    cdef double left
    while True:
        if writable(r, need_bytes):
            return LP_OK
        if spins < spin_limit:
            spins += 1
            lp_cpu_relax()
            continue
        epoch = lp_ec_prepare(&r.not_full)
        if writable(r, need_bytes):
            lp_ec_done(&r.not_full)
            return LP_OK
        left = remaining(deadline)
        if deadline >= 0 and left <= 0:
            lp_ec_done(&r.not_full)
            return LP_TIMEOUT
        if park(&r.not_full, epoch, left, slice, &r.put_waits) == LP_INTERRUPTED:
            return LP_INTERRUPTED


cdef inline void stamp_gil_push(lp_ring_t *r) noexcept nogil:
    # Called with the GIL held after a push: tells a lingering getter that
    # the producer it follows holds the GIL (same cache line as enqueue_pos,
    # which the push has just written).
    lp_store_relaxed(&r.gil_enqueue_pos, lp_load_relaxed(&r.enqueue_pos) & ~LP_CLOSED_BIT)


cdef inline void stamp_gil_pop(lp_ring_t *r) noexcept nogil:
    lp_store_relaxed(&r.gil_dequeue_pos, lp_load_relaxed(&r.dequeue_pos))


cdef inline bint moving_with_gil(uint64_t pos, uint64_t *gil_pos) noexcept nogil:
    # The other side's last moves were made with the GIL held: its position
    # is at most two push chunks past its last GIL stamp (a put_many stamps
    # after each chunk; another thread may be mid-chunk). Signed: a stamp
    # written after ``pos`` was read may be ahead of it.
    return <int64_t>(pos - lp_load_relaxed(gil_pos)) <= 2 * LP_PUSH_CHUNK


cdef void linger_for_gil(lp_ring_t *r, bint getter) noexcept nogil:
    """After a wait that ended, let the other side run on before we take the GIL.

    The wait ended because the other side moved (a put made a record
    ready, a get made room). The thread that moved usually holds the GIL
    and goes on moving; taking the GIL now would park this thread on the
    GIL's condition variable, and a hand-off of the GIL costs a wake-up of
    a sleeping thread (tens of microseconds on a VM), twice per fill and
    drain of the ring. So this thread spins on, without the GIL, while the
    other side keeps moving with the GIL held and until it starts waiting
    itself (it let the GIL go: taking it then is immediate), stops for
    LINGER_QUIET seconds, moves without the GIL (a nogil pusher: there is
    nothing to wait for), or LINGER_MAX seconds pass. One lingerer per
    side; never on a free-threaded build (no GIL) or with one CPU (the spin
    would hold up the other side).
    """
    if not linger_enabled:
        return
    cdef uint32_t *token = &r.getter_lingering if getter else &r.putter_lingering
    cdef uint32_t *other_waiting = &r.putters_waiting if getter else &r.getters_waiting
    cdef uint64_t *other_pos = &r.enqueue_pos if getter else &r.dequeue_pos
    cdef uint64_t *other_gil_pos = &r.gil_enqueue_pos if getter else &r.gil_dequeue_pos
    cdef uint64_t last, now_pos
    cdef double start, now, moved
    cdef unsigned int spins = 0
    last = lp_load_relaxed(other_pos)
    if not moving_with_gil(last, other_gil_pos):
        return
    if not lp_cas_strong_u32(token, 0, 1):
        return
    start = moved = lp_now()
    while lp_load_relaxed_u32(other_waiting) == 0:
        lp_cpu_relax()
        spins += 1
        if spins % 16:
            continue
        now_pos = lp_load_relaxed(other_pos)
        if now_pos & LP_CLOSED_BIT or not moving_with_gil(now_pos, other_gil_pos):
            break
        now = lp_now()
        if now_pos != last:
            last = now_pos
            moved = now
        elif now - moved > LINGER_QUIET:
            break
        if now - start > LINGER_MAX:
            break
    lp_store_release_u32(token, 0)


cdef int lp_push_wait(lp_ring_t *r, const char *data, uint32_t length, double deadline) noexcept nogil:
    """Push one record, waiting while the ring is full (for nogil callers)."""
    cdef int status
    while True:
        if lp_push_many(r, &data, &length, 1, &status) == 1:
            return LP_OK
        if status != LP_WOULD_BLOCK:
            return status
        if lp_wait_writable(r, length, deadline, -1.0) == LP_TIMEOUT:
            return LP_TIMEOUT


# --------------------------------------------------------------------------
# Python API
# --------------------------------------------------------------------------

cdef inline double deadline_from(object timeout) except? -2.0:
    """Absolute deadline for a timeout in seconds; -1.0 means wait forever."""
    if timeout is None:
        return -1.0
    return deadline_after(timeout)


cdef inline double timeout_seconds(object timeout) except? -2.0:
    """A timeout in seconds, checked as deadline_from checks it; -1.0 for None."""
    if timeout is None:
        return -1.0
    return checked_timeout(timeout)


cdef double checked_timeout(object timeout) except? -2.0:
    cdef double t
    if PyLong_CheckExact(timeout):
        t = PyLong_AsDouble(timeout)    # an int, without making a float of it
    else:
        t = timeout
    if not t >= 0:      # also refuses NaN, which would otherwise wait forever
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
    return t


cdef double deadline_after(object timeout) except? -2.0:
    # deadline_from's work for a timeout that is not None, out of line: the
    # per-record calls (put, get) inline only the test for None.
    return lp_now() + checked_timeout(timeout)


cdef double lp_wait_slice() noexcept:
    """The ``slice`` for a wait made by the calling Python thread (see park()).

    Every Python caller's wait ends on EINTR so its signal handlers can run;
    the main thread's also ends every LP_MAIN_THREAD_SLICE seconds, for
    signals the kernel delivered to another thread.
    """
    if PyThread_get_thread_ident() == MAIN_THREAD_IDENT:
        return LP_MAIN_THREAD_SLICE
    return 0.0


cdef int run_signal_handlers(object partial_name, object partial) except -1:
    """Run Python's pending signal handlers after an interrupted wait.

    If a handler raises (KeyboardInterrupt, say), the exception propagates;
    when the call had already made progress, that progress travels on the
    exception as attribute ``partial_name`` (the records a get_batch had
    claimed, the count a put_many had taken), so nothing is lost silently,
    as ``BlockingIOError.characters_written`` does for partial writes.
    """
    try:
        PyErr_CheckSignals()
    except BaseException as exc:
        if partial_name is not None:
            try:
                setattr(exc, partial_name, partial)
            except Exception:
                pass
        raise
    return 0


cdef str record_too_large(Py_ssize_t size, uint64_t limit):
    return f"record of {size} bytes is over max_record_size ({limit} bytes)"


cdef int check_record_size(Py_ssize_t size, uint64_t limit) except -1:
    if size > <Py_ssize_t>limit:
        raise ValueError(record_too_large(size, limit))
    return 0


cdef int get_record_buffer(object item, Py_buffer *view) except -1:
    """Fill ``view`` with a contiguous view of ``item``, or raise TypeError."""
    try:
        PyObject_GetBuffer(item, view, PyBUF_SIMPLE)
    except (TypeError, BufferError):
        raise TypeError(
            f"records must be bytes-like (bytes, bytearray, memoryview, ...), "
            f"got {type(item).__name__}") from None
    return 0


cdef int check_max_items(object max_items) except -1:
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, got {max_items!r}")
    return 0


# --------------------------------------------------------------------------
# Batches: C-level storage and the copy out of the ring (no GIL needed)
# --------------------------------------------------------------------------

cdef inline int grow(void **array, Py_ssize_t *cap, Py_ssize_t want, size_t item,
                     Py_ssize_t least) noexcept nogil:
    """Make ``array`` (``cap`` items of ``item`` bytes) hold at least ``want``
    items, doubling it (and at least ``least``) so growth costs O(1) a time."""
    cdef void *p
    if want <= cap[0]:
        return LP_OK
    want = max(want, 2 * cap[0], least)
    p = realloc(array[0], <size_t>want * item)
    if p == NULL:
        return LP_NOMEM
    array[0] = p
    cap[0] = want
    return LP_OK

cdef int batch_reserve_run(lp_batch_t *b) noexcept nogil:
    """Make room for one more run in the run list (a run: two uint64_t)."""
    return grow(<void **>&b.runs, &b.runs_cap, b.nruns + 1, 2 * sizeof(uint64_t), 4)

cdef int batch_add_run(lp_batch_t *b, uint64_t pos, uint64_t n) noexcept nogil:
    """Remember that ring positions pos .. pos+n-1 are in this batch."""
    if b.nruns and b.runs[2 * b.nruns - 2] + b.runs[2 * b.nruns - 1] == pos:
        b.runs[2 * b.nruns - 1] += n  # continues the previous run
        return LP_OK
    if batch_reserve_run(b) != LP_OK:
        return LP_NOMEM
    b.runs[2 * b.nruns] = pos
    b.runs[2 * b.nruns + 1] = n
    b.nruns += 1
    return LP_OK

cdef int batch_reserve_offsets(lp_batch_t *b, Py_ssize_t records) noexcept nogil:
    """Make room for ``records`` more entries in the offsets array (and the end one)."""
    return grow(<void **>&b.offsets, &b.offsets_cap, b.count + records + 1, sizeof(Py_ssize_t), 64)

cdef int batch_reserve_bytes(lp_batch_t *b, Py_ssize_t nbytes) noexcept nogil:
    """Make room for ``nbytes`` more framed bytes."""
    return grow(<void **>&b.buf, &b.cap, b.size + nbytes, 1, 4096)


cdef extern from *:
    """
    /* An offset no slot ever holds (inline offsets are below 2**25, out-of-line
     * ones 2**31 plus as much): peek_framed's "whatever comes next starts a block". */
    #define LP_NO_OFFSET 0xFFFFFFFFu
    """
    uint32_t NO_OFFSET "LP_NO_OFFSET"

cdef extern from "_lp_sync.h":
    # LP_TAKE_CHUNK as a constant, for the size of an array on the stack.
    enum: TAKE_CHUNK "LP_TAKE_CHUNK"

cdef extern from "_lp_sync.h" nogil:
    void lp_store_release_run(uint64_t *p, size_t stride, uint64_t v, size_t n)
    size_t lp_count_run(uint64_t *p, size_t stride, uint64_t v, size_t limit, size_t ahead)
    bint lp_run_ready4(uint64_t *p, size_t stride, uint64_t v)

cdef enum:
    # A slot header in 64-bit words: the stride from one sequence to the next.
    SLOT_WORDS = sizeof(lp_slot_t) // sizeof(uint64_t)


cdef uint64_t peek_framed(lp_ring_t *r, uint64_t max_items, uint64_t *pos_out,
                          Py_ssize_t *offsets, uint32_t *blocks, uint64_t *nblocks) noexcept nogil:
    """lp_peek_pop for a batch: find up to ``max_items`` records ready at the
    head, without claiming them, and frame them as it goes, in the same pass
    over their headers.

    ``offsets[0]`` holds where the first record will start in the batch; on
    return ``offsets[i + 1]`` is where record ``i`` ends, its newline
    included. ``blocks[0 .. nblocks)`` are the indexes of the records that
    start a block: a run of records whose stored bytes lie one after the
    other in the ring (one claim's, or a record out of line alone), so that
    the copy after the claim (copy_framed) is one copy per block and never
    looks at the other headers again.

    All of it is read before the claim, as lp_peek_pop reads the lengths,
    and for the same reason it is what the claim gets whenever
    lp_commit_pop succeeds: a slot's header changes only after its position
    is claimed, and that claim would have moved dequeue_pos and failed the
    commit. (The header fields are atomics for that: relaxed loads here.)
    """
    cdef uint64_t pos = lp_load_relaxed(&r.dequeue_pos)
    cdef uint64_t n, room
    cdef lp_slot_t *s = head_ready(r, &pos)
    cdef frame_t f
    if max_items == 0 or s == NULL:
        return 0
    f.size = offsets[0]
    f.expect = NO_OFFSET
    f.nblocks = 0
    f.share_size = <uint32_t>r.share
    room = <uint64_t>(r.slots_end - s)
    n = frame_run(&f, s, 0, min(max_items, room), pos + 1, offsets, blocks)
    if n == room and n < max_items and lp_load_acquire(&r.slots.seq) == pos + n + 1:
        f.expect = NO_OFFSET    # a claim never wraps: a block starts at slot 0
        n = frame_run(&f, r.slots, n, max_items, pos + n + 1, offsets, blocks)
    pos_out[0] = pos
    nblocks[0] = f.nblocks
    return n


ctypedef struct frame_t:
    # peek_framed's state from one run of slots to the next.
    Py_ssize_t size         # where the next record will start in the batch
    uint32_t expect         # the offset a record continuing the block has
    uint32_t share_size
    uint64_t nblocks


cdef inline uint64_t frame_run(frame_t *f, lp_slot_t *s, uint64_t n, uint64_t stop,
                               uint64_t seq, Py_ssize_t *offsets, uint32_t *blocks) noexcept nogil:
    """peek_framed from slot ``s``, which holds record ``n`` (ready, sequence
    ``seq``), on to record ``stop`` at most, without passing the last slot;
    returns the index after the last record ready."""
    cdef uint32_t expect = f.expect
    cdef uint32_t share_size = f.share_size
    cdef Py_ssize_t size = f.size
    cdef uint64_t nb = f.nblocks
    # Four at a time while all four are ready (their sequences compared at
    # once: the first is known ready, checking it again is one load), then
    # one by one.
    while n + 4 <= stop and lp_run_ready4(&s.seq, SLOT_WORDS, seq):
        frame_one(s, n, share_size, &expect, &size, &nb, offsets, blocks)
        frame_one(s + 1, n + 1, share_size, &expect, &size, &nb, offsets, blocks)
        frame_one(s + 2, n + 2, share_size, &expect, &size, &nb, offsets, blocks)
        frame_one(s + 3, n + 3, share_size, &expect, &size, &nb, offsets, blocks)
        lp_prefetch(s + PREFETCH_AHEAD)
        n += 4
        s += 4
        seq += 4
    while n < stop and lp_load_acquire(&s.seq) == seq:
        frame_one(s, n, share_size, &expect, &size, &nb, offsets, blocks)
        n += 1
        s += 1
        seq += 1
    f.expect = expect
    f.size = size
    f.nblocks = nb
    return n


cdef inline void frame_one(lp_slot_t *s, uint64_t n, uint32_t share_size, uint32_t *expect,
                           Py_ssize_t *size, uint64_t *nb, Py_ssize_t *offsets,
                           uint32_t *blocks) noexcept nogil:
    """Frame record ``n``, ready in slot ``s``: its end into ``offsets[n + 1]``
    and, if it starts a block, ``n`` into the block list."""
    cdef uint32_t length = lp_load_relaxed_u32(&s.length)
    cdef uint32_t offset = lp_load_relaxed_u32(&s.offset)
    # Within a block, each record starts where the one before it ended, so
    # its offset (from its own share) is that one's end, less a share. An
    # out-of-line record's offset (flag bit set) matches no inline record's
    # end, and nothing may match the end of an out-of-line one: it is a
    # block of its own. (Its pointer's end could be the offset of the next
    # claim's first pointer.)
    if offset != expect[0]:
        blocks[nb[0]] = <uint32_t>n
        nb[0] += 1
    expect[0] = offset + length + 1 - share_size
    if offset & LP_OUT_OF_LINE:
        expect[0] = NO_OFFSET
    size[0] += length + 1
    offsets[n + 1] = size[0]


cdef inline void release_slots(lp_ring_t *r, uint64_t pos, uint64_t n) noexcept nogil:
    """Hand the ``n`` slots from ``pos`` back to the producers, one lap on:
    a release store of each sequence, in order, in two runs split at the
    wrap (no test per slot)."""
    cdef lp_slot_t *s = slot_at(r, pos)
    cdef uint64_t m = <uint64_t>(r.slots_end - s)
    if m > n:
        m = n
    lp_store_release_run(&s.seq, SLOT_WORDS, pos + r.nslots, m)
    lp_store_release_run(&r.slots.seq, SLOT_WORDS, pos + m + r.nslots, n - m)


ctypedef struct block_t:
    # One block of a claim framed by peek_framed, as copy_framed and
    # hold_framed read it: where its stored bytes are and how long it is.
    Py_ssize_t start        # offset of its first record in the batch
    Py_ssize_t length       # framed: newlines included
    char *stored            # its bytes in the ring, or the out-of-line pointer's place
    bint out_of_line        # one record stored apart (its bytes: out_of_line_copy(stored))
    uint32_t stamp          # when it was pushed (a claim stamps all its records alike)


cdef inline void block_at(lp_ring_t *r, uint64_t first, const Py_ssize_t *offsets,
                          const uint32_t *blocks, uint64_t nblocks, uint64_t k, uint64_t n,
                          block_t *block) noexcept nogil:
    """Block ``k`` of the ``nblocks`` of ``n`` records claimed from slot index
    ``first`` (offsets and blocks as peek_framed left them)."""
    cdef uint64_t i = blocks[k]
    cdef uint64_t end = blocks[k + 1] if k + 1 < nblocks else n
    cdef uint64_t idx = first + i
    cdef uint32_t offset
    if idx >= r.nslots:
        idx -= r.nslots
    offset = r.slots[idx].offset
    block.start = offsets[i]
    block.length = offsets[end] - offsets[i]
    block.stored = r.data + idx * r.share + (offset & ~LP_OUT_OF_LINE)
    block.out_of_line = (offset & LP_OUT_OF_LINE) != 0
    block.stamp = r.stamps[idx]


cdef void copy_framed(lp_batch_t *b, lp_ring_t *r, uint64_t pos, uint64_t n,
                      const uint32_t *blocks, uint64_t nblocks) noexcept nogil:
    """Copy the ``n`` records claimed at ``pos``, framed by peek_framed (their
    offsets already in the batch, room made for their bytes and one more
    run), into the batch one block at a time, and hand their slots back."""
    cdef Py_ssize_t *offsets = b.offsets + b.count   # offsets[i]: where record i starts
    cdef uint64_t first = <uint64_t>(slot_at(r, pos) - r.slots)
    cdef uint64_t k
    cdef block_t block
    cdef char *out
    cdef char *copy
    cdef uint32_t now_ms = lp_now_ms()
    cdef uint32_t max_age = 0
    cdef Py_ssize_t size = offsets[n]
    cdef double oldest
    for k in range(nblocks):
        block_at(r, first, offsets, blocks, nblocks, k, n, &block)
        out = b.buf + block.start
        # A block is one claim's (or part of one), and a claim stamps all
        # its records alike: its first record's stamp is the block's.
        max_age = older(max_age, now_ms, block.stamp)
        if block.out_of_line:                   # a block of its own
            copy = out_of_line_copy(block.stored)
            memcpy(out, copy, block.length - 1)
            out[block.length - 1] = b'\n'
            free(copy)
        else:
            lp_copy(out, block.stored, block.length)
    b.size = size
    b.count += n
    # Only now that every byte is copied: a slot handed back lets a producer
    # write its share again, and a record's bytes may reach past its own.
    release_slots(r, pos, n)
    batch_add_run(b, pos, n)
    oldest = lp_now() - max_age / 1000.0
    if oldest < b.oldest:
        b.oldest = oldest
    size -= offsets[0] + <Py_ssize_t>n            # the payload: bytes less newlines
    give_back_bytes(r, <uint64_t>size)


cdef int lp_batch_take(lp_batch_t *b, lp_ring_t *r, uint64_t max_items) noexcept nogil:
    """Move up to ``max_items`` ready records from the ring into the batch.

    Takes at most LP_TAKE_CHUNK per call. Room is made for the records
    seen at the head *before* they are claimed, from their real lengths,
    so nothing can fail once they are ours; short of memory, it takes
    fewer. Returns LP_OK (check count for how many) or LP_NOMEM when not
    even the next record fits, in which case nothing was claimed.
    """
    cdef uint64_t pos, n, nblocks
    cdef uint32_t blocks[TAKE_CHUNK]
    if max_items > LP_TAKE_CHUNK:
        max_items = LP_TAKE_CHUNK
    if batch_reserve_run(b) != LP_OK:  # so that add_run cannot fail after the claim
        return LP_NOMEM
    while True:
        # Room for the offsets first: the peek writes them as it frames.
        if batch_reserve_offsets(b, max_items) != LP_OK:
            if max_items == 1:
                return LP_NOMEM
            max_items //= 2         # short of memory: take fewer records
            continue
        b.offsets[b.count] = b.size
        n = peek_framed(r, max_items, &pos, b.offsets + b.count, blocks, &nblocks)
        if n == 0:
            return LP_OK
        if (batch_reserve_pieces(b, nblocks) if b.hold != NULL
                else batch_reserve_bytes(b, b.offsets[b.count + n] - b.size)) != LP_OK:
            if n == 1:
                return LP_NOMEM
            max_items = n // 2      # short of memory: take fewer records
            continue
        if lp_commit_pop(r, pos, n):
            break
    if b.hold != NULL:
        hold_framed(b, r, pos, n, blocks, nblocks)
    else:
        copy_framed(b, r, pos, n, blocks, nblocks)
    return LP_OK


# Held batches: the claims stay taken and the batch keeps where the framed
# bytes lie. A claimed position's share is written again only once it and
# every position before it are free (see fill_claim), so the bytes of a held
# record stay as they are, whatever other consumers hand back meanwhile,
# exactly as they do for copy_framed between its claim and its release.

cdef char NEWLINE[1]
NEWLINE[0] = b'\n'

cdef int batch_reserve_pieces(lp_batch_t *b, uint64_t nblocks) noexcept nogil:
    """Make room for the pieces of ``nblocks`` more blocks: one each, two
    for a record out of line (its copy and a newline)."""
    return grow(<void **>&b.pieces, &b.pieces_cap, b.npieces + 2 * <Py_ssize_t>nblocks, sizeof(iovec), 16)


cdef inline void add_piece(lp_batch_t *b, char *start, Py_ssize_t length) noexcept nogil:
    # One more stretch of framed bytes; it continues the last one when it
    # starts where that one ends (the rest of a claim another take began).
    cdef iovec *last
    if b.npieces:
        last = &b.pieces[b.npieces - 1]
        if <char *>last.iov_base + last.iov_len == start and start != NEWLINE:
            last.iov_len += <size_t>length
            return
    b.pieces[b.npieces].iov_base = start
    b.pieces[b.npieces].iov_len = <size_t>length
    b.npieces += 1


cdef void hold_framed(lp_batch_t *b, lp_ring_t *r, uint64_t pos, uint64_t n,
                      const uint32_t *blocks, uint64_t nblocks) noexcept nogil:
    """copy_framed for a held batch: note where each block of the ``n``
    records claimed at ``pos`` lies instead of copying it, and keep their
    slots (room made for the pieces and one more run)."""
    cdef Py_ssize_t *offsets = b.offsets + b.count
    cdef uint64_t first = <uint64_t>(slot_at(r, pos) - r.slots)
    cdef uint64_t k
    cdef block_t block
    cdef uint32_t now_ms = lp_now_ms()
    cdef uint32_t max_age = 0
    cdef double oldest
    for k in range(nblocks):
        block_at(r, first, offsets, blocks, nblocks, k, n, &block)
        max_age = older(max_age, now_ms, block.stamp)
        if block.out_of_line:                   # a block of its own: its copy, then a newline
            add_piece(b, out_of_line_copy(block.stored), block.length - 1)
            add_piece(b, NEWLINE, 1)
            b.out_of_line = True
        else:
            add_piece(b, block.stored, block.length)
    b.size = offsets[n]
    b.count += n
    batch_add_run(b, pos, n)
    oldest = lp_now() - max_age / 1000.0
    if oldest < b.oldest:
        b.oldest = oldest


cdef void lp_batch_unhold(lp_batch_t *b) noexcept nogil:
    """Give a held batch's slots (and its share of the byte budget) back to
    the ring, freeing its out-of-line copies; the batch is then empty. Its
    bytes must not be read after this."""
    cdef Py_ssize_t k
    cdef uint64_t payload = <uint64_t>(b.size - b.count)   # framed bytes less the newlines
    if b.hold == NULL or b.count == 0:
        return
    # Run by run (one, unless the batch was taken in several claims); the
    # byte budget goes back with the last.
    for k in range(b.nruns):
        release_claimed(b.hold, b.runs[2 * k], b.runs[2 * k + 1],
                        payload if k == b.nruns - 1 else 0, b.out_of_line)
    b.size = b.count = b.nruns = b.npieces = 0
    b.out_of_line = False


cdef inline void gather_pieces(char *out, const iovec *pieces, Py_ssize_t npieces) noexcept nogil:
    # The pieces' bytes, one after another, into ``out`` (room for all of them).
    cdef Py_ssize_t k
    for k in range(npieces):
        lp_copy(out, <char *>pieces[k].iov_base, pieces[k].iov_len)
        out += pieces[k].iov_len


cdef int lp_batch_detach(lp_batch_t *b) noexcept nogil:
    """Copy a held batch's bytes out of the ring into its own buffer, then
    give the slots back: an ordinary batch from then on, the same records.
    LP_NOMEM (and nothing changed) if the buffer cannot be had."""
    cdef Py_ssize_t count = b.count, size = b.size, nruns = b.nruns
    if b.hold == NULL:
        return LP_OK
    if grow(<void **>&b.buf, &b.cap, size, 1, 4096) != LP_OK:
        return LP_NOMEM
    gather_pieces(b.buf, b.pieces, b.npieces)
    lp_batch_unhold(b)
    # The same records, now in buf: unhold emptied the counts, not the arrays.
    b.count, b.size, b.nruns = count, size, nruns
    b.hold = NULL
    return LP_OK


cdef inline uint32_t older(uint32_t max_age, uint32_t now_ms, uint32_t stamp) noexcept nogil:
    # The larger of max_age and the age of a record stamped ``stamp``; a
    # stamp from the future is clock skew, not age.
    cdef uint32_t age = now_ms - stamp
    return age if age > max_age and age < 0x80000000u else max_age


# The memory of the last Batch let go, kept for the next get_batch: a
# worker takes a batch, writes it and drops it, over and over, and each of
# those paid three mallocs and three frees (the buffer, the offsets, the run
# list: ~9 instructions a record in batches of 100, bench/ring_cost.py).
# One spare for the module, claimed with a CAS so that threads without a GIL
# never share it; only small enough memory is kept.
cdef struct spare_t:
    uint32_t state              # SPARE_EMPTY, SPARE_BUSY (being filled or emptied), SPARE_FULL
    lp_batch_t memory           # only its memory fields (see move_batch_memory) are used

cdef enum:
    SPARE_EMPTY = 0
    SPARE_BUSY = 1
    SPARE_FULL = 2
    SPARE_MAX_BYTES = 1 << 20   # the most buffer kept
    SPARE_MAX_RECORDS = 1 << 14 # the most offsets kept

cdef spare_t spare


cdef inline void move_batch_memory(lp_batch_t *to, const lp_batch_t *source) noexcept nogil:
    """Give ``to`` the buffer, offsets and run list of ``source`` with their
    capacities (not its contents: size, count, nruns and oldest stay)."""
    to.buf = source.buf
    to.cap = source.cap
    to.offsets = source.offsets
    to.offsets_cap = source.offsets_cap
    to.runs = source.runs
    to.runs_cap = source.runs_cap


cdef inline bint batch_memory_to_spare(lp_batch_t *b) noexcept nogil:
    """Keep ``b``'s memory as the spare if there is none and it is small
    enough; False: the caller frees it."""
    if (b.buf == NULL or b.offsets == NULL or b.runs == NULL
            or b.cap > SPARE_MAX_BYTES or b.offsets_cap > SPARE_MAX_RECORDS
            or not lp_cas_strong_u32(&spare.state, SPARE_EMPTY, SPARE_BUSY)):
        return False
    move_batch_memory(&spare.memory, b)
    lp_store_release_u32(&spare.state, SPARE_FULL)
    return True


cdef inline void batch_memory_from_spare(lp_batch_t *b) noexcept nogil:
    """Give the empty batch ``b`` the spare memory, if there is some."""
    if not lp_cas_strong_u32(&spare.state, SPARE_FULL, SPARE_BUSY):
        return
    move_batch_memory(b, &spare.memory)
    lp_store_release_u32(&spare.state, SPARE_EMPTY)


cdef void free_batch_memory(lp_batch_t *b) noexcept nogil:
    """Let the batch's buffer, offsets and run list go (to the spare, if it
    takes them); the fields are left as they were (batch_without_memory)."""
    if not batch_memory_to_spare(b):
        free(b.buf)
        free(b.offsets)
        free(b.runs)


cdef inline void batch_without_memory(lp_batch_t *b) noexcept nogil:
    """An empty batch with no buffer, offsets or run list: a new one, or one
    whose memory free_batch_memory let go."""
    b.buf = NULL
    b.offsets = NULL
    b.runs = NULL
    b.size = b.cap = b.count = b.offsets_cap = 0
    b.nruns = b.runs_cap = 0
    b.oldest = INFINITY


cdef void lp_batch_clear(lp_batch_t *b) noexcept nogil:
    """Empty the batch for reuse, keeping its memory (a held one gives its
    slots back first)."""
    lp_batch_unhold(b)
    b.size = b.count = b.nruns = b.npieces = 0
    b.out_of_line = False
    b.oldest = INFINITY


cdef extern from *:
    """
    #include <limits.h>
    #ifndef IOV_MAX
    #define IOV_MAX 1024
    #endif
    """
    int LP_IOV_MAX "IOV_MAX"

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR

cdef extern from "<unistd.h>" nogil:
    ssize_t posix_write "write"(int fd, const void *buf, size_t count)


cdef int write_pieces(int fd, const iovec *pieces, Py_ssize_t npieces,
                      Py_ssize_t *written) noexcept nogil:
    """Write the ``npieces`` stretches in order to ``fd``, writev(2) after
    writev(2), going on after short writes. Adds the bytes written to
    ``written``; returns 0 when all are written, the errno of a call that
    failed, or -1 for a call that wrote nothing. ``pieces`` is not changed:
    a piece cut by a short write goes on with a plain write of its rest."""
    cdef Py_ssize_t i = 0
    cdef size_t skip = 0
    cdef ssize_t w
    cdef int m
    while i < npieces:
        if skip:
            w = posix_write(fd, <char *>pieces[i].iov_base + skip, pieces[i].iov_len - skip)
        else:
            m = <int>min(npieces - i, <Py_ssize_t>LP_IOV_MAX)
            w = writev(fd, pieces + i, m)
        if w < 0:
            return errno
        if w == 0:
            return -1
        written[0] += w
        w += <ssize_t>skip
        while i < npieces and <size_t>w >= pieces[i].iov_len:
            w -= <ssize_t>pieces[i].iov_len
            i += 1
        skip = <size_t>w
    return 0


cdef enum:
    USERS_BUSY = 0xFFFFFFFF     # Batch.users: release or detach in progress
    # write_to gathers a held batch into one buffer first when its pieces
    # average fewer bytes than this: records stored out of line (over
    # slot_size - 17 bytes) are two pieces each, and the kernel's copy of
    # thousands of ~100-byte pieces took 1.19x the time of a memcpy and one
    # write (bench/held_write.py --slot-size 128 --mix production).
    SCATTERED_PIECE_BYTES = 512


cdef int write_gathered(int fd, const iovec *pieces, Py_ssize_t npieces, Py_ssize_t size,
                        Py_ssize_t *written) noexcept nogil:
    """write_pieces, from one buffer the pieces are copied into first; -2 if
    that buffer could not be had (nothing written)."""
    cdef char *buf = <char *>malloc(<size_t>size)
    cdef iovec whole
    cdef int error
    if buf == NULL:
        return -2
    gather_pieces(buf, pieces, npieces)
    whole.iov_base = buf
    whole.iov_len = <size_t>size
    error = write_pieces(fd, &whole, 1, written)
    free(buf)
    return error


cdef int write_batch_to(int fd, lp_batch_t *b, Py_ssize_t *written) noexcept nogil:
    """Batch.write_to's system calls, from the ring (held) or the batch's buffer."""
    cdef iovec whole
    cdef int error
    if b.hold == NULL:
        whole.iov_base = b.buf
        whole.iov_len = <size_t>b.size
        return write_pieces(fd, &whole, 1 if b.size else 0, written)
    if written[0] == 0 and b.npieces > 1 and b.size < b.npieces * SCATTERED_PIECE_BYTES:
        error = write_gathered(fd, b.pieces, b.npieces, b.size, written)
        if error != -2:
            return error
    return write_pieces(fd, b.pieces, b.npieces, written)


# A worker takes a batch per call: keep a few Batch objects for reuse
# instead of an allocation and a free each (Cython leaves freelists out of a
# free-threaded build). No cycle can go through a batch (its one object
# field is its ring), so the collector need not track it.
@cython.freelist(8)
@cython.no_gc
cdef class Batch:
    """Records taken from a ring in one pass, newline framed.

    ``bytes(batch)``, ``memoryview(batch)`` and ``file.write(batch)`` see
    ``rec1\\nrec2\\n...`` (one system call for the lot); iterating or indexing
    yields each record without its newline, so records that contain newlines
    come back intact. ``len(batch)`` is the record count, ``batch.nbytes`` the
    framed size. The records never change; ``release()`` lets them go.

    A batch from ``get_batch(..., hold=True)`` may be *held*: its records are
    still in the ring's memory, their slots out of the producers' reach until
    the batch is released (``release()``, the end of a ``with`` block, or the
    batch being freed). ``write_to(fd)`` writes a held batch straight from
    there with one ``writev(2)``; anything that reads its bytes in Python
    (the buffer protocol, indexing, iterating, ``tobytes()``) first copies
    them out (``detach()``), which gives the slots back.
    """

    def __cinit__(self):
        batch_without_memory(&self.b)
        self.b.hold = NULL
        self.b.pieces = NULL
        self.b.npieces = self.b.pieces_cap = 0
        self.b.out_of_line = False
        self.users = 0

    def __dealloc__(self):
        lp_batch_unhold(&self.b)        # the ring is still referenced here
        free(self.b.pieces)
        free_batch_memory(&self.b)

    def __init__(self):
        raise TypeError("Batch objects come from RingBuffer.get_batch()")

    cdef int enter(self) except -1:
        # One more user of the bytes (a buffer export, a write): release and
        # detach wait for none.
        cdef uint32_t users
        while True:
            users = lp_load_relaxed_u32(&self.users)
            if users == USERS_BUSY:
                raise BufferError("the batch is being released or detached by another thread")
            if lp_cas_strong_u32(&self.users, users, users + 1):
                return 0

    cdef void leave(self) noexcept:
        lp_fetch_sub_u32(&self.users, 1)

    cdef int lock(self, str what) except -1:
        # The batch to ourselves, to change it: no user may be reading it.
        if not lp_cas_strong_u32(&self.users, 0, USERS_BUSY):
            raise BufferError(f"cannot {what} a batch while a memoryview of it exists "
                              "or it is being written")
        return 0

    cdef void unlock(self) noexcept:
        lp_store_release_u32(&self.users, 0)

    cdef int copied(self) except -1:
        # Make sure the bytes are in the batch's own buffer (detach a held one).
        cdef int status
        if self.b.hold == NULL:
            return 0
        self.lock("detach")
        with nogil:
            status = lp_batch_detach(&self.b)
        self.unlock()
        if status != LP_OK:
            raise MemoryError("out of memory copying a held batch out of the ring")
        return 0

    @property
    def held(self):
        """True while the batch's records are still in the ring's memory (see the class doc)."""
        return self.b.hold != NULL and self.b.count > 0

    def detach(self):
        """Copy a held batch's records out of the ring and give its slots back.

        The batch keeps the same records in its own memory; nothing happens
        to a batch that is not held. MemoryError leaves it held; BufferError
        if another thread is writing it.
        """
        self.copied()

    def release(self):
        """Let the records go now: a held batch gives its slots back to the
        ring (nothing is copied), any other frees its memory. The batch is
        empty afterwards; a second call does nothing.

        Raises BufferError (and releases nothing) while a memoryview of the
        batch exists or it is being written.
        """
        self.lock("release")
        if self.b.hold != NULL:
            with nogil:
                lp_batch_unhold(&self.b)
            self.b.hold = NULL
        free_batch_memory(&self.b)
        batch_without_memory(&self.b)
        self.b.npieces = 0              # (the pieces array itself is kept for dealloc)
        self.ring_ref = None
        self.unlock()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.release()
        return False

    def write_to(self, int fd, *, bint keep_gil=False):
        """Write the framed records to ``fd``; return the bytes written.

        A held batch goes straight from the ring's memory with ``writev(2)``
        (a record out of line and its newline are two pieces of it; pieces
        that small on average are gathered into one buffer first, which is
        cheaper for the kernel), any other with one ``write(2)`` of its
        buffer. Short writes are
        continued. A call that fails after some bytes went out stops and
        returns that count (short of ``nbytes``: the caller writes the rest,
        e.g. ``memoryview(batch)[count:]``, and sees the error then); one
        that fails before any raises OSError. As with ``os.write``, a signal
        that interrupts the first call runs the Python handlers (a handler
        that raises ends the call) and the call is retried.

        ``keep_gil``: make the system calls holding the GIL, for short
        writes to regular files (see ``logpipe._filewrite``); by default
        they run without it.
        """
        return self.write_out(fd, keep_gil)

    cdef Py_ssize_t write_out(self, int fd, bint keep_gil) except -1:
        cdef Py_ssize_t written = 0
        cdef int error
        self.enter()
        try:
            while True:
                if keep_gil:
                    error = write_batch_to(fd, &self.b, &written)
                else:
                    with nogil:
                        error = write_batch_to(fd, &self.b, &written)
                if error == 0 or written > 0 or error == -1:
                    # All out, a short count to report, or a call that wrote
                    # nothing (the caller's to judge). An interrupted call
                    # after progress leaves the handlers to the interpreter's
                    # next check.
                    return written
                if error != EINTR:
                    raise OSError(error, os.strerror(error))
                PyErr_CheckSignals()    # raises if a handler raised; else retry
        finally:
            self.leave()

    @property
    def nbytes(self):
        """Size of the framed buffer in bytes (records plus one newline each)."""
        return self.b.size

    def __len__(self):
        return self.b.count

    def __bool__(self):
        return self.b.count > 0

    def __getitem__(self, Py_ssize_t index):
        self.copied()
        if index < 0:
            index += self.b.count
        if index < 0 or index >= self.b.count:
            raise IndexError("Batch index out of range")
        return PyBytes_FromStringAndSize(
            self.b.buf + self.b.offsets[index], self.b.offsets[index + 1] - self.b.offsets[index] - 1)

    def __iter__(self):
        cdef Py_ssize_t i = 0
        self.copied()
        # The count is read again at each step: a release() in between ends the loop.
        while i < self.b.count:
            yield PyBytes_FromStringAndSize(
                self.b.buf + self.b.offsets[i], self.b.offsets[i + 1] - self.b.offsets[i] - 1)
            i += 1

    def __getbuffer__(self, Py_buffer *view, int flags):
        self.copied()
        self.enter()
        PyBuffer_FillInfo(view, self, self.b.buf if self.b.buf != NULL else EMPTY_BUFFER,
                          self.b.size, 1, flags)

    def __releasebuffer__(self, Py_buffer *view):
        self.leave()

    @property
    def oldest_enqueue(self):
        """When the batch's oldest record entered the ring, on the
        ``time.monotonic()`` clock (to a few ms); ``inf`` for an empty batch.

        ``time.monotonic() - batch.oldest_enqueue`` after a write is the
        enqueue-to-flush latency of the batch's longest-waiting record.
        """
        return self.b.oldest

    @property
    def positions(self):
        """Where the records sat in the ring: ``[(first_position, count), ...]``.

        Positions number the records in the order they entered the ring
        (0, 1, 2, ...). A pipeline uses them to know which prefix of its
        input has been written (see logpipe.application.checkpoint).
        """
        return [(self.b.runs[2 * i], self.b.runs[2 * i + 1]) for i in range(self.b.nruns)]

    def tobytes(self):
        """The framed records as one bytes object (a copy)."""
        self.copied()
        return PyBytes_FromStringAndSize(self.b.buf if self.b.buf != NULL else EMPTY_BUFFER, self.b.size)

    def __repr__(self):
        held = " held" if self.held else ""
        return f"<logpipe.Batch records={self.b.count} nbytes={self.b.size}{held}>"


cdef class StopSignal:
    """A one-way stop flag bound to a ring: a worker's own stop channel.

    ``set()`` wakes every getter blocked on the ring; a getter passed
    ``stop=signal`` then returns early (``get_batch`` with what it holds,
    ``get``/``get_many`` by raising Empty); the others go back to waiting.
    """

    def __cinit__(self, RingBuffer ring not None):
        self.ring = ring
        self.flag = 0

    def set(self):
        """Raise the flag and wake the ring's blocked getters."""
        lp_store_release_int(&self.flag, 1)
        lp_ec_notify(&self.ring.ring.not_empty)

    def is_set(self):
        return lp_load_acquire_int(&self.flag) != 0

    def __bool__(self):
        return lp_load_acquire_int(&self.flag) != 0

    def __repr__(self):
        return f"<logpipe.StopSignal set={self.is_set()}>"


cdef int *stop_flag(RingBuffer ring, StopSignal stop) except NULL:
    """The flag a getter of ``ring`` watches for ``stop`` (callers pass NULL
    for no signal without calling this); a signal of another ring is refused
    (it would never wake this ring's getters)."""
    if stop.ring is not ring:
        raise ValueError("stop is a StopSignal of another RingBuffer; it cannot wake this one")
    return &stop.flag


cdef int collect_batch(Batch batch, lp_ring_t *r, uint64_t want, double deadline,
                       bint no_wait, int *stop, double slice) noexcept nogil:
    """get_batch's loop: take records until ``want``, the deadline, ``stop``, or
    the end of a closed ring. Returns LP_OK, LP_CLOSED (drained), LP_NOMEM
    or LP_INTERRUPTED (run the signal handlers, then call again).

    A held batch that is not all there waits for it before it takes
    anything: held slots must not wait with it (see below), and taking the
    records only once the batch has come keeps it held, to be written from
    the ring, instead of copying what it took first out again."""
    cdef int status
    cdef Py_ssize_t before
    if (batch.b.hold != NULL and batch.b.count == 0 and not no_wait
            and lp_ring_len(r) < want and not lp_ring_drained(r)):
        status = lp_wait_gather(r, want, deadline, stop, slice)
        if status == LP_INTERRUPTED:
            return status
        if status != LP_OK:
            # Timed out or stopped: what is there is the batch.
            return LP_OK if lp_batch_take(&batch.b, r, want) == LP_OK else LP_NOMEM
    while True:
        before = batch.b.count
        if lp_batch_take(&batch.b, r, want - batch.b.count) != LP_OK:
            return LP_NOMEM
        if <uint64_t>batch.b.count == want:
            return LP_OK
        if batch.b.count > before:
            continue            # more may be ready already (or it took fewer to fit memory)
        if lp_ring_drained(r):
            return LP_CLOSED
        if no_wait:
            return LP_OK
        if batch.b.hold != NULL and batch.b.count > 0:
            # Never wait holding slots: the producers may need them to add
            # the records this batch waits for. Copy them out first.
            if lp_batch_detach(&batch.b) != LP_OK:
                return LP_OK    # no memory to copy them: hand them over held
        status = lp_wait_gather(r, want - batch.b.count, deadline, stop, slice)
        if status == LP_INTERRUPTED:
            return status
        if status != LP_OK:
            # Timed out or stopped. One last look: records may have landed as time ran out.
            if lp_batch_take(&batch.b, r, want - batch.b.count) != LP_OK:
                return LP_NOMEM
            return LP_OK


cdef inline Py_ssize_t gather_bytes(PyObject **items, Py_ssize_t m, Py_ssize_t stop,
                                    bint ahead, Py_ssize_t max_record, const char **data,
                                    uint32_t *lengths, uint64_t *total,
                                    Py_ssize_t *longest) noexcept:
    """put_bytes_with_gil's gathering: from ``items[m]`` up to ``items[stop]``,
    while they are exact bytes of at most ``max_record`` bytes; returns
    where it stopped. ``ahead``: prefetch the item PREFETCH_AHEAD on (the
    caller knows it exists, so the loop has no bounds test for it)."""
    cdef PyObject *item
    cdef char *next_item
    cdef Py_ssize_t size
    while m < stop:
        if ahead:
            # Both lines of a short bytes object: header and data.
            next_item = <char *>items[m + PREFETCH_AHEAD]
            lp_prefetch(next_item)
            lp_prefetch(next_item + 64)
        item = items[m]
        if not Py_IS_TYPE(item, &PyBytes_Type):
            break
        size = PyBytes_GET_SIZE_P(item)
        if size > longest[0]:   # rarely taken: the size limit is tested only here
            if size > max_record:
                break
            longest[0] = size
        data[m] = PyBytes_AS_STRING_P(item)
        lengths[m] = <uint32_t>size
        total[0] += size
        m += 1
    return m


cdef Py_ssize_t put_bytes_with_gil(lp_ring_t *r, object seq) noexcept:
    """put_many's common case: push the leading run of ``bytes`` objects of
    the list or tuple ``seq``, in chunks small enough to copy with the GIL
    held, as far as they go in without waiting. Returns how many went in;
    the general path takes over from there (a record that is not exact
    bytes or too long, a large chunk, a full or closed ring).

    With the GIL held throughout and only exact bytes read, no Python code
    runs and no item can change or go away, so the items need no reference
    or buffer view of their own: the general path's costs per record.
    """
    cdef PyObject **items = PySequence_Fast_ITEMS(seq)
    cdef Py_ssize_t count = PySequence_Fast_GET_SIZE(seq)
    cdef Py_ssize_t done = 0, chunk, m, pushed, with_ahead
    cdef Py_ssize_t longest
    cdef uint64_t chunk_bytes
    cdef const char *data[LP_PUSH_CHUNK]
    cdef uint32_t lengths[LP_PUSH_CHUNK]
    cdef int status
    while done < count:
        chunk = min(<Py_ssize_t>LP_PUSH_CHUNK, count - done)
        # The items of this chunk that have one PREFETCH_AHEAD on.
        with_ahead = min(chunk, count - done - PREFETCH_AHEAD)
        chunk_bytes = 0
        longest = 0
        m = 0
        if with_ahead > 0:
            m = gather_bytes(&items[done], 0, with_ahead, True, <Py_ssize_t>r.max_record,
                             data, lengths, &chunk_bytes, &longest)
        if m == with_ahead or with_ahead < 0:
            m = gather_bytes(&items[done], m, chunk, False, <Py_ssize_t>r.max_record,
                             data, lengths, &chunk_bytes, &longest)
        if m == 0 or chunk_bytes >= GIL_TAKE_MAX_BYTES:
            return done
        pushed = push_sized(r, data, lengths, m, chunk_bytes, <uint32_t>longest, &status)
        if pushed:
            stamp_gil_push(r)
        done += pushed
        if pushed < m or m < chunk:
            return done
    return done


cdef class RingBuffer:
    """A bounded multi-producer multi-consumer queue of byte records.

    Args:
        capacity: most records held at once (>= 1).
        max_record_size: largest record accepted, in bytes (default 1 MiB).
        max_bytes: most payload bytes held at once (default: the largest of
            64 MiB, max_record_size and capacity * (slot_size - 16), so that
            a ring full of inline records is never limited by bytes).
        slot_size: bytes per preallocated slot (default 128): a 16-byte
            header and ``slot_size - 16`` bytes of record share; records up
            to ``slot_size - 17`` bytes are stored inline (packed with their
            newline), longer ones in their own allocation. Memory:
            ``capacity * (slot_size + 4)`` up front, plus at most
            ``max_bytes`` for out-of-line records.

    The API follows ``queue.Queue``: put/get with ``block`` and ``timeout``
    (None waits forever), put_nowait/get_nowait, plus the batch calls
    put_many, get_many and get_batch, and close() with Go channel semantics.
    The rest of queue.Queue (qsize, empty, full, maxsize, task_done, join,
    shutdown) closes the class. See docs/ringbuffer.md.
    """

    def __cinit__(self, capacity, *, max_record_size=DEFAULT_MAX_RECORD_SIZE,
                  max_bytes=None, slot_size=DEFAULT_SLOT_SIZE):
        self.ring = NULL
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if capacity > (1 << 40):
            raise ValueError(f"capacity must be at most 2**40, got {capacity!r}")
        if not isinstance(max_record_size, int) or not 0 <= max_record_size <= MAX_RECORD_LIMIT:
            raise ValueError(
                f"max_record_size must be an integer in [0, {MAX_RECORD_LIMIT}], got {max_record_size!r}")
        if (not isinstance(slot_size, int) or slot_size % 8 or not 32 <= slot_size <= 65536):
            raise ValueError(
                f"slot_size must be a multiple of 8 between 32 and 65536, got {slot_size!r}")
        if max_bytes is None:
            # Large enough that a ring full of inline records never hits it:
            # by default only out-of-line records are held back by bytes.
            max_bytes = max(DEFAULT_MAX_BYTES, max_record_size, capacity * (slot_size - 16))
        if (not isinstance(max_bytes, int) or isinstance(max_bytes, bool)
                or not max_record_size <= max_bytes <= MAX_BYTES_LIMIT):
            raise ValueError(
                f"max_bytes must be an integer between max_record_size ({max_record_size}) "
                f"and 2**62, got {max_bytes!r}")
        # Every conversion before the allocation: nothing may raise between
        # allocating the ring and initialising it (__dealloc__ would free garbage).
        cdef uint64_t c_capacity = capacity, c_slot_size = slot_size
        cdef uint64_t c_max_record = max_record_size, c_max_bytes = max_bytes
        cdef void *mem = NULL
        if posix_memalign(&mem, 64, sizeof(lp_ring_t)) != 0:
            raise MemoryError()
        memset(mem, 0, sizeof(lp_ring_t))
        self.ring = <lp_ring_t *>mem
        if lp_ring_init(self.ring, c_capacity, c_slot_size, c_max_record, c_max_bytes) != LP_OK:
            free(self.ring)
            self.ring = NULL
            raise MemoryError(f"cannot allocate {capacity} slots of {slot_size} bytes")

    def __dealloc__(self):
        if self.ring != NULL:
            lp_ring_destroy(self.ring)
            free(self.ring)
            self.ring = NULL

    # -- occupancy ----------------------------------------------------------

    def __len__(self):
        return lp_ring_len(self.ring)

    @property
    def capacity(self):
        """Most records held at once."""
        return self.ring.capacity

    @property
    def max_record_size(self):
        """Largest record accepted, in bytes."""
        return self.ring.max_record

    @property
    def max_bytes(self):
        """Most payload bytes held at once."""
        return self.ring.max_bytes

    @property
    def slot_size(self):
        """Bytes per preallocated slot (16 of them are the slot header)."""
        return self.ring.slot_size

    @property
    def nbytes(self):
        """Payload bytes held now (including those being pushed)."""
        return lp_load_relaxed(&self.ring.nbytes)

    @property
    def usage(self):
        """Occupancy from 0.0 to 1.0: the larger of len/capacity and nbytes/max_bytes."""
        cdef double by_records = <double>lp_ring_len(self.ring) / self.ring.capacity
        cdef double by_bytes = 0.0
        if self.ring.max_bytes:
            by_bytes = <double>lp_load_relaxed(&self.ring.nbytes) / self.ring.max_bytes
        return min(1.0, max(by_records, by_bytes))

    @property
    def closed(self):
        """True once close() has been called."""
        return lp_ring_is_closed(self.ring)

    @property
    def pushed(self):
        """Records ever put into the ring (claimed by producers)."""
        return lp_load_acquire(&self.ring.enqueue_pos) & ~LP_CLOSED_BIT

    @property
    def popped(self):
        """Records ever taken out of the ring."""
        return lp_load_acquire(&self.ring.dequeue_pos)

    @property
    def put_waits(self):
        """Times a blocking put had to park because the ring was full."""
        return lp_load_relaxed(&self.ring.put_waits)

    @property
    def get_waits(self):
        """Times a blocking get had to park because the ring was empty."""
        return lp_load_relaxed(&self.ring.get_waits)

    @property
    def put_wakes(self):
        """Futex wake-ups made for parked putters (by gets that made room)."""
        return lp_load_relaxed(&self.ring.not_full.wakes)

    @property
    def get_wakes(self):
        """Futex wake-ups made for parked getters (by puts, close, StopSignal)."""
        return lp_load_relaxed(&self.ring.not_empty.wakes)

    def _wait_state(self):
        """(getters waiting, putters waiting, getter lingering, putter
        lingering) right now: the hand-off bookkeeping of linger_for_gil,
        for tests (all zero whenever no call is inside the ring)."""
        r = self.ring
        return (lp_load_relaxed_u32(&r.getters_waiting), lp_load_relaxed_u32(&r.putters_waiting),
                lp_load_relaxed_u32(&r.getter_lingering), lp_load_relaxed_u32(&r.putter_lingering))

    def __repr__(self):
        return (f"<logpipe.RingBuffer len={len(self)} capacity={self.capacity} "
                f"nbytes={self.nbytes} closed={self.closed}>")

    # -- producing ----------------------------------------------------------

    def put(self, item, bint block=True, timeout=None):
        """Put one record; wait while full if ``block`` (up to ``timeout`` s).

        Raises Full if it could not be taken in time, Closed after close(),
        ValueError if larger than max_record_size, TypeError if not bytes-like.
        """
        cdef double deadline = deadline_from(timeout) if block else 0.0
        cdef Py_buffer view
        cdef const char *data
        cdef Py_ssize_t size
        cdef uint32_t length
        cdef bint has_view = False
        cdef bint last_try = False
        cdef int status
        cdef double slice
        cdef lp_ring_t *r = self.ring
        if PyBytes_CheckExact(item):
            data = PyBytes_AS_STRING(item)
            size = PyBytes_GET_SIZE(item)
        else:
            get_record_buffer(item, &view)
            has_view = True
            data = <const char *>view.buf
            size = view.len
        try:
            check_record_size(size, r.max_record)
            length = <uint32_t>size
            while True:
                if length <= r.inline_max and r.capacity == r.nslots:
                    status = push_one(r, data, length)
                    if status == LP_OK:
                        stamp_gil_push(r)
                        return
                elif lp_push_many(r, &data, &length, 1, &status) == 1:
                    stamp_gil_push(r)
                    return
                if status == LP_CLOSED:
                    raise Closed("ring buffer is closed")
                if status == LP_NOMEM:
                    raise MemoryError("out of memory copying a record into the ring")
                if not block:
                    give_up_for_room(r)
                if not block or last_try:
                    raise Full("ring buffer is full")
                slice = lp_wait_slice()
                with nogil:
                    status = lp_wait_writable(r, length, deadline, slice)
                    if status == LP_OK:
                        linger_for_gil(r, False)
                if status == LP_INTERRUPTED:
                    PyErr_CheckSignals()
                # On timeout, one last try: room may have come as time ran out.
                last_try = status == LP_TIMEOUT
        finally:
            if has_view:
                PyBuffer_Release(&view)

    def put_nowait(self, item):
        """Put one record without waiting; Full if there is no room."""
        self.put(item, False)

    def put_many(self, items, bint block=True, timeout=None):
        """Put records in order; return how many were taken.

        Non-blocking: takes what fits now (maybe 0). Blocking: waits while
        full, up to ``timeout``. Raises Closed only if the ring was closed
        before anything was taken. A bad record raises after the records
        before it were taken.
        """
        return self._put_many(items, block, timeout)

    def put_objects(self, objects, block=True, timeout=None):
        """Serialise each object to one JSON line (orjson) and put them in order.

        For callers that hold dicts rather than bytes. Returns how many were
        taken, as put_many; an object orjson cannot serialise raises
        TypeError before anything is put.
        """
        # Imported here, not with the module: orjson's own import loads
        # datetime, uuid, platform and json (~10-15 ms), which only this
        # method needs (tests/cli/test_cli_startup_imports.py).
        from orjson import dumps

        return self._put_many([dumps(obj) for obj in objects], block, timeout)

    cdef Py_ssize_t _put_many(self, object items, bint block, object timeout) except -1:
        # Under the GIL a list cannot change while we gather from it, except
        # through Python code that getting a buffer may run (__buffer__,
        # 3.12+): so each item is re-read by index with the size re-checked,
        # never through a saved item array. On a free-threaded build another
        # thread could resize it at any time, so copy it.
        cdef object seq = items
        if type(items) is not tuple and (type(items) is not list or LP_FREE_THREADED):
            seq = tuple(items)
        cdef double deadline = deadline_from(timeout) if block else 0.0
        cdef double slice
        cdef Py_ssize_t done = 0, chunk, pushed, i, size
        cdef int status, wait_status
        cdef const char *data[LP_PUSH_CHUNK]
        cdef uint32_t lengths[LP_PUSH_CHUNK]
        cdef Py_buffer views[LP_PUSH_CHUNK]
        cdef PyObject *holders[LP_PUSH_CHUNK]
        cdef bint has_view[LP_PUSH_CHUNK]
        cdef object item
        cdef object bad = None
        cdef lp_ring_t *r = self.ring
        cdef uint32_t need
        cdef char *ahead
        cdef Py_ssize_t chunk_bytes

        done = put_bytes_with_gil(r, seq)
        while bad is None and done < PySequence_Fast_GET_SIZE(seq):
            chunk = 0
            chunk_bytes = 0
            try:
                # Gather a chunk of pointers. Each item is held by a reference
                # (and non-bytes by a buffer view) so that its bytes stay valid
                # while we wait without the GIL. Everything gathered is let go
                # in the finally clause, whatever is raised.
                while chunk < LP_PUSH_CHUNK and done + chunk < PySequence_Fast_GET_SIZE(seq):
                    if done + chunk + PREFETCH_AHEAD < PySequence_Fast_GET_SIZE(seq):
                        # Both lines of a short bytes object: header and data.
                        ahead = <char *>PySequence_Fast_GET_ITEM(seq, done + chunk + PREFETCH_AHEAD)
                        lp_prefetch(ahead)
                        lp_prefetch(ahead + 64)
                    item = <object>PySequence_Fast_GET_ITEM(seq, done + chunk)
                    has_view[chunk] = False
                    if PyBytes_CheckExact(item):
                        data[chunk] = PyBytes_AS_STRING(item)
                        size = PyBytes_GET_SIZE(item)
                    else:
                        try:
                            get_record_buffer(item, &views[chunk])
                        except Exception as exc:    # not bytes-like, released view...
                            bad = exc
                            break
                        has_view[chunk] = True
                        data[chunk] = <const char *>views[chunk].buf
                        size = views[chunk].len
                    if size > <Py_ssize_t>r.max_record:
                        if has_view[chunk]:
                            PyBuffer_Release(&views[chunk])
                        bad = ValueError(record_too_large(size, r.max_record))
                        break
                    lengths[chunk] = <uint32_t>size
                    chunk_bytes += size
                    holders[chunk] = <PyObject *>item
                    Py_INCREF(item)
                    chunk += 1

                i = 0
                while i < chunk:
                    if chunk_bytes >= GIL_TAKE_MAX_BYTES:
                        # Big enough to copy without the GIL, so a consumer
                        # can run Python code meanwhile; a small copy keeps
                        # it (a hand-off costs more than the copy: see get_batch).
                        with nogil:
                            pushed = lp_push_many(r, &data[i], &lengths[i], chunk - i, &status)
                    else:
                        pushed = lp_push_many(r, &data[i], &lengths[i], chunk - i, &status)
                        stamp_gil_push(r)
                    i += pushed
                    if i == chunk:
                        break
                    if status == LP_NOMEM:
                        raise MemoryError("out of memory copying a record into the ring")
                    if status == LP_CLOSED:
                        if done + i == 0:
                            raise Closed("ring buffer is closed")
                        return done + i
                    if not block or pushed:
                        if not block:
                            give_up_for_room(r)
                            return done + i
                        continue        # progress: retry before parking
                    need = lengths[i]
                    slice = lp_wait_slice()     # here, not on every call: most never wait
                    with nogil:
                        wait_status = lp_wait_writable(r, need, deadline, slice)
                        if wait_status == LP_OK:
                            linger_for_gil(r, False)
                    if wait_status == LP_INTERRUPTED:
                        run_signal_handlers("logpipe_put_count", done + i)
                    elif wait_status == LP_TIMEOUT:
                        i += lp_push_many(r, &data[i], &lengths[i], chunk - i, &status)
                        return done + i
                done += chunk
            finally:
                for i in range(chunk):
                    if has_view[i]:
                        PyBuffer_Release(&views[i])
                    Py_DECREF(<object>holders[i])
        if bad is not None:
            raise bad
        return done

    # -- consuming ----------------------------------------------------------

    cdef int _wait_for_records(self, bint block, double deadline, int *stop) except -1:
        """After an empty pop: raise Closed/Empty, or return once worth a retry
        (1: the last one, the wait timed out or was stopped)."""
        cdef int status
        cdef double slice = lp_wait_slice()
        if lp_ring_drained(self.ring):
            raise Closed("ring buffer is closed and drained")
        if not block:
            raise Empty("ring buffer is empty")
        with nogil:
            status = lp_wait_readable(self.ring, deadline, stop, slice)
            if status == LP_OK:
                linger_for_gil(self.ring, True)
        if status == LP_INTERRUPTED:
            PyErr_CheckSignals()    # holds nothing yet: a handler's exception loses nothing
            return 0
        if status == LP_TIMEOUT or status == LP_STOPPED:
            # A record may have landed just as we gave up: take it if so.
            if lp_ring_drained(self.ring):
                raise Closed("ring buffer is closed and drained")
            return 1
        return 0

    def get(self, bint block=True, timeout=None, *, StopSignal stop=None):
        """Take one record (bytes); wait while empty if ``block``.

        Raises Empty (non-blocking, timeout, or ``stop`` set) and Closed once
        the ring is closed and drained.
        """
        cdef double deadline = deadline_from(timeout) if block else 0.0
        cdef int *flag = NULL if stop is None else stop_flag(self, stop)
        cdef uint64_t pos
        cdef uint32_t length
        cdef int last_try = 0
        cdef bytes out
        cdef lp_ring_t *r = self.ring
        cdef lp_slot_t *s
        while True:
            s = peek_one(r, &pos)
            if s != NULL:
                # The bytes object first: if it cannot be had, nothing is claimed.
                out = new_bytes_object(lp_load_relaxed_u32(&s.length))
                if not lp_commit_pop(r, pos, 1):
                    continue        # another consumer took it
                length = s.length
                if length:
                    lp_copy(PyBytes_AS_STRING(out), slot_data(r, s), length)
                release_one(r, s, pos)
                stamp_gil_pop(r)
                return out
            if last_try:
                raise Empty("ring buffer is empty")
            last_try = self._wait_for_records(block, deadline, flag)

    def get_nowait(self):
        """Take one record without waiting; Empty if there is none."""
        return self.get(False)

    def get_many(self, max_items, bint block=True, timeout=None, *, StopSignal stop=None):
        """Take 1..max_items records as a list, as soon as at least one is there.

        Raises Empty / Closed as get().
        """
        check_max_items(max_items)
        cdef double deadline = deadline_from(timeout) if block else 0.0
        cdef int *flag = NULL if stop is None else stop_flag(self, stop)
        cdef uint64_t pos, n, i, payload, room
        cdef lp_slot_t *s
        cdef int last_try = 0
        cdef list out
        cdef PyObject **items
        cdef uint32_t out_of_line
        cdef lp_ring_t *r = self.ring
        while True:
            n = lp_peek_pop(r, max_items, &pos, &payload)
            if n:
                # Every bytes object is made before the claim, from the
                # lengths peeked, so a MemoryError leaves the records in the
                # ring (a list still holding NULLs deallocates cleanly).
                out = PyList_New(n)
                items = PySequence_Fast_ITEMS(out)
                # Walking the slots in two runs split at the wrap.
                s = slot_at(r, pos)
                room = <uint64_t>(r.slots_end - s)
                if room > n:
                    room = n
                make_bytes(s, items, room)
                make_bytes(r.slots, items + room, n - room)
                if not lp_commit_pop(r, pos, n):
                    continue
                # Ours now: copy each record into its bytes object (whose
                # size is the length peeked), then hand them all back at once.
                out_of_line = copy_to_bytes(r, s, items, room)
                out_of_line |= copy_to_bytes(r, r.slots, items + room, n - room)
                release_claimed(r, pos, n, payload, out_of_line)
                stamp_gil_pop(r)
                return out
            if last_try:
                raise Empty("ring buffer is empty")
            last_try = self._wait_for_records(block, deadline, flag)

    def get_batch(self, max_items, timeout=None, *, StopSignal stop=None, bint hold=False):
        """Collect up to ``max_items`` records into one newline-framed Batch.

        Returns when max_items are taken, when ``timeout`` expires or ``stop``
        is set (with what it holds, maybe nothing), or when the ring is closed
        and drained (raising Closed if it holds nothing). ``timeout=0`` takes
        what is there now. A batch that is all there and at most 64 KiB
        is copied with the GIL held; any other copying, and every wait, runs
        without it.

        ``hold=True`` copies nothing: the batch holds the records' slots,
        out of the producers' reach, until it is released, and
        ``batch.write_to(fd)`` writes them straight from the ring (see
        Batch). So that a getter never pins the ring while it waits, a call
        that is not all there waits for its batch before it takes any
        record; one that must wait again after taking some copies out those
        it holds first, and goes on as an ordinary batch (``batch.held`` is
        then False). A ring of capacity 1 always copies.

        If a signal handler raises while it waits (Ctrl+C), the exception
        propagates with the records already taken on its ``logpipe_batch``
        attribute. If memory runs out growing the batch, what it holds is
        returned (MemoryError only when it holds nothing); records not yet
        taken stay in the ring.
        """
        check_max_items(max_items)
        # The timeout is checked now; the deadline and the signal slice are
        # only worked out if the batch is not all there (a clock read and a
        # thread id that the common call does not need).
        cdef double wait = timeout_seconds(timeout)
        cdef bint no_wait = wait == 0.0
        cdef double deadline
        cdef int *flag = NULL if stop is None else stop_flag(self, stop)
        cdef double slice
        cdef Batch batch = Batch.__new__(Batch)
        cdef uint64_t want = max_items
        batch_memory_from_spare(&batch.b)
        cdef uint64_t pos, nblocks
        cdef uint32_t blocks[TAKE_CHUNK]
        cdef int status
        if hold and self.ring.capacity == self.ring.nslots:
            # (A ring of capacity 1 keeps two slots and bounds its occupancy
            # by position; a record held there would let a second one in
            # beside it, so that ring always copies.)
            batch.b.hold = self.ring
            batch.ring_ref = self
        if (want <= LP_TAKE_CHUNK
                and batch_reserve_run(&batch.b) == LP_OK
                and batch_reserve_offsets(&batch.b, want) == LP_OK):
            batch.b.offsets[0] = 0
            if peek_framed(self.ring, want, &pos, batch.b.offsets, blocks, &nblocks) != want:
                pass
            elif batch.b.hold != NULL:
                # All there: note where the blocks lie, with the GIL held
                # (a few instructions a block, no copy).
                if (batch_reserve_pieces(&batch.b, nblocks) == LP_OK
                        and lp_commit_pop(self.ring, pos, want)):
                    hold_framed(&batch.b, self.ring, pos, want, blocks, nblocks)
                    stamp_gil_pop(self.ring)
                    return batch
            elif (batch.b.offsets[want] - <Py_ssize_t>want <= GIL_TAKE_MAX_BYTES
                    and batch_reserve_bytes(&batch.b, batch.b.offsets[want]) == LP_OK
                    and lp_commit_pop(self.ring, pos, want)):
                # The whole batch is ready and small: copy it with the GIL held.
                # Letting the GIL go costs a hand-off to another thread and a
                # wait to get it back, more than 64 KiB of memcpy, and on
                # a busy pipeline every worker would pay that on every batch.
                # Claim exactly what was peeked (no second peek); if another
                # consumer took the head meanwhile, the loop below starts over.
                copy_framed(&batch.b, self.ring, pos, want, blocks, nblocks)
                stamp_gil_pop(self.ring)
                return batch
        deadline = -1.0 if wait < 0 else lp_now() + wait
        slice = lp_wait_slice()
        while True:
            with nogil:
                status = collect_batch(batch, self.ring, want, deadline, no_wait, flag, slice)
                if status == LP_OK and not no_wait:
                    linger_for_gil(self.ring, True)
            if status != LP_INTERRUPTED:
                break
            run_signal_handlers("logpipe_batch", batch)
        if batch.b.count == 0:
            batch.b.hold = NULL             # an empty batch holds nothing
            if status == LP_NOMEM:
                raise MemoryError("out of memory growing a batch")
            if status == LP_CLOSED:
                raise Closed("ring buffer is closed and drained")
        return batch

    # -- lifecycle ----------------------------------------------------------

    def close(self):
        """Refuse further puts; gets drain what is left, then raise Closed.

        Idempotent. Every thread blocked in a put or a get wakes at once.
        """
        lp_ring_close(self.ring)

    # -- queue.Queue compatibility -----------------------------------------
    # The standard library's names with the standard library's meanings, so
    # that code written for queue.Queue (3.13 included) runs on a ring whose
    # items are bytes. See docs/ringbuffer.md for the mapping and the limits.

    @property
    def maxsize(self):
        """queue.Queue's maxsize: the capacity in records (always >= 1; a ring
        is never unbounded). Read-only: a ring cannot be resized."""
        return self.ring.capacity

    def qsize(self):
        """Records held now, as len(): a snapshot, like queue.Queue.qsize().

        Records that producers are still copying in count already, so a get
        right after may still find nothing ready for an instant.
        """
        return lp_ring_len(self.ring)

    def empty(self):
        """True if qsize() is 0 (a snapshot: a put may land at once)."""
        return lp_ring_len(self.ring) == 0

    def full(self):
        """True if no record but an empty one fits: ``capacity`` records are
        held, or the byte budget is spent (the same as ``usage == 1.0``).

        On a byte-bounded ring a put can be refused while full() is False,
        because the record is longer than free_bytes: fits(len(record)) tells.
        So can it while held batches (``get_batch(hold=True)``) keep slots:
        their records have been taken, and are not counted here.
        """
        return (lp_ring_len(self.ring) >= self.ring.capacity
                or lp_load_relaxed(&self.ring.nbytes) >= self.ring.max_bytes)

    @property
    def free_bytes(self):
        """Payload bytes the budget has room for now: max_bytes - nbytes."""
        cdef uint64_t held = lp_load_relaxed(&self.ring.nbytes)
        return self.ring.max_bytes - held if held < self.ring.max_bytes else 0

    def fits(self, nbytes):
        """Whether a record of ``nbytes`` bytes would be taken by a put now.

        True when the ring is open, ``nbytes <= max_record_size``, a slot is
        free and ``nbytes <= free_bytes``. A snapshot: other threads may take
        the room (or make some) before the put. Raises ValueError for a
        negative size, TypeError for a non-integer.
        """
        if not isinstance(nbytes, int) or isinstance(nbytes, bool):
            raise TypeError(f"nbytes must be an integer, got {type(nbytes).__name__}")
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes!r}")
        if nbytes > <object>self.ring.max_record:
            return False
        # writable() also says True for a closed ring (a waiter must wake): refuse that here.
        return writable(self.ring, <uint64_t>nbytes) and not lp_ring_is_closed(self.ring)

    @property
    def is_shutdown(self):
        """queue.Queue's is_shutdown (3.13): True once shutdown() or close() was called."""
        return lp_ring_is_closed(self.ring)

    def shutdown(self, immediate=False):
        """Shut the ring down, with the semantics of Python 3.13's queue.Queue.shutdown().

        Puts raise Closed (a queue.ShutDown on 3.13+) from now on, and every
        blocked put or get wakes at once.

        ``immediate=False`` is close(): gets return what is left, then
        raise Closed.

        ``immediate=True`` also discards every record in the ring: their
        memory is freed, their bytes go back to the budget, they count in
        ``discarded`` (and ``popped``), and unfinished_tasks drops by as
        many (join() waiters wake). Once it returns, len() is 0 and every get
        raises Closed at once. Under concurrency:

        * a put either raises Closed (its record never entered) or its
          record counts in ``pushed`` and ends delivered or discarded: a put
          that claimed its slot just before the shutdown is waited for (the
          discard waits, without the GIL, for the copy it is making; it
          never waits for a blocked put, which raises Closed);
        * a get racing with it either returns a record, which is then not
          discarded, or raises Closed: no record is both delivered and
          discarded, none is lost, so ``pushed == popped`` and
          ``popped == records delivered + discarded``;
        * nbytes is back to 0 once the racing calls have returned (a get
          may still be copying a record it took, a refused put giving back
          the bytes it had reserved).

        Calling it again, either way, is harmless (3.13 allows the same
        transitions); a second immediate call discards what is left, if
        anything.
        """
        cdef uint64_t n
        if not immediate:
            lp_ring_close(self.ring)
            return
        with nogil:
            n = lp_ring_close_discard(self.ring)
        if n:
            lp_fetch_add_u64(&self.discarded_count, n)
            lp_add_tasks_done(self.ring, &self.tasks_done, n, False)
            lp_ec_notify(&self.all_tasks_done)

    @property
    def discarded(self):
        """Records thrown away by shutdown(immediate=True); they count in ``popped`` too."""
        return lp_load_acquire(&self.discarded_count)

    @property
    def unfinished_tasks(self):
        """queue.Queue's unfinished_tasks: records pushed that task_done() has
        not yet been called for (less those discarded by an immediate shutdown)."""
        cdef uint64_t done = lp_load_acquire(&self.tasks_done)   # first: see tasks_all_done()
        cdef uint64_t pushed = lp_load_acquire(&self.ring.enqueue_pos) & ~LP_CLOSED_BIT
        return pushed - done if pushed > done else 0

    def task_done(self, count=1):
        """Mark ``count`` taken records as processed, as queue.Queue.task_done().

        Every record put is a task (put_many, put_objects and batch
        producers included); call this once per record taken, or once per
        batch with ``count=len(batch)``. Raises ValueError, marking nothing,
        if that would mark more records than were ever put. Lock-free;
        wakes join() when the last task is done.
        """
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        if count > (1 << 62) or not lp_add_tasks_done(self.ring, &self.tasks_done, count, True):
            raise ValueError("task_done() called too many times")
        lp_ec_notify(&self.all_tasks_done)

    def join(self):
        """Block until task_done() has been called for every record put
        (or the record was discarded by shutdown(immediate=True)).

        As queue.Queue.join(): no timeout, and a shut-down ring does not end
        the wait by itself. Waits without the GIL; Ctrl+C interrupts it. A
        ring whose consumers never call task_done (logpipe's own workers do
        not) never joins while it holds records.
        """
        cdef int status
        cdef double slice
        while True:
            slice = lp_wait_slice()
            with nogil:
                status = lp_wait_tasks_done(self.ring, &self.tasks_done, &self.all_tasks_done, slice)
            if status != LP_INTERRUPTED:
                return
            PyErr_CheckSignals()
