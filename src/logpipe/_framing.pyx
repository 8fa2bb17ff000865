# cython: freethreading_compatible = True
"""Line framing and JSON validation for the sources, without the GIL.

``LineFramer(ring, max_line=..., validate_json=...)`` turns a byte stream fed
in arbitrary pieces into records: it splits at ``\\n`` (one trailing ``\\r``
is stripped), skips empty lines, rejects lines that are too long or (with
``validate_json=True``) are not one JSON value, and pushes the good ones into
a RingBuffer with ``lp_push_many``, 256 at a time. ``validate_json(data)``
is the same validator for one buffer.

One pass, no per-line Python work
---------------------------------
A fed buffer is scanned once without the GIL: ``memchr`` finds each newline,
the validator checks the line in place, and the line's address goes into a
chunk that is pushed when it holds 256 lines (or at the end of the buffer), so
good lines are copied exactly once: into the ring. Only the bytes of a line
that straddles two buffers are copied (into the held partial line). A rejected
line is staged as (reason code, address, size) and turned into a Python tuple
after the pass, with the GIL; the staging area holds 256 entries, so a flood
of bad lines costs one GIL round trip per 256 of them.

Bounded memory
--------------
* The held partial line is kept whole while it could still be a good line
  (at most ``max_line + 1`` bytes: a final ``\\r`` is not part of the record).
  Once it is longer, only its first 4096 bytes are kept and its size is
  counted; everything up to the newline is discarded, and the line is
  rejected as "too long" when the newline comes. A 10 MB line fed in 64 KiB
  pieces holds 4 KiB.
* Rejected lines waiting for ``take_rejected()`` keep their first 4096 bytes
  only, and at most 10,000 of them wait (more are counted in
  ``rejected_dropped``, and still counted in ``invalid``).
* While the ring is full, the framer waits (without the GIL) up to
  ``timeout``. When it gives up, the good lines not yet pushed are copied into
  a backlog, and the rest of the buffer is still scanned (rejections and blank
  lines are accounted for; good lines join the backlog), so a feed always
  takes the whole buffer. The next feed (``feed(b"")`` will do) pushes the
  backlog first. A caller that keeps feeding while ``pending_lines > 0`` grows
  the backlog by what it feeds: sources should stop reading until it is 0.

Counters and offsets
--------------------
``lines == records + invalid + blank + pending_lines`` at all times, and
``consumed + pending == fed``. ``consumed`` is a prefix: every byte before it
belongs to a line that was pushed, rejected or skipped, and it always lies on
a line boundary (just after a newline, or at the end of a finished stream),
so a source can checkpoint it. A rejected or blank line that follows a held
(unpushed) good line is counted and reported at once, but ``consumed`` passes
it only when the held line is pushed: a restart from a checkpoint may report
such a line to the dead letter twice, never lose a record. ``pending`` is
therefore the input not yet accounted for (the partial line's full size
included, even when only its first 4096 bytes are in memory); ``buffered`` is
what the framer holds in memory. To ask "is the ring holding lines back?",
read ``pending_lines``: ``pending`` is also > 0 whenever a partial line (no
newline yet) is held, and stays so until more input or ``finish()``.

The JSON validator
------------------
A hand-written state machine over the bytes (no recursion, no allocation: a
1024-bit stack of container kinds lives on the C stack). It accepts exactly
one JSON value per RFC 8259 with optional surrounding whitespace (space, tab,
CR, LF), and it follows orjson where RFC 8259 leaves room:

* strict UTF-8 in strings (no overlong forms, no UTF-8-encoded surrogates,
  nothing above U+10FFFF); outside strings only ASCII is valid JSON anyway;
* a string escape ``\\uD800``-``\\uDFFF`` must be a high surrogate followed by
  a low one: lone surrogate escapes are rejected (RFC 8259 allows them
  syntactically; orjson rejects them, and so do we);
* nesting deeper than 1024 arrays/objects is rejected (orjson's limit);
* a number whose value rounds to infinity as a double (``1e400``, a
  310-digit integer) is rejected, with the exact threshold (orjson rejects
  them as "number is infinity when parsed as double"); underflow to 0 is fine;
* no byte order mark, NaN, Infinity, comments, trailing commas, single quotes,
  leading zeros, leading ``+``, ``.5`` or ``5.``, or raw control characters in
  strings (DEL, 0x7f, is allowed raw).

Known differences from ``orjson.loads``: none in what is valid, as far as
the fuzz tests (tests/framing/test_framing_fuzz.py) and the tables
(tests/framing/test_framing_json.py) see. Otherwise: the reasons differ in
wording and offsets (ours name the first offending byte in input order;
orjson checks UTF-8 over the whole input first), and validate_json takes
bytes-like objects only, not str.

Two paths give these verdicts: a fast path that answers "certainly valid"
or "not sure", and the exact state machine (``json_check``), which decides
every line the fast path is not sure of and gives every reason and offset.
A line the fast path accepts is one json_check accepts (see "Why the fast
path is sound" below), so the verdicts, reasons and offsets are json_check's
whichever path ran. validate_json and the line framer both go this way, on
each line in place.

The exact path. Strings are scanned 16 bytes at a time (SSE2 where the
compiler has it, every x86-64; two 8-byte SWAR words elsewhere, or in a
``LOGPIPE_PORTABLE=1`` build, which CI tests: see :data:`SIMD`), and so are
the digit runs of numbers; the rest is read a byte at a time. The scan of
plain string bytes is inlined into the parser (a key or a short value is one
16-byte look); escapes, UTF-8 and the input's last 15 bytes go to the full
string scanner.

The fast path (``_json_fast.h``, next to this file). :data:`FAST_PATH` says
which variant runs: ``"avx2"`` (AVX2, BMI1/2, PCLMUL and POPCNT; those
functions alone are compiled for them, with a target attribute, and chosen
at import when the CPU has them, so the module still runs on any x86-64),
``"sse2"`` (any x86-64), or None (a ``LOGPIPE_PORTABLE=1`` build or another
CPU: json_check checks every line). Both variants compute the same answer.
It works in two stages over 64-byte blocks:

* Stage 1 classifies each block into bit masks (bit k for byte k): quotes,
  backslashes, control and non-ASCII bytes (these two made only when the
  block has any), the operators ``{}[]:,``, spaces, colons, bytes with bit 0
  set (which tells ``{}[]`` from ``:,``), digits and zeros. A block that lies
  wholly inside one string (no unescaped quote: a long message, a stack
  trace) stops after the first three. The last block is the line's last 32
  or 64 bytes, shifted so that nothing past the line's end is read (a line
  under 64 bytes is copied into a block padded with spaces). From the masks:
  the escaped bytes (a run of backslashes escapes the byte after it when its
  length is odd; runs and strings go on across blocks); the bytes inside
  strings, by prefix XOR of the unescaped quotes (carry-less multiplication
  by all ones in the AVX2 variant, shifts in SSE2), from an opening quote up
  to its closing one; and the tokens: operators outside strings, opening
  quotes, and the first byte of each run of scalar bytes (outside strings,
  neither whitespace, operator nor quote). It is not sure, and stops, at any
  byte >= 0x80 (UTF-8 is json_check's), a control byte inside a string or
  outside one other than tab, LF and CR, an escape other than ``\\" \\\\
  \\/ \\b \\f \\n \\r \\t`` and ``\\uXXXX`` (four hex digits, not a surrogate),
  or a string still open at the end.
* Stage 2 walks the tokens in order with the JSON grammar: a stack of
  container kinds, 63 deep at most (deeper: not sure), and each scalar run
  parsed in place: it must be exactly a number of RFC 8259 with at most 200
  integer digits and at most 2 exponent digits (below 1e299, so no double
  overflows) or ``true``, ``false``, ``null``, followed by whitespace, an
  operator, a quote or the end.

A flat object (no container inside: most log lines) needs no walk. Its
tokens must read ``{ K : V , K : V ... }``, and stage 1 checks that with
masks: operators exactly at the even token ranks (prefix XOR of the token
mask), colons exactly at the odd operator ranks (prefix XOR of the operator
mask), no scalar where a key goes, exactly two ``{}[]`` tokens, the first
token ``{`` and the last ``}``. (Alternation forces every key and value
between two operators; the colon ranks make the operators ``{ : , : ...
: }``; the bracket count leaves commas between the first and the last.) Its
scalars are vouched for by masks too when all are plain integers (every
scalar byte a digit, no run starting with 0 going on, none spanning a whole
block); otherwise each is checked on its own, its length known from the
masks: true, false, null, or an integer with an optional fraction of up to
32 bytes by one or two 16-byte digit scans, anything else as in stage 2.

Why the fast path is sound. Outside strings, each byte of a line it accepts
is whitespace, an operator token or part of a scalar run that begins with a
scalar token; the rest are strings, each from an opening quote token to its
closing quote. Stage 1 vouches for string contents (printable ASCII and valid
escapes, as json_check reads them) and that every string closes; stage 2 or
the flat check vouches that the tokens form exactly one JSON value and that
each scalar run is exactly a valid number or literal. So the line is one JSON
value by RFC 8259, and none of json_check's further rules can reject it:
there is no non-ASCII byte (so no invalid UTF-8), no surrogate escape, no
nesting deeper than 63, no number that could overflow a double. The tests
check this against json_check and orjson for each variant
(tests/framing/test_framing_fast.py), including at every block boundary.

Reasons (``offset`` is the byte offset in the line or buffer)::

    too long
    not JSON: unexpected byte 0x7d at 17
    not JSON: unexpected end at 12
    not JSON: invalid UTF-8 at 5
    not JSON: lone surrogate escape at 3
    not JSON: number out of range at 0
    not JSON: nesting deeper than 1024 at 1024

Threads
-------
A LineFramer belongs to one stream: one thread feeds it at a time (a second
concurrent ``feed``/``finish`` raises RuntimeError). Counters may be read and
``take_rejected()`` called from any thread.
"""

