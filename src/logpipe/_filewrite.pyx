# cython: freethreading_compatible = True
"""Writes to a file that keep the GIL when that is cheaper: for short writes to regular files.

``os.write`` always lets the GIL go around the system call. For a write
of a few KiB into the page cache that is the expensive part: the call
itself takes a few microseconds, but while it runs the producer or
another worker takes the GIL, and getting it back means waiting for that
thread to let go (a wake-up on the GIL's condition variable, or up to the
5 ms switch interval). At the spec's defaults (batches of 50 lines, about
4 KiB) the file sink moved 1.25-1.36 M logs/s with ``os.write`` and
4.9-5.2 M holding the GIL (``bench/bench_pipeline.py --batch-size 50
--channel-size 1500``, docs/benchmarks.md).

:class:`HeldWrites` makes that choice for every write of the file and
stdout sinks, by one rule kept here:

- a write of up to :data:`HOLD_GIL_MAX_BYTES` (64 KiB, the ring's own
  limit for copies under the GIL) to a *regular* file keeps the GIL;
- such a write can still be slow (dirty-page throttling, a network file
  system): one that takes over :data:`SLOW_WRITE_NS` (1 ms) sends every
  write of the next :data:`RELEASE_AFTER_SLOW_NS` (1 s) back to a write
  that lets the GIL go, so a slow disk stalls the other threads for at
  most one write a second;
- pipes, FIFOs, terminals and devices (``regular`` false) always let it
  go: a write there can wait for a reader, and the reader may need the GIL.

It is compiled because it runs for every batch a worker writes: as Python
(the rule, its two clock reads and the byte count were five calls of
~0.1 us each) it was a third of what the file sink added to a batch of 50
(``bench/bench_worker.py``).

``write_holding_gil`` is the GIL-keeping write alone, as a function. Never
use it on a pipe, a socket or a terminal, where a write can block until a
reader comes: the reader may need the GIL this call holds.
"""

import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec
from posix.unistd cimport write

from logpipe._ringbuf cimport Batch

__all__ = [
    "HOLD_GIL_MAX_BYTES",
    "RELEASE_AFTER_SLOW_NS",
    "SLOW_WRITE_NS",
    "HeldWrites",
    "write_holding_gil",
]

cdef enum:
    C_HOLD_GIL_MAX_BYTES = 64 << 10

#: Writes up to this many bytes to a regular file keep the GIL (module doc).
HOLD_GIL_MAX_BYTES = C_HOLD_GIL_MAX_BYTES
#: A GIL-keeping write slower than this ...
SLOW_WRITE_NS = 1_000_000
#: ... sends the writes of this long after it to a write that lets the GIL go.
RELEASE_AFTER_SLOW_NS = 1_000_000_000

#: For tests, fault injection: a function ``(fd, data) -> int`` that
#: :meth:`HeldWrites.write` calls instead of ``write(2)`` (a short write, an
#: error); None in production.
_write_hook = None

cdef int64_t C_SLOW_WRITE_NS = SLOW_WRITE_NS
cdef int64_t C_RELEASE_AFTER_SLOW_NS = RELEASE_AFTER_SLOW_NS


cdef inline int64_t monotonic_ns() noexcept nogil:
    # The clock of time.monotonic_ns().
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1_000_000_000 + now.tv_nsec


cdef Py_ssize_t write_some(int fd, const char *data, size_t size, bint keep_gil) except -1:
    """One ``write(2)``, as ``os.write``: the bytes written (maybe short), or OSError.

    An interrupted call runs the Python signal handlers (in the main
    thread) and is retried unless a handler raised (PEP 475).
    """
    cdef Py_ssize_t written
    cdef int error = 0
    while True:
        if keep_gil:
            written = write(fd, data, size)
            if written < 0:
                error = errno
        else:
            with nogil:
                written = write(fd, data, size)
                if written < 0:
                    error = errno
        if written >= 0:
            return written
        if error != EINTR:
            raise OSError(error, os.strerror(error))
        PyErr_CheckSignals()  # raises if a handler raised; else retry


def write_holding_gil(int fd, data) -> int:
    """Write ``data`` to ``fd`` with one ``write(2)``, holding the GIL; return the bytes written.

    Like ``os.write``: the return value may be short of ``len(data)`` (the
    caller loops), an error raises ``OSError`` with its errno, and a call
    interrupted by a signal runs the Python signal handlers (in the main
    thread) and is retried unless a handler raised (PEP 475).

    Args:
        fd: an open file descriptor; should be a regular file (see the module doc).
        data: a C-contiguous buffer (bytes, bytearray, memoryview, logpipe.Batch).
    """
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return write_some(fd, <const char *>view.buf, <size_t>view.len, True)
    finally:
        PyBuffer_Release(&view)


cdef class HeldWrites:
    """The writes to one file at a time, each keeping the GIL or not (module doc).

    Args:
        regular: whether the file is a regular one (only those may keep
            the GIL); set :attr:`regular` again when the file changes.
        clock: a function returning nanoseconds to time the writes with,
            for tests; None (the default) reads ``time.monotonic_ns``'s
            clock directly.

    Attributes:
        regular: as above.
        written: bytes these writes have put in files so far, short writes
            counted as what they wrote (the file sink sets it to a new
            file's size and decides rotation on it).
        kept_gil, released_gil: how many writes kept the GIL and how many
            let it go.
    """

    cdef public bint regular
    cdef public long long written
    cdef public unsigned long long kept_gil
    cdef public unsigned long long released_gil
    cdef public object clock
    cdef int64_t release_until  # writes started before this (ns) let the GIL go

    def __init__(self, bint regular=False, *, clock=None):
        self.regular = regular
        self.clock = clock

    def write(self, int fd, data) -> int:
        """One ``write(2)`` of ``data`` (a C-contiguous buffer) to ``fd``, as ``os.write``:
        the bytes written, or OSError."""
        cdef Py_buffer view
        cdef Py_ssize_t done
        cdef int64_t start
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            start = self.keep_gil_from(view.len)
            if _write_hook is None:
                done = write_some(fd, <const char *>view.buf, <size_t>view.len, start != 0)
            else:
                done = _write_hook(fd, data)
        finally:
            PyBuffer_Release(&view)
        self.wrote(start, done)
        return done

    def write_batch(self, int fd, Batch batch not None) -> int:
        """:meth:`write` for a held batch, from the ring's memory (``Batch.write_to``):
        bytes written, short only if a write failed after progress; OSError if none."""
        cdef int64_t start = self.keep_gil_from(batch.b.size)
        cdef Py_ssize_t done = batch.write_out(fd, start != 0)
        self.wrote(start, done)
        return done

    cdef int64_t keep_gil_from(self, Py_ssize_t size) except -1:
        """The clock now if a write of ``size`` bytes may keep the GIL; 0 if it lets it go."""
        cdef int64_t start
        if self.regular and size <= C_HOLD_GIL_MAX_BYTES:
            start = self.now()
            if start >= self.release_until:
                self.kept_gil += 1
                return start if start else 1  # 0 means "let it go": a test clock may read 0
        self.released_gil += 1
        return 0

    cdef int wrote(self, int64_t start, Py_ssize_t done) except -1:
        """After a write of ``done`` bytes that kept the GIL from ``start`` (0: it did not)."""
        self.written += done
        if start and self.now() - start > C_SLOW_WRITE_NS:
            # Slow: let the next second's writes go without the GIL.
            self.release_until = start + C_RELEASE_AFTER_SLOW_NS
        return 0

    cdef int64_t now(self) except? -1:
        if self.clock is None:
            return monotonic_ns()
        return self.clock()
