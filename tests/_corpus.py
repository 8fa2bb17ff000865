"""A production-like corpus of log lines for the line sources, deterministic from a seed.

``make_corpus(seed, max_record_size=...)`` returns the input bytes and what a
line source must make of them. The expectations are not taken from any run:
``frame_by_rule`` applies the rule of docs/sources.md ("Lines: what the file,
stdin and tcp sources share") to the bytes, and the generator's own record of
what it wrote must agree with it (tests/e2e checks both).

The rule, for ``--format raw``:

- input is split at ``\\n``; a last line without a newline is a line too
  (end of input, end of a TCP connection);
- one trailing ``\\r`` is removed (``a\\r\\r\\n`` gives ``a\\r``);
- a line that is then empty is skipped: not a record, not invalid;
- a line longer than ``max_record_size`` bytes (after the ``\\r`` is removed)
  is rejected as ``too long`` and dead-lettered;
- every other line is a record, its bytes as they are (invalid UTF-8, NULs,
  a ``\\r`` in the middle included).

What it holds (fractions of the lines; the exact mix comes from the seed):

- most lines 60-300 bytes of log-like text, some with CRLF endings;
- 1% stack-trace-like payloads of 2-8 KiB that look multi-line (escaped
  ``\\n\\tat ...`` frames) but are one line;
- 0.1% lines of 10-60 KiB (so they fit a 65536-byte limit);
- empty lines (``\\n`` and ``\\r\\n``), lines of invalid UTF-8 and control bytes;
- lengths on the ring's internal boundaries: 0, 1, and 110-113 (a record
  of up to 111 bytes and its newline fit the 112-byte share of a 128-byte
  slot), 127-129, 255-257, 1023-1025;
- bursts for the batch boundaries: one out-of-line record followed by
  ``b - 1``, ``b`` and ``b + 1`` short records for b in 3, 50, 256, 1024 (a
  worker's batch can then mix one long record with a full batch of short
  ones: the pattern of issue 8);
- around the size limit: lines of exactly ``max_record_size`` bytes (with
  and without a ``\\r``), which fit, and a few that do not: one byte over,
  one byte over with a ``\\r`` after it, and about 3x over;
- a last line ending in ``\\r`` without a newline.

``long_records=False`` leaves out everything longer than the inline limit
(111 bytes): the control corpus, which does not exercise out-of-line records.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

INLINE_MAX = 111  # longest inline record at the default slot_size 128 (docs/ringbuffer.md: slot_size - 17)
BATCH_SIZES = (3, 50, 256, 1024)
BOUNDARY_LENGTHS = (1, 2, 110, 111, 112, 113, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025)
LEVELS = (b"INFO", b"INFO", b"INFO", b"DEBUG", b"WARN", b"ERROR")
WORDS = (
    b"request", b"handled", b"user", b"session", b"cache", b"miss", b"hit", b"upstream",
    b"timeout", b"retry", b"connection", b"pool", b"db", b"query", b"took", b"ms", b"status",
    b"GET", b"POST", b"/api/v1/orders", b"/healthz", b"worker", b"shard", b"commit", b"offset",
)  # fmt: skip


@dataclass
class Corpus:
    """Input bytes and what the rule makes of them."""

    data: bytes
    max_record_size: int
    records: list[bytes] = field(default_factory=list)  # what the generator meant to be records, in order
    too_long: list[int] = field(default_factory=list)  # sizes (after the \r) of the lines meant to be rejected
    blank: int = 0

    @property
    def record_bytes(self) -> int:
        """Size of the records as a file sink writes them (one newline each)."""
        return sum(len(r) + 1 for r in self.records)


def frame_by_rule(data: bytes, max_record_size: int) -> tuple[list[bytes], list[int], int]:
    """docs/sources.md's line rule applied to ``data``: (records, sizes of too-long lines, blank lines)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the input ended with a newline: no last partial line
    records: list[bytes] = []
    too_long: list[int] = []
    blank = 0
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            blank += 1
        elif len(line) > max_record_size:
            too_long.append(len(line))
        else:
            records.append(line)
    return records, too_long, blank


def records_of_output(data: bytes) -> list[bytes]:
    """The records a file sink wrote: each followed by one newline (records hold no newline)."""
    assert data == b"" or data.endswith(b"\n"), "output does not end with a newline"
    return data.split(b"\n")[:-1]


def multiset_difference(got: list[bytes], want: list[bytes]) -> str:
    """'' when ``got`` and ``want`` hold the same records the same number of times; else a short description."""
    got_c, want_c = Counter(got), Counter(want)
    if got_c == want_c:
        return ""
    missing = want_c - got_c
    extra = got_c - want_c

    def show(c: Counter[bytes]) -> str:
        items = [f"{r[:40]!r}...({len(r)} B) x{n}" for r, n in list(c.items())[:3]]
        return ", ".join(items)

    return (
        f"{len(got)} records written, {len(want)} expected; "
        f"{sum(missing.values())} missing (e.g. {show(missing)}); "
        f"{sum(extra.values())} unexpected or duplicated (e.g. {show(extra)})"
    )