import os

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.errno cimport EINTR, errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcpy, memmove
from posix.unistd cimport read

from logpipe._ringbuf cimport (
    LP_CLOSED, LP_NOMEM, LP_OK, LP_PUSH_CHUNK, LP_TIMEOUT, LP_WOULD_BLOCK,
    RingBuffer, lp_cas_u64, lp_now, lp_push_many, lp_ring_is_closed, lp_ring_t,
    lp_store_release, lp_wait_room,
)

__all__ = [
    "FAST_PATH", "KEPT_BYTES", "MAX_DEPTH", "REJECTED_LIMIT", "SIMD", "LineFramer", "aligned_offset", "validate_json",
]

cdef enum:
    KEEP = 4096            # bytes kept of a rejected line
    DEPTH_LIMIT = 1024     # deepest nesting accepted
    STAGE_CAP = 256        # rejections staged per nogil stretch
    PENDING_REJECTS = 10000
    KIND_BYTES = 128       # DEPTH_LIMIT bits

KEPT_BYTES = KEEP
MAX_DEPTH = DEPTH_LIMIT
REJECTED_LIMIT = PENDING_REJECTS

# JSON check results.
cdef enum:
    J_OK = 0
    J_BYTE = 1        # unexpected byte
    J_END = 2         # input ended inside a value
    J_UTF8 = 3
    J_DEPTH = 4
    J_SURROGATE = 5
    J_RANGE = 6       # number overflows a double
    J_TOO_LONG = 100  # (framing) the line is over max_line

# Scan results.
cdef enum:
    ST_DONE = 0
    ST_STAGE_FULL = 1
    ST_NOMEM = 2

# Why read_chunks returned.
cdef enum:
    READ_PAUSE = 0     # a short read, or the time is up
    READ_END = 1       # end of input
    READ_CONVERT = 2   # the chunk needs the GIL to be finished
    READ_STOPPED = 3   # gave up waiting for room, ring closed, out of memory
    READ_ERROR = 4


# --------------------------------------------------------------------------
# The JSON validator (nogil, one pass, no allocation)
# --------------------------------------------------------------------------

cdef extern from *:
    """
    /* 1: a byte that may appear as is in a JSON string and needs no further
       look (printable ASCII other than '"' and '\\\\'). */
    static const unsigned char LP_STR_PLAIN[256] = {
        0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
        1,1,0,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
        1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,0,1,1,1,
        1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
    };
    /* 2**1024 - 2**970: the smallest decimal that rounds to infinity as an
       IEEE double (half-way between DBL_MAX and 2**1024, ties to even). */
    static const char LP_DBL_OVERFLOW[] =
        "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649"
        "017977587207096330286416692887910946555547851940402630657488671505820681908902000708383"
        "676273854845817711531764475730270069855571366959622842914819860834936475292719074168444"
        "365510704342711559699508093042880177904174497792";
    """
    const unsigned char *LP_STR_PLAIN
    const char *LP_DBL_OVERFLOW

cdef enum:
    DBL_OVERFLOW_DIGITS = 309   # digits of LP_DBL_OVERFLOW; its value is about 1.8e308


cdef extern from * nogil:
    """
    #include <string.h>
    #define LP_ONES 0x0101010101010101ULL
    #define LP_HIGHS 0x8080808080808080ULL
    static inline uint64_t lp_load64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
    /* 1 if none of the 8 bytes needs a look inside a string: no '"', no '\\',
       no control byte (< 0x20), no non-ASCII byte. (The zero-byte tests may
       flag a plain byte above a special one; that only sends the word to the
       byte loop.) */
    static inline int lp_str_plain8(uint64_t v) {
        uint64_t q = v ^ (LP_ONES * 0x22), b = v ^ (LP_ONES * 0x5C);
        return ((((q - LP_ONES) & ~q) | ((b - LP_ONES) & ~b) | ((v - LP_ONES * 0x20) & ~v) | v) & LP_HIGHS) == 0;
    }
    /* Offset of the first byte of p[0:16] that needs a look inside a string
       ('"', '\\', a control byte or a non-ASCII byte), 16 if there is none.
       With SSE2 (every x86-64) one signed compare against 0x20 catches both
       the control bytes and the non-ASCII ones (negative as signed bytes).
       Elsewhere two SWAR words, then bytes: a word the SWAR test flags holds
       a special byte, so the byte loop stops inside it. */
    #if defined(__SSE2__) && !defined(LP_PORTABLE)
    #define LP_SIMD 1
    #include <emmintrin.h>
    static inline int lp_str_special16(const unsigned char *p) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x22));
        __m128i backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x5C));
        __m128i low_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), low_or_high));
        return mask ? __builtin_ctz(mask) : 16;
    }
    #else
    #define LP_SIMD 0
    #endif
    /* 1 if the 8 bytes are all ASCII digits. */
    static inline int lp_digits8(uint64_t v) {
        return ((v & (LP_ONES * 0xF0)) == LP_ONES * 0x30)
            && (((v + LP_ONES * 0x06) & (LP_ONES * 0xF0)) == LP_ONES * 0x30);
    }
    /* The portable 16-byte scans: how many of p[0:16] pass before the first
       byte that does not, by two 8-byte words (word_ok), then bytes
       (byte_ok). A word that fails holds a failing byte, so the byte loop
       stops inside it. With constant arguments the calls inline away. */
    static inline int lp_prefix16(const unsigned char *p, int (*word_ok)(uint64_t), int (*byte_ok)(unsigned char)) {
        int k = 0;
        if (word_ok(lp_load64(p))) {
            k = 8;
            if (word_ok(lp_load64(p + 8))) return 16;
        }
        while (k < 16 && byte_ok(p[k])) k++;
        return k;
    }
    static inline int lp_str_plain_byte(unsigned char c) { return LP_STR_PLAIN[c]; }
    static inline int lp_digit_byte(unsigned char c) { return (unsigned char)(c - 48) < 10; }
    #if !LP_SIMD
    static inline int lp_str_special16(const unsigned char *p) {
        return lp_prefix16(p, lp_str_plain8, lp_str_plain_byte);
    }
    #endif
    /* How many of p[0:16] are ASCII digits before the first other byte (16
       if all are). ASCII digits are positive as signed bytes, and the bytes
       >= 0x80 negative, so two signed compares find them. */
    #if LP_SIMD
    static inline int lp_digits16(const unsigned char *p) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        __m128i digit = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8('0' - 1)),
                                      _mm_cmplt_epi8(v, _mm_set1_epi8('9' + 1)));
        unsigned other = ~(unsigned)_mm_movemask_epi8(digit) & 0xFFFFu;
        return other ? __builtin_ctz(other) : 16;
    }
    #else
    static inline int lp_digits16(const unsigned char *p) {
        return lp_prefix16(p, lp_digits8, lp_digit_byte);
    }
    #endif
    """
    uint64_t lp_load64(const uint8_t *p)
    bint lp_str_plain8(uint64_t v)
    int lp_str_special16(const uint8_t *p)
    int LP_SIMD
    bint lp_digits8(uint64_t v)
    int lp_digits16(const uint8_t *p)


