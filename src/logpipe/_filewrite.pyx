# cython: freethreading_compatible = True
"""``write(2)`` that keeps the GIL: for short writes to regular files.

``os.write`` always lets the GIL go around the system call. For a write
of a few KiB into the page cache that is the expensive part: the call
itself takes a few microseconds, but while it runs the producer or
another worker takes the GIL, and getting it back means waiting for that
thread to let go (a wake-up on the GIL's condition variable, or up to the
5 ms switch interval). At the spec's defaults (batches of 50 lines, about
4 KiB) the file sink moved 1.25-1.36 M logs/s with ``os.write`` and
4.9-5.2 M with this call (``bench/bench_pipeline.py --batch-size 50
--channel-size 1500``, docs/benchmarks.md).

``write_holding_gil`` is the same system call without the release. It
is only safe where a write returns promptly, so the file sink uses it
only for regular files and only for writes up to 64 KiB, and stops using
it for a while after one of them was slow (dirty-page throttling, a
network file system): see ``FileSink`` in
``logpipe/infrastructure/sinks/file.py``. Never use it on a pipe, a
socket or a terminal, where a write can block until a reader comes: the
reader may need the GIL this call holds.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from libc.errno cimport EINTR, errno
from posix.unistd cimport write

__all__ = ["write_holding_gil"]


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
    cdef Py_ssize_t written
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        while True:
            written = write(fd, view.buf, <size_t>view.len)
            if written >= 0:
                return written
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)  # raises
            PyErr_CheckSignals()  # raises if a handler raised; else retry
    finally:
        PyBuffer_Release(&view)
