# cython: freethreading_compatible = True
"""The batch encoder: the generator's JSON log lines, written straight into a ring.

Each log is ``{"msg": M, "level": L, "ts": T, "seq": S}`` where M and L are
JSON strings encoded once by the caller (orjson) and T (Unix time in
microseconds) and S come from numpy columns. Formatting and pushing run
without the GIL, LP_PUSH_CHUNK records at a time: each chunk is formatted
into one scratch buffer and handed to the ring's lp_push_many, which copies it
into the slots, so one Python call moves any number of logs.
"""

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cpython.exc cimport PyErr_CheckSignals

from logpipe._ringbuf cimport (
    LP_CLOSED, LP_INTERRUPTED, LP_NOMEM, LP_OK, LP_PUSH_CHUNK, LP_TIMEOUT, LP_WOULD_BLOCK,
    RingBuffer, lp_now, lp_push_many, lp_ring_t, lp_wait_slice, lp_wait_writable,
)
from logpipe.exceptions import Closed

cdef extern from *:
    """
    static const char LP_DIGIT_PAIRS[201] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    """
    const char *LP_DIGIT_PAIRS


cdef inline Py_ssize_t write_u64(char *out, uint64_t value) noexcept nogil:
    """Decimal digits of ``value`` at ``out``; returns how many (1..20)."""
    cdef char tmp[20]
    cdef Py_ssize_t i = 20, n
    cdef uint64_t pair
    while value >= 100:
        pair = (value % 100) * 2
        value //= 100
        i -= 2
        tmp[i] = LP_DIGIT_PAIRS[pair]
        tmp[i + 1] = LP_DIGIT_PAIRS[pair + 1]
    if value >= 10:
        i -= 2
        tmp[i] = LP_DIGIT_PAIRS[value * 2]
        tmp[i + 1] = LP_DIGIT_PAIRS[value * 2 + 1]
    else:
        i -= 1
        tmp[i] = <char>(48 + value)
    n = 20 - i
    memcpy(out, tmp + i, n)
    return n


cdef inline Py_ssize_t write_i64(char *out, int64_t value) noexcept nogil:
    if value < 0:
        out[0] = b'-'
        return 1 + write_u64(out + 1, <uint64_t>(-(value + 1)) + 1)
    return write_u64(out, <uint64_t>value)


cdef struct log_format_t:
    const char *head       # '{"msg": M, "level": L, "ts": '
    Py_ssize_t head_len
    Py_ssize_t record_max  # head + two numbers + the fixed text


cdef inline Py_ssize_t format_log(char *out, log_format_t *fmt, int64_t ts, uint64_t seq) noexcept nogil:
    cdef Py_ssize_t n = fmt.head_len
    memcpy(out, fmt.head, n)
    n += write_i64(out + n, ts)
    memcpy(out + n, b', "seq": ', 9)
    n += 9
    n += write_u64(out + n, seq)
    out[n] = b'}'
    return n + 1


cdef bytes make_format(log_format_t *fmt, bytes msg_json, bytes level_json):
    """Fill ``fmt`` for these field values; return the head bytes, which the
    caller keeps alive as long as ``fmt`` is used (fmt.head points into them)."""
    cdef bytes head = b'{"msg": ' + msg_json + b', "level": ' + level_json + b', "ts": '
    fmt.head = head
    fmt.head_len = len(head)
    fmt.record_max = fmt.head_len + 20 + 9 + 20 + 1  # two 20-digit numbers, ', "seq": ', '}'
    return head


def encode_logs(const uint64_t[::1] seqs, const int64_t[::1] ts, bytes msg_json, bytes level_json):
    """The logs as newline-framed bytes (what put_logs puts, for tests and sinks)."""
    if seqs.shape[0] != ts.shape[0]:
        raise ValueError(f"seqs and ts differ in length ({seqs.shape[0]} != {ts.shape[0]})")
    cdef log_format_t fmt
    cdef bytes head = make_format(&fmt, msg_json, level_json)
    cdef Py_ssize_t count = seqs.shape[0], i, size = 0
    cdef char *buf = <char *>malloc(count * (fmt.record_max + 1) + 1)
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(count):
                size += format_log(buf + size, &fmt, ts[i], seqs[i])
                buf[size] = b'\n'
                size += 1
        return buf[:size]
    finally:
        free(buf)


def put_logs(RingBuffer ring not None, const uint64_t[::1] seqs, const int64_t[::1] ts,
             bytes msg_json, bytes level_json, timeout=None):
    """Format and push one log per (seq, ts) pair; return how many went in.

    Blocks while the ring is full, up to ``timeout`` seconds (None: forever),
    without the GIL. Returns early with a smaller count if the timeout expires
    or the ring is closed part-way; raises Closed if it was closed before
    anything went in.

    Args:
        ring: the destination.
        seqs: the ``seq`` column (uint64, contiguous).
        ts: the ``ts`` column, Unix microseconds (int64, contiguous).
        msg_json, level_json: the ``msg`` and ``level`` values, already
            JSON-encoded (quotes included), e.g. ``orjson.dumps("INFO")``.
    """
    if seqs.shape[0] != ts.shape[0]:
        raise ValueError(f"seqs and ts differ in length ({seqs.shape[0]} != {ts.shape[0]})")
    cdef log_format_t fmt
    cdef bytes head = make_format(&fmt, msg_json, level_json)
    if fmt.record_max > <Py_ssize_t>ring.ring.max_record:
        raise ValueError(
            f"a log of up to {fmt.record_max} bytes is over max_record_size ({ring.ring.max_record} bytes)")
    cdef double deadline = -1.0
    if timeout is not None:
        if timeout < 0:
            raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
        deadline = lp_now() + timeout
    cdef Py_ssize_t count = seqs.shape[0]
    cdef char *scratch = <char *>malloc(LP_PUSH_CHUNK * fmt.record_max)
    if scratch == NULL:
        raise MemoryError()
    cdef const char *data[LP_PUSH_CHUNK]
    cdef uint32_t lengths[LP_PUSH_CHUNK]
    cdef Py_ssize_t done = 0, chunk, i, pushed
    cdef int status = LP_OK, wait_status
    cdef double slice = lp_wait_slice()
    cdef lp_ring_t *r = ring.ring
    try:
        with nogil:
            while done < count:
                chunk = min(count - done, <Py_ssize_t>LP_PUSH_CHUNK)
                for i in range(chunk):
                    data[i] = scratch + i * fmt.record_max
                    lengths[i] = <uint32_t>format_log(scratch + i * fmt.record_max, &fmt,
                                                      ts[done + i], seqs[done + i])
                i = 0
                while i < chunk:
                    pushed = lp_push_many(r, &data[i], &lengths[i], chunk - i, &status)
                    i += pushed
                    if i == chunk or pushed:
                        continue
                    if status != LP_WOULD_BLOCK:
                        break
                    wait_status = lp_wait_writable(r, lengths[i], deadline, slice)
                    if wait_status == LP_INTERRUPTED:
                        with gil:   # let a Ctrl+C stop a producer blocked on a full ring
                            PyErr_CheckSignals()
                    elif wait_status == LP_TIMEOUT:
                        i += lp_push_many(r, &data[i], &lengths[i], chunk - i, &status)
                        status = LP_TIMEOUT
                        break
                done += i
                if i < chunk:
                    break
    finally:
        free(scratch)
    if status == LP_NOMEM:
        raise MemoryError("out of memory copying a log into the ring")
    if status == LP_CLOSED and done == 0:
        raise Closed("ring buffer is closed")
    return done