#: Whether strings and digit runs are scanned with SSE2 (False: the portable
#: SWAR code, on other CPUs or in a ``LOGPIPE_PORTABLE=1`` build).
SIMD = bool(LP_SIMD)


cdef inline bint is_ws(uint8_t c) noexcept nogil:
    return c == 0x20 or c == 0x0a or c == 0x0d or c == 0x09


cdef inline bint is_digit(uint8_t c) noexcept nogil:
    return <uint8_t>(c - 48) < 10


cdef inline Py_ssize_t skip_digits(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The offset of the first byte at or after s[i] that is not an ASCII digit (n if none)."""
    cdef int k
    while i + 16 <= n:
        k = lp_digits16(s + i)
        i += k
        if k != 16:
            return i
    while i + 8 <= n and lp_digits8(lp_load64(s + i)):
        i += 8
    while i < n and is_digit(s[i]):
        i += 1
    return i


cdef inline bint is_cont(uint8_t c) noexcept nogil:
    return (c & 0xC0) == 0x80


cdef inline Py_ssize_t utf8_len(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Length of the well-formed UTF-8 sequence at s[i] (a byte >= 0x80), 0 if none."""
    cdef uint8_t c = s[i], lo = 0x80, hi = 0xBF
    cdef Py_ssize_t k, need
    if 0xC2 <= c <= 0xDF:
        need = 1
    elif 0xE0 <= c <= 0xEF:
        need = 2
        if c == 0xE0:
            lo = 0xA0           # no overlong forms
        elif c == 0xED:
            hi = 0x9F           # no surrogates
    elif 0xF0 <= c <= 0xF4:
        need = 3
        if c == 0xF0:
            lo = 0x90           # no overlong forms
        elif c == 0xF4:
            hi = 0x8F           # nothing above U+10FFFF
    else:
        return 0
    if i + need >= n:
        return 0                # truncated
    if not (lo <= s[i + 1] <= hi):
        return 0
    for k in range(2, need + 1):
        if not is_cont(s[i + k]):
            return 0
    return need + 1


cdef inline int hex4(const uint8_t *s, Py_ssize_t i, Py_ssize_t n, uint32_t *out,
                     Py_ssize_t *where) noexcept nogil:
    """Parse 4 hex digits at s[i:]."""
    cdef uint32_t v = 0
    cdef uint8_t c
    cdef Py_ssize_t k
    for k in range(4):
        if i + k >= n:
            where[0] = n
            return J_END
        c = s[i + k]
        if is_digit(c):
            v = (v << 4) | (c - 48)
        elif 97 <= (c | 0x20) <= 102:
            v = (v << 4) | ((c | 0x20) - 87)
        else:
            where[0] = i + k
            return J_BYTE
    out[0] = v
    return J_OK


cdef inline int scan_string(const uint8_t *s, Py_ssize_t *pi, Py_ssize_t n, Py_ssize_t *where) noexcept nogil:
    """Check the string whose opening quote is at s[pi[0] - 1]; on success pi[0] is past its closing quote.

    Inlined for the common case, a string of plain bytes whose closing
    quote lies at least 16 bytes before the end of the input: keys and
    values cost one 16-byte look per 16 bytes and no call. Anything else
    (escapes, UTF-8, control bytes, the input's last 15 bytes) goes on in
    scan_string_rest from where the plain bytes end.
    """
    cdef Py_ssize_t i = pi[0]
    cdef int k
    while i + 16 <= n:
        k = lp_str_special16(s + i)
        if k < 16:
            if s[i + k] == 34:
                pi[0] = i + k + 1
                return J_OK
            break
        i += 16
    pi[0] = i   # s[start:i] is plain: the rest starts after it
    return scan_string_rest(s, pi, n, where)


cdef int scan_string_rest(const uint8_t *s, Py_ssize_t *pi, Py_ssize_t n, Py_ssize_t *where) noexcept nogil:
    """scan_string from the first byte its inlined part could not take: escapes, UTF-8, errors, the end of the input."""
    cdef Py_ssize_t i = pi[0], start, k
    cdef uint8_t c
    cdef uint32_t cp, low
    cdef int err
    while True:
        if i + 16 <= n:
            k = lp_str_special16(s + i)
            i += k
            if k == 16:
                continue
            # else s[i] is the special byte, and i < n
        else:   # the last 15 bytes: a word, then bytes
            while i + 8 <= n and lp_str_plain8(lp_load64(s + i)):
                i += 8
            while i < n and LP_STR_PLAIN[s[i]]:
                i += 1
            if i >= n:
                where[0] = n
                return J_END
        c = s[i]
        if c == 34:             # '"'
            pi[0] = i + 1
            return J_OK
        if c == 92:             # '\\'
            if i + 1 >= n:
                where[0] = n
                return J_END
            c = s[i + 1]
            if c == 117:        # 'u'
                start = i
                err = hex4(s, i + 2, n, &cp, where)
                if err:
                    return err
                i += 6
                if 0xDC00 <= cp <= 0xDFFF:
                    where[0] = start
                    return J_SURROGATE
                if 0xD800 <= cp <= 0xDBFF:
                    if i + 1 < n and s[i] == 92 and s[i + 1] == 117:
                        err = hex4(s, i + 2, n, &low, where)
                        if err:
                            return err
                        if not (0xDC00 <= low <= 0xDFFF):
                            where[0] = start
                            return J_SURROGATE
                        i += 6
                    elif i >= n:
                        where[0] = n
                        return J_END
                    else:
                        where[0] = start
                        return J_SURROGATE
                continue
            if c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 or c == 114 or c == 116:
                i += 2
                continue
            where[0] = i + 1
            return J_BYTE
        if c < 0x20:
            where[0] = i
            return J_BYTE
        k = utf8_len(s, i, n)
        if k == 0:
            where[0] = i
            return J_UTF8
        i += k


cdef bint number_overflows(const uint8_t *s, Py_ssize_t int_start, Py_ssize_t int_end,
                           Py_ssize_t frac_start, Py_ssize_t frac_end, int64_t exp) noexcept nogil:
    """Whether the number rounds to +-infinity as a double (slow path, for huge numbers only)."""
    cdef Py_ssize_t first, k, q, nint = int_end - int_start, total
    cdef int64_t mag
    cdef uint8_t d
    if s[int_start] != 48:
        mag = nint - 1 + exp
        first = 0
    else:
        k = frac_start
        while k < frac_end and s[k] == 48:
            k += 1
        if k == frac_end:
            return False        # zero
        mag = exp - (k - frac_start + 1)
        first = nint + (k - frac_start)
    # The value is in [10**mag, 10**(mag + 1)); the threshold is ~1.8 * 10**308.
    if mag < 308:
        return False
    if mag > 308:
        return True
    total = nint + (frac_end - frac_start)
    for k in range(DBL_OVERFLOW_DIGITS):
        q = first + k
        if q < nint:
            d = s[int_start + q]
        elif q < total:
            d = s[frac_start + q - nint]
        else:
            d = 48
        if d != <uint8_t>LP_DBL_OVERFLOW[k]:
            return d > <uint8_t>LP_DBL_OVERFLOW[k]
    return True                 # equal to the half-way point: ties round to infinity


cdef inline int scan_number(const uint8_t *s, Py_ssize_t *pi, Py_ssize_t n, Py_ssize_t *where) noexcept nogil:
    cdef Py_ssize_t i = pi[0], start = pi[0], int_start, int_end, frac_start, frac_end
    cdef int64_t exp = 0
    cdef bint negative_exp = False
    if s[i] == 45:              # '-'
        i += 1
        if i >= n:
            where[0] = n
            return J_END
    int_start = i
    if s[i] == 48:
        i += 1
    elif is_digit(s[i]):
        i = skip_digits(s, i + 1, n)
    else:
        where[0] = i
        return J_BYTE
    int_end = frac_start = frac_end = i
    if i < n and s[i] == 46:    # '.'
        i += 1
        if i >= n:
            where[0] = n
            return J_END
        if not is_digit(s[i]):
            where[0] = i
            return J_BYTE
        frac_start = i
        i = frac_end = skip_digits(s, i + 1, n)
    if i < n and (s[i] | 0x20) == 101:  # 'e' or 'E'
        i += 1
        if i < n and (s[i] == 43 or s[i] == 45):
            negative_exp = s[i] == 45
            i += 1
        if i >= n:
            where[0] = n
            return J_END
        if not is_digit(s[i]):
            where[0] = i
            return J_BYTE
        while i < n and is_digit(s[i]):
            if exp < 1000000000:
                exp = exp * 10 + (s[i] - 48)
            i += 1
        if negative_exp:
            exp = -exp
    # Below 10**308 whatever the digits: the common case costs one comparison.
    if (int_end - int_start) + exp > 308 and number_overflows(s, int_start, int_end, frac_start, frac_end, exp):
        where[0] = start
        return J_RANGE
    pi[0] = i
    return J_OK


cdef inline int literal(const uint8_t *s, Py_ssize_t *pi, Py_ssize_t n, const char *word,
                        Py_ssize_t size, Py_ssize_t *where) noexcept nogil:
    cdef Py_ssize_t i = pi[0], k
    for k in range(size):
        if i + k >= n:
            where[0] = n
            return J_END
        if s[i + k] != <uint8_t>word[k]:
            where[0] = i + k
            return J_BYTE
    pi[0] = i + size
    return J_OK


cdef inline int literal_value(const uint8_t *s, Py_ssize_t *pi, Py_ssize_t n, uint8_t first,
                              Py_ssize_t *where) noexcept nogil:
    """``true``, ``false`` or ``null``, the one its first byte names."""
    if first == 116:
        return literal(s, pi, n, b"true", 4, where)
    if first == 102:
        return literal(s, pi, n, b"false", 5, where)
    return literal(s, pi, n, b"null", 4, where)


cdef inline int unexpected(const uint8_t *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *where) noexcept nogil:
    """The error for an unexpected byte at s[i]: invalid UTF-8 if it starts no valid sequence."""
    where[0] = i
    if s[i] >= 0x80 and utf8_len(s, i, n) == 0:
        return J_UTF8
    return J_BYTE


cdef inline Py_ssize_t skip_ws(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    # Most bytes after a token are above 0x20: one comparison for them.
    while i < n and s[i] <= 0x20 and is_ws(s[i]):
        i += 1
    return i


cdef inline int scan_key(const uint8_t *s, Py_ssize_t *pi, Py_ssize_t n, Py_ssize_t *where) noexcept nogil:
    """An object key and its ':' (whitespace around both); on success pi[0] is past the ':'."""
    cdef Py_ssize_t i = skip_ws(s, pi[0], n)
    cdef int err
    if i >= n:
        where[0] = n
        return J_END
    if s[i] != 34:
        return unexpected(s, i, n, where)
    i += 1
    err = scan_string(s, &i, n, where)
    if err:
        return err
    i = skip_ws(s, i, n)
    if i >= n:
        where[0] = n
        return J_END
    if s[i] != 58:              # ':'
        return unexpected(s, i, n, where)
    pi[0] = i + 1
    return J_OK


cdef int json_check(const uint8_t *s, Py_ssize_t n, Py_ssize_t *where) noexcept nogil:
    """J_OK if s[:n] is exactly one JSON value (with optional whitespace around it).

    Otherwise the error code, and ``where`` is the offset of the first error.

    Each turn of the outer loop reads one value. A scalar or an empty
    container is followed by the inner loop, which reads what may follow a
    value (',' and the next key, or the ends of containers) until another
    value must start. A non-empty container's first key (or nothing, for an
    array) is read with its opening bracket, so the next turn reads its
    first value.
    """
    cdef uint8_t kinds[KIND_BYTES]   # bit d: the container at depth d is an object
    cdef Py_ssize_t i = 0
    cdef int depth = 0, err
    cdef uint8_t c
    cdef bint value_ended
    while True:
        i = skip_ws(s, i, n)
        if i >= n:
            where[0] = n
            return J_END
        c = s[i]
        value_ended = True
        if c == 34:
            i += 1
            err = scan_string(s, &i, n, where)
            if err:
                return err
        elif c == 123 or c == 91:   # '{' '['
            if depth == DEPTH_LIMIT:
                where[0] = i
                return J_DEPTH
            i = skip_ws(s, i + 1, n)
            if c == 123:
                kinds[depth >> 3] |= <uint8_t>(1 << (depth & 7))
                if i < n and s[i] == 125:       # '{}'
                    i += 1
                else:
                    depth += 1
                    err = scan_key(s, &i, n, where)
                    if err:
                        return err
                    value_ended = False
            else:
                kinds[depth >> 3] &= <uint8_t>~(1 << (depth & 7))
                if i < n and s[i] == 93:        # '[]'
                    i += 1
                else:
                    depth += 1
                    value_ended = False
        elif c == 45 or is_digit(c):
            err = scan_number(s, &i, n, where)
            if err:
                return err
        elif c == 116 or c == 102 or c == 110:  # 't' 'f' 'n'
            err = literal_value(s, &i, n, c, where)
            if err:
                return err
        else:
            return unexpected(s, i, n, where)
        if not value_ended:
            continue
        # A value ended: ',' (then a key in an object), or the container ends.
        while True:
            i = skip_ws(s, i, n)
            if depth == 0:
                if i < n:
                    return unexpected(s, i, n, where)
                return J_OK
            if i >= n:
                where[0] = n
                return J_END
            c = s[i]
            if kinds[(depth - 1) >> 3] & (1 << ((depth - 1) & 7)):
                if c == 44:             # ','
                    i += 1
                    err = scan_key(s, &i, n, where)
                    if err:
                        return err
                    break
                if c != 125:            # '}'
                    return unexpected(s, i, n, where)
            else:
                if c == 44:
                    i += 1
                    break
                if c != 93:             # ']'
                    return unexpected(s, i, n, where)
            depth -= 1
            i += 1


# --------------------------------------------------------------------------
# The fast path (_json_fast.h): "certainly valid" or "not sure"
# --------------------------------------------------------------------------

cdef extern from "_json_fast.h" nogil:
    ctypedef int (*lp_fast_fn)(const uint8_t *s, size_t n)
    enum:
        LP_FAST_OFF
        LP_FAST_SSE2
        LP_FAST_AVX2
    bint lp_fast_available(int variant)
    lp_fast_fn lp_fast_function(int variant)

# The active fast path (NULL: none, every line goes to json_check alone).
cdef lp_fast_fn fast_json = NULL
cdef int fast_variant = LP_FAST_OFF

cdef dict FAST_NAMES = {"off": LP_FAST_OFF, "sse2": LP_FAST_SSE2, "avx2": LP_FAST_AVX2}


cdef inline int check_json(const uint8_t *s, Py_ssize_t n, Py_ssize_t *where) noexcept nogil:
    """json_check's verdict, by the fast path when it is sure (then J_OK)."""
    if fast_json != NULL and fast_json(s, <size_t>n):
        return J_OK
    return json_check(s, n, where)


cdef object select_fast_path(str name):
    """Make ``name`` ("avx2", "sse2" or "off") the active fast path; return the previous one's name."""
    global fast_json, fast_variant
    cdef int variant
    cdef lp_fast_fn fn = NULL
    if name not in FAST_NAMES:
        raise ValueError(f"fast path must be one of {', '.join(FAST_NAMES)}, got {name!r}")
    variant = FAST_NAMES[name]
    if variant != LP_FAST_OFF:
        fn = lp_fast_function(variant)
        if fn == NULL:
            raise ValueError(f"the {name} fast path is not available in this build or on this CPU")
    previous = next(k for k, v in FAST_NAMES.items() if v == fast_variant)
    fast_json = fn
    fast_variant = variant
    return previous


#: The variants of the fast path this build and CPU can run, fastest first.
_FAST_VARIANTS = tuple(name for name in ("avx2", "sse2") if lp_fast_available(FAST_NAMES[name]))
select_fast_path(_FAST_VARIANTS[0] if _FAST_VARIANTS else "off")
#: The JSON validator's fast path chosen at import: "avx2" (AVX2, BMI1/2,
#: PCLMUL and POPCNT: picked at run time), "sse2" (any x86-64), or None (a
#: ``LOGPIPE_PORTABLE=1`` build or another CPU: json_check checks every line).
FAST_PATH = _FAST_VARIANTS[0] if _FAST_VARIANTS else None


def _use_fast_path(name):
    """(Tests and benches.) Make ``name`` ("avx2", "sse2" or "off") the active fast path; return the previous one.

    ValueError if this build or CPU lacks it. Not thread-safe with
    respect to itself; lines validated meanwhile use either path.
    """
    return select_fast_path(name)


def _fast_check(data):
    """(Tests.) True if the active fast path is sure ``data`` is valid JSON, None if it is not sure."""
    cdef Py_buffer view
    cdef int ok = 0
    get_buffer(data, &view)
    try:
        if fast_json != NULL:
            ok = fast_json(<const uint8_t *>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return True if ok else None


cdef str reason_text(int code, Py_ssize_t where, uint8_t byte):
    if code == J_TOO_LONG:
        return "too long"
    if code == J_BYTE:
        return f"not JSON: unexpected byte 0x{byte:02x} at {where}"
    if code == J_END:
        return f"not JSON: unexpected end at {where}"
    if code == J_UTF8:
        return f"not JSON: invalid UTF-8 at {where}"
    if code == J_SURROGATE:
        return f"not JSON: lone surrogate escape at {where}"
    if code == J_RANGE:
        return f"not JSON: number out of range at {where}"
    if code == J_DEPTH:
        return f"not JSON: nesting deeper than {DEPTH_LIMIT} at {where}"
    return f"not JSON: error {code} at {where}"


def aligned_offset(data, Py_ssize_t alignment):
    """How far into the bytes-like ``data`` its first ``alignment``-aligned byte lies.

    ``alignment`` is a power of two. The sources read into a window of a
    bytearray that starts on a page boundary found with it
    (logpipe.infrastructure.sources._lines.ReadBuffer says why).
    """
    cdef Py_buffer view
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    get_buffer(data, &view)
    cdef size_t address = <size_t>view.buf
    PyBuffer_Release(&view)
    return <Py_ssize_t>((-address) & <size_t>(alignment - 1))


cdef int get_buffer(object data, Py_buffer *view) except -1:
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except (TypeError, BufferError):
        raise TypeError(
            f"data must be bytes-like (bytes, bytearray, memoryview, ...), got {type(data).__name__}") from None
    return 0


def validate_json(data):
    """None if ``data`` is exactly one JSON value (RFC 8259, strict UTF-8), else the reason.

    The reason names the first error and its byte offset, e.g.
    ``"not JSON: unexpected byte 0x7d at 17"``. See the module docstring for
    the rules and how they compare with orjson.
    """
    cdef Py_buffer view
    cdef Py_ssize_t where = 0
    cdef int code
    get_buffer(data, &view)
    try:
        if view.len > 65536:
            with nogil:
                code = check_json(<const uint8_t *>view.buf, view.len, &where)
        else:
            code = check_json(<const uint8_t *>view.buf, view.len, &where)
        if code == J_OK:
            return None
        return reason_text(code, where, (<const uint8_t *>view.buf)[where] if where < view.len else 0)
    finally:
        PyBuffer_Release(&view)


# --------------------------------------------------------------------------
# The framer
# --------------------------------------------------------------------------

cdef struct stage_t:
    const char *line     # the line (or its kept prefix); valid until the stage is converted
    Py_ssize_t kept
    uint64_t size
    Py_ssize_t where
    int code
    uint8_t byte

cdef struct held_t:     # a good line waiting for room in the ring
    Py_ssize_t off      # in backlog
    uint32_t length
    uint64_t adv        # input bytes accounted for once it is pushed


cdef inline double deadline_from(object timeout) except? -2.0:
    if timeout is None:
        return -1.0
    cdef double t = timeout
    if not t >= 0:
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
    return lp_now() + t


cdef inline bint pause_reading(Py_ssize_t got, Py_ssize_t size, double read_until) noexcept nogil:
    """feed_from stops after a read of ``got`` bytes into ``size``: a short read
    (the end of a file, a pipe with no more), or ``read_until`` (>= 0) passed."""
    return got < size or (read_until >= 0 and lp_now() >= read_until)


cdef class LineFramer:
    """Split a byte stream into lines and push them into a ring as records.

    Args:
        ring: the RingBuffer the records go to.
        max_line: longest record accepted, in bytes, not counting the line
            terminator (``\\n`` or ``\\r\\n``); 1 <= max_line <=
            ring.max_record_size. Longer lines are rejected as "too long".
        validate_json: reject lines that are not exactly one JSON value.

    Feeding: ``feed(data, timeout=None)`` takes the whole buffer and returns
    how many records it pushed. While the ring is full it waits without the
    GIL up to ``timeout`` seconds (None: forever). If it gives up, or the ring
    is closed, the good lines it could not push stay held (``pending_lines``)
    and are pushed first by the next ``feed`` (``feed(b"")`` will do) or
    ``finish``; nothing is lost or reordered. A closed ring raises nothing:
    ``closed`` becomes True and the lines stay held. ``finish()`` ends the
    stream: a final line without a newline is treated as complete.

    Reading: ``feed_from(fd, buffer, timeout=None)`` makes the ``read(2)``
    calls itself, into ``buffer``, and frames each chunk as ``feed`` would,
    reading on without taking the GIL while reads fill the buffer, for up to
    ``timeout``; it returns the bytes read (0: end of input). A file source
    spends no GIL round trip between its chunks that way.

    Rejected lines: ``take_rejected()`` returns ``(reason, first 4096 bytes,
    full size)`` for each line rejected since the last call, in order.

    A source's loop, responsive to its stop signal and bounded in memory::

        framer.feed(chunk, timeout=0.01)
        while framer.pending_lines and not stop.is_set() and not framer.closed:
            framer.feed(b"", timeout=0.01)      # the ring is full: retry, read nothing more
        report(framer.take_rejected())

    (``pending`` is no test for this: it counts the partial line too.)

    One thread feeds a framer at a time. See the module docstring for the
    counters, ``consumed`` (a checkpointable offset) and the memory bounds.
    """

    cdef RingBuffer _ring
    cdef lp_ring_t *r
    cdef Py_ssize_t _max_line
    cdef bint validate
    cdef uint64_t busy

    # the partial line (bytes after the last newline)
    cdef char *part
    cdef Py_ssize_t part_cap
    cdef Py_ssize_t part_kept      # bytes of it in memory: all of it while <= max_line + 1, else KEEP
    cdef uint64_t part_size        # its full size
    cdef uint8_t part_last         # its last byte (a '\r' that is not part of the record)

    # good lines waiting to be pushed, in order: first the backlog, then the chunk
    cdef char *backlog
    cdef Py_ssize_t bl_len, bl_cap
    cdef held_t *held
    cdef Py_ssize_t held_head, held_count, held_cap
    cdef const char *c_data[LP_PUSH_CHUNK]
    cdef uint32_t c_len[LP_PUSH_CHUNK]
    cdef uint64_t c_adv[LP_PUSH_CHUNK]
    cdef Py_ssize_t c_n

    # rejected lines not yet turned into Python objects
    cdef stage_t stage[STAGE_CAP]
    cdef Py_ssize_t stage_n
    cdef list _rejected

    # state of the current feed
    cdef double deadline
    cdef double last_wait       # how long the last wait for room took (lp_wait_room)
    cdef bint given_up
    cdef bint nomem
    cdef bint broken

    cdef uint64_t n_lines, n_records, n_invalid, n_too_long, n_blank, n_fed, n_consumed
    cdef uint64_t n_dropped
    cdef bint is_closed

    def __cinit__(self):
        self.part = NULL
        self.backlog = NULL
        self.held = NULL

    def __init__(self, RingBuffer ring not None, *, max_line, validate_json=False):
        if self.r != NULL:
            raise RuntimeError("LineFramer is already initialised")
        if not isinstance(max_line, int) or not 1 <= max_line <= ring.ring.max_record:
            raise ValueError(
                f"max_line must be an integer in [1, {ring.ring.max_record}] (the ring's max_record_size),"
                f" got {max_line!r}")
        self._ring = ring
        self.r = ring.ring
        self._max_line = max_line
        self.validate = bool(validate_json)
        self._rejected = []

    def __dealloc__(self):
        PyMem_RawFree(self.part)
        PyMem_RawFree(self.backlog)
        PyMem_RawFree(self.held)

    # -- memory ---------------------------------------------------------------

    cdef bint grow(self, char **buf, Py_ssize_t *cap, Py_ssize_t need, Py_ssize_t limit) noexcept nogil:
        """Make *buf hold at least ``need`` bytes (doubling, up to ``limit`` if that is enough)."""
        cdef Py_ssize_t size
        cdef char *p
        if need <= cap[0]:
            return True
        size = cap[0] * 2 if cap[0] >= 256 else 256
        if size < need:
            size = need
        if limit >= need and size > limit:
            size = limit
        p = <char *>PyMem_RawRealloc(buf[0], size)
        if p == NULL:
            return False
        buf[0] = p
        cap[0] = size
        return True

    cdef void shrink_part(self, Py_ssize_t size) noexcept nogil:
        """Give back a big partial-line buffer (after a long line) once it holds little."""
        cdef char *p
        if self.part_cap > size and self.part_kept <= size:
            p = <char *>PyMem_RawRealloc(self.part, size)
            if p != NULL:
                self.part = p
                self.part_cap = size

    cdef void release_part(self) noexcept nogil:
        """Free a big partial-line buffer once nothing is held in it (nothing points into it either:
        call only after the chunk is flushed and the stage converted)."""
        if self.part_kept == 0 and self.part_cap > 65536:
            PyMem_RawFree(self.part)
            self.part = NULL
            self.part_cap = 0

    # -- accounting -----------------------------------------------------------

    cdef inline void account(self, uint64_t nbytes) noexcept nogil:
        """Input bytes of a line that needs no push: consumed now, or with the held line before it."""
        if self.c_n:
            self.c_adv[self.c_n - 1] += nbytes
        elif self.held_count > self.held_head:
            self.held[self.held_count - 1].adv += nbytes
        else:
            self.n_consumed += nbytes

    cdef inline void reject(self, int code, const char *line, Py_ssize_t kept, uint64_t size,
                            Py_ssize_t where) noexcept nogil:
        cdef stage_t *e = &self.stage[self.stage_n]
        self.stage_n += 1
        self.n_invalid += 1
        if code == J_TOO_LONG:
            self.n_too_long += 1
        e.code = code
        e.line = line
        e.kept = kept if kept < KEEP else KEEP
        e.size = size
        e.where = where
        e.byte = <uint8_t>line[where] if code != J_TOO_LONG and where < <Py_ssize_t>size else 0

    # -- pushing --------------------------------------------------------------

    cdef Py_ssize_t push_run(self, Py_ssize_t n) noexcept nogil:
        """Push c_data[:n] in order, waiting up to the deadline; returns how many went in."""
        cdef Py_ssize_t i = 0, pushed, k
        cdef int status = LP_OK
        if self.given_up:
            return 0
        while i < n:
            pushed = lp_push_many(self.r, &self.c_data[i], &self.c_len[i], n - i, &status)
            i += pushed
            if i == n or pushed:
                continue
            if status == LP_CLOSED:
                self.is_closed = True
                break
            if status == LP_NOMEM:
                self.nomem = True
                break
            if lp_wait_room(self.r, self.c_len[i], self.deadline, &self.last_wait) == LP_TIMEOUT:
                # One last try: room may have come as time ran out.
                i += lp_push_many(self.r, &self.c_data[i], &self.c_len[i], n - i, &status)
                if status == LP_CLOSED:
                    self.is_closed = True
                break
        if i < n:
            self.given_up = True
        self.n_records += i
        for k in range(i):
            self.n_consumed += self.c_adv[k]
        return i

    cdef bint hold(self, const char *line, uint32_t length, uint64_t adv) noexcept nogil:
        """Append a good line to the backlog (copying it)."""
        cdef held_t *h
        cdef Py_ssize_t cap
        if self.held_count == self.held_cap:
            cap = self.held_cap * 2 if self.held_cap else 64
            h = <held_t *>PyMem_RawRealloc(self.held, cap * sizeof(held_t))
            if h == NULL:
                return False
            self.held = h
            self.held_cap = cap
        if not self.grow(&self.backlog, &self.bl_cap, self.bl_len + length, 0):
            return False
        memcpy(self.backlog + self.bl_len, line, length)
        h = &self.held[self.held_count]
        h.off = self.bl_len
        h.length = length
        h.adv = adv
        self.held_count += 1
        self.bl_len += length
        return True

    cdef bint flush_chunk(self) noexcept nogil:
        """Push the chunk; what does not go in moves to the backlog."""
        cdef Py_ssize_t i, n = self.c_n
        if n == 0:
            return True
        i = self.push_run(n)
        self.c_n = 0
        while i < n:
            if not self.hold(self.c_data[i], self.c_len[i], self.c_adv[i]):
                self.broken = True
                return False
            i += 1
        return True

    cdef void push_backlog(self) noexcept nogil:
        """Push held lines, oldest first, until none is left or we give up."""
        cdef Py_ssize_t k, n, i, base
        cdef held_t *h
        while self.held_head < self.held_count and not self.given_up:
            n = self.held_count - self.held_head
            if n > LP_PUSH_CHUNK:
                n = LP_PUSH_CHUNK
            for k in range(n):
                h = &self.held[self.held_head + k]
                self.c_data[k] = self.backlog + h.off
                self.c_len[k] = h.length
                self.c_adv[k] = h.adv
            i = self.push_run(n)
            self.held_head += i
        if self.held_head == self.held_count:
            self.held_head = self.held_count = self.bl_len = 0
            if self.bl_cap > 1 << 20:   # a backlog can be big: do not keep its peak
                PyMem_RawFree(self.backlog)
                self.backlog = NULL
                self.bl_cap = 0
        elif self.held_head:
            # Compact, so the backlog's memory is what it holds.
            base = self.held[self.held_head].off
            memmove(self.backlog, self.backlog + base, self.bl_len - base)
            self.bl_len -= base
            n = self.held_count - self.held_head
            memmove(self.held, self.held + self.held_head, n * sizeof(held_t))
            for k in range(n):
                self.held[k].off -= base
            self.held_head = 0
            self.held_count = n
        self.c_n = 0

    # -- lines ----------------------------------------------------------------

    cdef inline void line(self, const char *p, Py_ssize_t raw, uint64_t adv) noexcept nogil:
        """One complete line of ``raw`` bytes before its newline, ``adv`` input bytes in all."""
        cdef Py_ssize_t length = raw, where = 0
        cdef int code
        self.n_lines += 1
        if length and p[length - 1] == 13:
            length -= 1
        if length == 0:
            self.n_blank += 1
            self.account(adv)
            return
        if length > self._max_line:
            self.reject(J_TOO_LONG, p, length, length, 0)
            self.account(adv)
            return
        if self.validate:
            code = check_json(<const uint8_t *>p, length, &where)
            if code != J_OK:
                self.reject(code, p, length, length, where)
                self.account(adv)
                return
        if self.given_up or self.held_count > self.held_head:
            if not self.hold(p, <uint32_t>length, adv):
                self.broken = True
            return
        self.c_data[self.c_n] = p
        self.c_len[self.c_n] = <uint32_t>length
        self.c_adv[self.c_n] = adv
        self.c_n += 1
        if self.c_n == LP_PUSH_CHUNK:
            self.flush_chunk()

    cdef bint append_partial(self, const char *p, Py_ssize_t n) noexcept nogil:
        """Add bytes without a newline to the partial line."""
        cdef Py_ssize_t room
        if n == 0:
            return True
        self.part_size += n
        self.part_last = <uint8_t>p[n - 1]
        if self.part_size <= <uint64_t>self._max_line + 1:
            if not self.grow(&self.part, &self.part_cap, self.part_kept + n, self._max_line + 1):
                return False
            memcpy(self.part + self.part_kept, p, n)
            self.part_kept += n
            return True
        # Too long already: keep the first KEEP bytes for the dead letter.
        if self.part_kept > KEEP:
            self.part_kept = KEEP
        room = KEEP - self.part_kept
        if room > n:
            room = n
        if room > 0:
            if not self.grow(&self.part, &self.part_cap, self.part_kept + room, KEEP):
                return False
            memcpy(self.part + self.part_kept, p, room)
            self.part_kept += room
        self.shrink_part(KEEP)
        return True

    cdef void end_partial(self, uint64_t terminator) noexcept nogil:
        """The partial line is complete (``terminator``: 1 for a newline, 0 at the end of input)."""
        cdef uint64_t size = self.part_size, length
        if size <= <uint64_t>self._max_line + 1:
            self.line(self.part, <Py_ssize_t>size, size + terminator)
        else:
            self.n_lines += 1
            length = size - (1 if self.part_last == 13 else 0)
            self.reject(J_TOO_LONG, self.part, min(<uint64_t>self.part_kept, length), length, 0)
            self.account(size + terminator)
        self.part_size = 0
        self.part_kept = 0

    cdef int scan(self, const char *data, Py_ssize_t n, Py_ssize_t *ppos) noexcept nogil:
        """Frame data[ppos[0]:] up to its last newline; ppos[0] ends at the start of the tail."""
        cdef Py_ssize_t pos = ppos[0], length
        cdef const char *hit
        while True:
            if self.stage_n == STAGE_CAP:
                ppos[0] = pos
                return ST_STAGE_FULL
            if self.broken:
                ppos[0] = pos
                return ST_NOMEM
            hit = <const char *>memchr(data + pos, 10, n - pos)
            if hit == NULL:
                break
            length = hit - (data + pos)
            self.line(data + pos, length, length + 1)
            pos += length + 1
        ppos[0] = pos
        if not self.flush_chunk():
            return ST_NOMEM
        return ST_DONE

    # -- Python side ----------------------------------------------------------

    cdef int enter(self, object timeout) except -1:
        cdef uint64_t free_ = 0
        if self.broken:
            raise RuntimeError("LineFramer is unusable after running out of memory")
        self.deadline = deadline_from(timeout)
        if not lp_cas_u64(&self.busy, &free_, 1):
            raise RuntimeError("LineFramer is being fed by another thread")
        self.given_up = False
        self.nomem = False
        return 0

    cdef int leave(self) except -1:
        if lp_ring_is_closed(self.r):
            self.is_closed = True
        lp_store_release(&self.busy, 0)
        if self.broken:
            raise MemoryError("out of memory holding input lines in LineFramer")
        if self.nomem:
            raise MemoryError("out of memory copying a line into the ring (the line stays held)")
        return 0

    cdef int convert_stage(self) except -1:
        """Turn staged rejections into (reason, bytes, size) tuples."""
        cdef Py_ssize_t k, n = self.stage_n
        cdef stage_t *e
        cdef list out = self._rejected
        self.stage_n = 0
        for k in range(n):
            e = &self.stage[k]
            if len(out) >= PENDING_REJECTS:
                self.n_dropped += 1
                continue
            out.append((reason_text(e.code, e.where, e.byte),
                        PyBytes_FromStringAndSize(e.line, e.kept), e.size))
        return 0

    cdef int frame_begin(self, const char *p, Py_ssize_t n, Py_ssize_t *ppos) noexcept nogil:
        """Start framing a fed buffer: held lines first, then the partial line
        completed, then the lines; the scan's result (finish_scan goes on)."""
        cdef const char *hit
        cdef Py_ssize_t length
        self.n_fed += n
        self.push_backlog()
        if n and self.part_size:
            hit = <const char *>memchr(p, 10, n)
            if hit == NULL:
                if not self.append_partial(p, n):
                    self.broken = True
                ppos[0] = n
            else:
                length = hit - p
                if not self.append_partial(p, length):
                    self.broken = True
                else:
                    self.end_partial(1)
                ppos[0] = length + 1
        if self.broken:
            return ST_NOMEM
        return self.scan(p, n, ppos)

    cdef int finish_scan(self, const char *p, Py_ssize_t n, Py_ssize_t pos, int st) except -1:
        """With the GIL: after frame_begin returned ``st``, scan the rest of the
        buffer (turning rejections into Python objects each time the stage
        fills), then keep the tail (no newline) as the partial line."""
        while st == ST_STAGE_FULL:
            self.convert_stage()
            with nogil:
                st = self.scan(p, n, &pos)
        self.convert_stage()
        if n - pos > 65536:
            with nogil:
                self.keep_tail(p, n, pos)
        else:
            self.keep_tail(p, n, pos)
        return 0

    cdef void keep_tail(self, const char *p, Py_ssize_t n, Py_ssize_t pos) noexcept nogil:
        """The end of a framed buffer (the stage converted): the tail after its
        last newline becomes the partial line, the only copy a good line can cost."""
        self.release_part()
        if not self.broken and pos < n:
            if not self.append_partial(p + pos, n - pos):
                self.broken = True

    def feed(self, data, *, timeout=None):
        """Frame ``data`` (any bytes-like object) and push its good lines; return how many were pushed.

        Lines split across calls are joined. Waits without the GIL while the
        ring is full, up to ``timeout`` seconds (None: forever); lines that
        could not be pushed stay held (see the class docstring).
        """
        cdef Py_buffer view
        cdef const char *p
        cdef Py_ssize_t n, pos = 0
        cdef uint64_t before = self.n_records
        cdef int st
        get_buffer(data, &view)
        try:
            self.enter(timeout)
            try:
                p = <const char *>view.buf
                n = view.len
                with nogil:
                    st = self.frame_begin(p, n, &pos)
                self.finish_scan(p, n, pos, st)
            finally:
                self.leave()
        finally:
            PyBuffer_Release(&view)
        return self.n_records - before

    cdef inline bint cannot_go_on(self) noexcept nogil:
        """A wait for room gave up, the ring closed, or memory ran out: read no more."""
        return self.given_up or self.is_closed or self.broken or self.nomem

    cdef int read_chunks(self, int fd, char *buf, Py_ssize_t size, double read_until,
                         Py_ssize_t *pn, Py_ssize_t *ppos, int *pst, uint64_t *ptotal) noexcept nogil:
        """feed_from's loop without the GIL: read a chunk, frame it, and go on
        while reads come back full and nothing asks for the GIL. Returns
        READ_* (READ_ERROR with errno in pst[0]); on READ_CONVERT the chunk of
        pn[0] bytes is framed up to ppos[0], frame_begin having returned pst[0]."""
        cdef Py_ssize_t got
        while True:
            got = read(fd, buf, <size_t>size)
            if got < 0:
                pst[0] = errno
                return READ_ERROR
            if got == 0:
                return READ_END
            ptotal[0] += <uint64_t>got
            pn[0] = got
            ppos[0] = 0
            pst[0] = self.frame_begin(buf, got, ppos)
            if pst[0] != ST_DONE or self.stage_n:
                # Rejected lines to turn into Python objects first (they
                # point into buf, which the next read overwrites).
                return READ_CONVERT
            self.keep_tail(buf, got, ppos[0])
            if self.cannot_go_on():
                return READ_STOPPED
            if pause_reading(got, size, read_until):
                return READ_PAUSE

    def feed_from(self, int fd, buffer, *, timeout=None, bint once=False):
        """Read ``fd`` into ``buffer`` (writable, reused) and frame what comes, as
        :meth:`feed` would each chunk; return the bytes read (0: the first read
        found the end of the input).

        It reads chunk after chunk without taking the GIL between them, while
        each read fills the buffer (a short one means the end of the file is
        near, or a pipe had no more) and for up to ``timeout`` seconds (None:
        no limit); the lines of the last chunk then have as long again to
        find room in the ring. ``once``: one read only, its lines waiting up
        to ``timeout`` for room (a socket served in turn with others, a pipe
        that may have nothing more). It also returns once a wait for room
        gave up, the ring closed, or after a failed read that followed
        others (the next call meets the failure again). The partial line,
        held lines and rejected lines are as with :meth:`feed`.

        Raises:
            OSError: the first read failed (``read(2)``'s errno); a read
                interrupted by a signal runs the Python handlers and is
                retried unless one raised (PEP 475).
        """
        cdef Py_buffer view
        cdef double read_until = -1.0
        cdef Py_ssize_t n = 0, pos = 0
        cdef int st = ST_DONE, outcome
        cdef uint64_t total = 0
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            if view.len == 0:
                raise ValueError("feed_from needs a buffer of at least one byte")
            self.enter(timeout)
            try:
                if once:
                    read_until = 0.0  # passed as soon as the first chunk is framed
                elif timeout is not None:
                    read_until = self.deadline
                    self.deadline = read_until + <double>timeout
                while True:
                    with nogil:
                        outcome = self.read_chunks(fd, <char *>view.buf, view.len, read_until,
                                                   &n, &pos, &st, &total)
                    if outcome == READ_CONVERT:
                        self.finish_scan(<const char *>view.buf, n, pos, st)
                        if self.cannot_go_on() or pause_reading(n, view.len, read_until):
                            break
                        continue
                    if outcome == READ_ERROR:  # st holds the errno
                        if st == EINTR:
                            PyErr_CheckSignals()  # raises if a handler raised
                            continue
                        if total:
                            break
                        raise OSError(st, os.strerror(st))
                    break
            finally:
                self.leave()
        finally:
            PyBuffer_Release(&view)
        return total

    def finish(self, *, timeout=None):
        """End of input: push held lines and take a final line without newline as complete.

        Returns how many records were pushed. Lines that do not fit before the
        timeout stay held, as with feed; the framer can be fed again after.
        """
        cdef uint64_t before = self.n_records
        self.enter(timeout)
        try:
            with nogil:
                self.push_backlog()
                if self.part_size:
                    self.end_partial(0)
                    self.flush_chunk()
            self.convert_stage()
            self.release_part()
        finally:
            self.leave()
        return self.n_records - before

    def take_held(self):
        """Give up on the good lines still waiting for room in the ring; return them.

        For a source shutting down while its sink is stalled: the lines can
        then go to the dead letter instead of vanishing. They count as
        consumed (the input bytes are accounted for), not as records.
        """
        cdef Py_ssize_t k
        cdef held_t *h
        cdef list out = []
        self.enter(0.0)
        try:
            for k in range(self.held_head, self.held_count):
                h = &self.held[k]
                out.append(PyBytes_FromStringAndSize(self.backlog + h.off, h.length))
                self.n_consumed += h.adv
            self.held_head = self.held_count = self.bl_len = 0
        finally:
            self.leave()
        return out

    def take_rejected(self):
        """The lines rejected since the last call: a list of (reason, line or its first 4096 bytes, size)."""
        cdef list out = self._rejected
        n = len(out)
        taken = out[:n]
        del out[:n]     # appends made meanwhile (another thread) stay
        return taken

    @property
    def lines(self):
        """Complete lines seen (blank and rejected included)."""
        return self.n_lines

    @property
    def records(self):
        """Lines pushed into the ring."""
        return self.n_records

    @property
    def invalid(self):
        """Lines rejected, for any reason."""
        return self.n_invalid

    @property
    def too_long(self):
        """Lines rejected as too long (a subset of invalid)."""
        return self.n_too_long

    @property
    def blank(self):
        """Empty lines skipped."""
        return self.n_blank

    @property
    def fed(self):
        """Bytes fed in all."""
        return self.n_fed

    @property
    def consumed(self):
        """Input bytes accounted for: a prefix ending on a line boundary (checkpoint it)."""
        return self.n_consumed

    @property
    def pending(self):
        """Input bytes not yet accounted for: held good lines plus the partial line (full size)."""
        return self.n_fed - self.n_consumed

    @property
    def partial(self):
        """The line begun and not ended yet (no newline so far): ``(its first
        bytes, at most 4096, its full size)``; None when there is none. What a
        source dead-letters when a stop cuts a live stream mid-line."""
        if self.part_size == 0:
            return None
        return (PyBytes_FromStringAndSize(self.part, min(self.part_kept, <Py_ssize_t>KEEP)),
                self.part_size)

    @property
    def pending_lines(self):
        """Good lines held because the ring was full or closed; 0 after a feed that pushed everything."""
        return self.held_count - self.held_head + self.c_n

    @property
    def buffered(self):
        """Bytes of input held in memory (partial line prefix plus held lines)."""
        return self.part_kept + self.bl_len

    @property
    def rejected_dropped(self):
        """Rejected lines not kept for take_rejected because 10,000 were already waiting."""
        return self.n_dropped

    @property
    def closed(self):
        """The ring was found closed: held lines will never go in."""
        return self.is_closed

    @property
    def max_line(self):
        return self._max_line

    @property
    def validate_json(self):
        return self.validate

    @property
    def ring(self):
        return self._ring