class _Writer:
    def __init__(self, rng: random.Random, max_record_size: int) -> None:
        self.rng = rng
        self.max = max_record_size
        self.parts: list[bytes] = []
        self.records: list[bytes] = []
        self.too_long: list[int] = []
        self.blank = 0
        self.n = 0

    def line(self, payload: bytes, *, crlf: bool | None = None) -> None:
        """One line; ``payload`` holds no newline and is the record (or the rejected line)."""
        assert b"\n" not in payload
        if crlf is None:
            crlf = self.rng.random() < 0.05
        self.parts.append(payload + (b"\r\n" if crlf else b"\n"))
        self.n += 1
        self._expect(payload, crlf)

    def _expect(self, payload: bytes, crlf: bool = False) -> None:
        # The framer removes one \r before the newline: the CRLF's, else the payload's own.
        record = payload[:-1] if not crlf and payload.endswith(b"\r") else payload
        if not record:
            self.blank += 1
        elif len(record) > self.max:
            self.too_long.append(len(record))
        else:
            self.records.append(record)

    def last_line(self, payload: bytes) -> None:
        """The input's end: a line without a newline."""
        assert b"\n" not in payload
        self.parts.append(payload)
        self.n += 1
        self._expect(payload)

    # -- kinds of lines -------------------------------------------------------

    def text(self, size: int) -> bytes:
        """Log-like ASCII of exactly ``size`` bytes."""
        rng = self.rng
        head = b"2024-05-%02dT%02d:%02d:%02d.%06dZ %s [%s] " % (
            rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
            rng.randint(0, 999_999), rng.choice(LEVELS), b"svc-%d" % rng.randint(1, 40),
        )  # fmt: skip
        body = bytearray(head)
        if size > 8192:  # long lines: a few KiB of words, repeated
            while len(body) < 4096:
                body += rng.choice(WORDS) + b" "
            body *= size // len(body) + 1
        while len(body) < size:
            body += rng.choice(WORDS)
            body += b"=%d " % rng.randint(0, 10**6) if rng.random() < 0.3 else b" "
        return bytes(body[:size])

    def normal(self) -> bytes:
        return self.text(self.rng.randint(60, 300))

    def stack_trace(self) -> bytes:
        """2-8 KiB that looks like a multi-line trace, as one line (escaped newlines)."""
        rng = self.rng
        size = rng.randint(2048, 8192)
        body = bytearray(self.text(80) + b' exception="java.lang.IllegalStateException: boom')
        while len(body) < size:
            body += b"\\n\\tat com.example.%s.%s(%s.java:%d)" % (
                rng.choice(WORDS).strip(b"/"), rng.choice(WORDS).strip(b"/"),
                rng.choice(WORDS).strip(b"/"), rng.randint(1, 2000),
            )  # fmt: skip
        return bytes(body[:size])

    def huge(self) -> bytes:
        return self.text(self.rng.randint(10_000, 60_000))

    def binary(self) -> bytes:
        """Invalid UTF-8 and control bytes (no newline)."""
        rng = self.rng
        junk = bytes(rng.choice((0x00, 0x01, 0x1B, 0x7F, 0x80, 0xBF, 0xC0, 0xC3, 0xFE, 0xFF, 0xED, 0x0D)) for _ in range(rng.randint(1, 40)))
        return self.text(rng.randint(20, 60)) + junk + b"\xc3\x28 tail \xe2\x82"


def make_corpus(
    seed: int, lines: int = 30_000, *, max_record_size: int = 1 << 20, long_records: bool = True
) -> Corpus:
    """A corpus of about ``lines`` lines (see the module docstring)."""
    rng = random.Random(seed)
    w = _Writer(rng, max_record_size)
    # Things placed at random moments, with their own shuffled order.
    specials: list[bytes] = []
    for length in (0, *BOUNDARY_LENGTHS):
        if long_records or length <= INLINE_MAX:
            specials.extend([w.text(length)] * 3 if length else [b"", b"\r"])
    if long_records:
        specials += [w.text(max_record_size), w.text(max_record_size) + b"\r"]  # fit exactly
        specials += [
            w.text(max_record_size + 1),  # one byte too long
            w.text(max_record_size + 1) + b"\r",  # too long even without its \r
            w.text(3 * max_record_size + 17),  # far too long: only 4 KiB of it is held
        ]
        specials += [b"\r" + w.text(100) + b"\r" + w.text(50) + b"\r"]  # \r inside stays; last one goes
    specials += [w.binary() for _ in range(20)]
    rng.shuffle(specials)
    special_at = sorted(rng.sample(range(lines), len(specials)))

    bursts: list[tuple[int, int]] = []  # (line index, number of short records after a long one)
    if long_records:
        counts = [b + d for b in BATCH_SIZES for d in (-1, 0, 1)]
        burst_at = sorted(rng.sample(range(lines), len(counts)))
        rng.shuffle(counts)
        bursts = list(zip(burst_at, counts))

    si = bi = 0
    for i in range(lines):
        while si < len(special_at) and special_at[si] == i:
            w.line(specials[si])
            si += 1
        while bi < len(bursts) and bursts[bi][0] == i:
            w.line(w.text(rng.randint(INLINE_MAX + 1, 4096)))  # out of line
            for _ in range(bursts[bi][1]):
                w.line(w.text(rng.randint(60, INLINE_MAX)))
            bi += 1
        roll = rng.random()
        if roll < 0.01 and long_records:
            w.line(w.stack_trace())
        elif roll < 0.011 and long_records:
            w.line(w.huge())
        elif roll < 0.015:
            w.line(rng.choice((b"", b"\r")))  # an empty line, LF or CRLF
        elif long_records:
            w.line(w.normal())
        else:
            w.line(w.text(rng.randint(60, INLINE_MAX)))
    w.last_line(w.text(90) + b"\r")
    return Corpus(b"".join(w.parts), max_record_size, w.records, w.too_long, w.blank)
