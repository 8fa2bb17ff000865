"""Unit tests for logpipe._framing.LineFramer: splitting, limits, the ring, the counters.

Every test checks the counter invariants after each call:
lines == records + invalid + blank + pending_lines and consumed + pending == fed.
Timed tests check that a timeout is honoured and the call returns; none
asserts on speed.
"""

from __future__ import annotations

import array
import threading
import time
import tracemalloc

import pytest

import logpipe._ringbuf as ringbuf
from logpipe import RingBuffer
from logpipe._framing import KEPT_BYTES, REJECTED_LIMIT, LineFramer

KiB = 1024
MiB = 1024 * KiB
TOL = 0.02  # clock slack allowed below a timeout
JOIN = 10.0  # seconds a helper thread gets to finish once it should


def check(framer: LineFramer, fed: int) -> None:
    """The invariants that hold after every call."""
    assert framer.fed == fed
    assert framer.consumed + framer.pending == fed
    assert framer.lines == framer.records + framer.invalid + framer.blank + framer.pending_lines
    assert framer.too_long <= framer.invalid


def drain(ring: RingBuffer) -> list[bytes]:
    """Every record in the ring now, in order."""
    out: list[bytes] = []
    while len(ring):
        out.extend(ring.get_many(1 << 16, block=False))
    return out


def run(data: bytes, *, max_line: int = 1000, validate: bool = False, finish: bool = True):
    """Feed ``data`` in one call (then finish); return (framer, records, rejected)."""
    ring = RingBuffer(1 << 16)
    framer = LineFramer(ring, max_line=max_line, validate_json=validate)
    framer.feed(data)
    if finish:
        framer.finish()
    check(framer, len(data))
    return framer, drain(ring), framer.take_rejected()


# --------------------------------------------------------------------------
# splitting


def test_lines_become_records_in_order_without_newlines():
    """Each complete line is one record, without its newline, in input order."""
    framer, records, rejected = run(b"one\ntwo\nthree\n")
    assert records == [b"one", b"two", b"three"]
    assert (framer.lines, framer.records, framer.invalid, framer.blank) == (3, 3, 0, 0)
    assert rejected == []
    assert framer.consumed == 14 and framer.pending == 0


def test_feed_returns_records_pushed_by_that_call():
    """feed returns how many records that call pushed, not a running total."""
    ring = RingBuffer(100)
    framer = LineFramer(ring, max_line=100)
    assert framer.feed(b"a\nb\nc") == 2
    assert framer.feed(b"\nd\n") == 2
    assert framer.feed(b"") == 0
    assert framer.records == 4
    check(framer, 8)


def test_crlf_loses_only_one_trailing_cr():
    """A trailing \\r is stripped once; \\r elsewhere in a line is kept."""
    framer, records, _ = run(b"a\r\nb\r\r\nc\rd\n\re\n")
    assert records == [b"a", b"b\r", b"c\rd", b"\re"]
    assert framer.blank == 0


def test_blank_lines_are_skipped_and_counted():
    """Empty lines (also \\r\\n alone) are counted in blank, not records, not invalid."""
    framer, records, rejected = run(b"\n\r\nx\n\n\r\n")
    assert records == [b"x"]
    assert (framer.lines, framer.records, framer.invalid, framer.blank) == (5, 1, 0, 4)
    assert rejected == []
    assert framer.consumed == 8


def test_whitespace_line_is_a_record_in_raw_mode():
    """Only an empty line is blank: a line of spaces is a record (raw) or invalid (json)."""
    _, records, _ = run(b"   \n")
    assert records == [b"   "]
    framer, records, rejected = run(b"   \n", validate=True)
    assert records == [] and framer.invalid == 1
    assert rejected == [("not JSON: unexpected end at 3", b"   ", 3)]


def test_bytes_like_inputs_are_accepted():
    """bytes, bytearray, memoryview slices and array('B') feed the same bytes."""
    ring = RingBuffer(100)
    framer = LineFramer(ring, max_line=100)
    framer.feed(bytearray(b"a\nb"))
    framer.feed(memoryview(b"xx\nc\nyy")[2:5])
    framer.feed(array.array("B", b"d\n"))
    assert drain(ring) == [b"a", b"b", b"c", b"d"]
    check(framer, 3 + 3 + 2)


def test_held_partial_line_is_a_copy():
    """Changing a bytearray after feeding it does not change the held partial line."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=100)
    buf = bytearray(b"x\nabc")
    framer.feed(buf)
    buf[2:5] = b"ZZZ"
    framer.feed(b"d\n")
    assert drain(ring) == [b"x", b"abcd"]


def test_non_buffer_input_raises_type_error():
    """feed of a str or an int raises TypeError and changes nothing."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=100)
    with pytest.raises(TypeError, match="bytes-like"):
        framer.feed("text\n")
    with pytest.raises(TypeError):
        framer.feed(12)
    assert framer.fed == 0 and framer.lines == 0


SAMPLE = (
    b'{"a": 1}\r\n'
    b"\n"
    + b"x" * 30
    + b"\n"
    b"[1,]\n"
    b'"ok"\n'
    b"\r\n"
    b'{"b": "\xc3\xa9"}\n'
    b"\xff\n"
    b'{"c": 3}'  # no final newline: finish() completes it
)
SAMPLE_RECORDS = [b'{"a": 1}', b'"ok"', b'{"b": "\xc3\xa9"}', b'{"c": 3}']
SAMPLE_REJECTED = [
    ("too long", b"x" * 30, 30),
    ("not JSON: unexpected byte 0x5d at 3", b"[1,]", 4),
    ("not JSON: invalid UTF-8 at 0", b"\xff", 1),
]


def test_sample_in_one_feed():
    """The reference sample fed at once gives the expected records, rejections and counts."""
    framer, records, rejected = run(SAMPLE, max_line=20, validate=True)
    assert records == SAMPLE_RECORDS
    assert rejected == SAMPLE_REJECTED
    assert (framer.lines, framer.invalid, framer.too_long, framer.blank) == (9, 3, 1, 2)
    assert framer.consumed == len(SAMPLE)


@pytest.mark.parametrize("cut", range(len(SAMPLE) + 1))
def test_sample_split_at_every_position(cut):
    """Two feeds split anywhere (inside \\r\\n, UTF-8 or a too-long line) give the one-feed result."""
    ring = RingBuffer(100)
    framer = LineFramer(ring, max_line=20, validate_json=True)
    framer.feed(SAMPLE[:cut])
    check(framer, cut)
    assert framer.consumed == SAMPLE.rfind(b"\n", 0, cut) + 1  # every complete line is accounted for
    framer.feed(SAMPLE[cut:])
    framer.finish()
    check(framer, len(SAMPLE))
    assert drain(ring) == SAMPLE_RECORDS
    assert framer.take_rejected() == SAMPLE_REJECTED
    assert framer.consumed == len(SAMPLE)


def test_sample_fed_byte_by_byte():
    """One byte per feed gives the same result as one feed."""
    ring = RingBuffer(100)
    framer = LineFramer(ring, max_line=20, validate_json=True)
    for i in range(len(SAMPLE)):
        framer.feed(SAMPLE[i : i + 1])
        check(framer, i + 1)
    framer.finish()
    assert drain(ring) == SAMPLE_RECORDS
    assert framer.take_rejected() == SAMPLE_REJECTED


# --------------------------------------------------------------------------
# finish


def test_finish_completes_a_final_line_without_newline():
    """finish pushes the held partial line (its \\r stripped) and accounts for all input."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=100)
    framer.feed(b"a\nlast\r")
    assert framer.pending == 5 and framer.consumed == 2
    assert framer.finish() == 1
    assert drain(ring) == [b"a", b"last"]
    assert framer.consumed == 7 and framer.pending == 0
    check(framer, 7)


def test_finish_without_partial_line_pushes_nothing():
    """finish after input ending in a newline (or no input) pushes nothing and counts no line."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=100)
    assert framer.finish() == 0
    framer.feed(b"a\n")
    assert framer.finish() == 0
    assert framer.lines == 1
    check(framer, 2)


def test_framer_can_be_fed_after_finish():
    """After finish a new line starts fresh: the finished partial line is not joined to it."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=100)
    framer.feed(b"ab")
    framer.finish()
    framer.feed(b"cd\n")
    assert drain(ring) == [b"ab", b"cd"]


# --------------------------------------------------------------------------
# max_line


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_exact_max_line_is_accepted_and_one_more_is_rejected(terminator):
    """A record of max_line bytes goes in; max_line + 1 is rejected as too long (terminator not counted)."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=50)
    fit, over = b"f" * 50, b"o" * 51
    framer.feed(fit + terminator + over + terminator)
    assert drain(ring) == [fit]
    assert framer.take_rejected() == [("too long", over, 51)]
    assert (framer.invalid, framer.too_long) == (1, 1)
    check(framer, 2 * len(terminator) + 101)


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_exact_max_line_is_accepted_across_feeds(terminator):
    """The max_line limit is the same when the line arrives in one-byte pieces."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=50)
    data = b"f" * 50 + terminator + b"o" * 51 + terminator
    for i in range(len(data)):
        framer.feed(data[i : i + 1])
    assert drain(ring) == [b"f" * 50]
    assert framer.take_rejected() == [("too long", b"o" * 51, 51)]


def test_too_long_line_keeps_its_first_4096_bytes_and_full_size():
    """A rejected long line is reported with its first 4096 bytes and its size."""
    line = bytes(range(256)) * 40  # 10240 bytes, no newline
    line = line.replace(b"\n", b".")
    framer, records, rejected = run(b"ok\n" + line + b"\nok2\n", max_line=5000)
    assert records == [b"ok", b"ok2"]
    assert rejected == [("too long", line[:KEPT_BYTES], len(line))]
    assert KEPT_BYTES == 4096


def test_too_long_line_of_crlf_reports_size_without_cr():
    """The size of a discarded \\r\\n line is its record size (the \\r is not counted)."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=10)
    framer.feed(b"y" * 100 + b"\r")
    framer.feed(b"\nz\n")
    assert framer.take_rejected() == [("too long", b"y" * 100, 100)]
    assert drain(ring) == [b"z"]


def test_ten_megabyte_line_in_64k_pieces_costs_bounded_memory():
    """A 10 MB line fed in 64 KiB pieces holds <= 4 KiB once too long, and is rejected once, size 10,485,760."""
    ring = RingBuffer(100)
    framer = LineFramer(ring, max_line=16 * KiB)
    pieces = [bytes([65 + i]) * (64 * KiB) for i in range(26)]
    total = 0
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(160):  # 160 * 64 KiB = 10 MiB
            framer.feed(pieces[i % 26])
            total += 64 * KiB
            assert framer.buffered <= KEPT_BYTES  # over max_line after the first piece
            assert framer.consumed == 0 and framer.pending == total
            assert framer.lines == 0 and framer.take_rejected() == []
        framer.feed(b"\nafter\n")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert total == 10_485_760
    assert peak < 256 * KiB  # the 64 KiB pieces existed before tracing; the framer kept next to nothing
    assert framer.take_rejected() == [("too long", b"A" * KEPT_BYTES, 10_485_760)]
    assert (framer.lines, framer.invalid, framer.too_long, framer.records) == (2, 1, 1, 1)
    assert drain(ring) == [b"after"]
    check(framer, total + 7)
    assert framer.consumed == total + 7


def test_ten_megabyte_line_in_one_buffer_is_not_copied():
    """A complete 10 MB line inside one fed buffer is rejected in place: nothing is buffered."""
    ring = RingBuffer(100)
    framer = LineFramer(ring, max_line=MiB)
    data = b"a\n" + b"B" * 10_485_760 + b"\nc\n"
    framer.feed(data)
    assert framer.buffered == 0
    assert framer.take_rejected() == [("too long", b"B" * KEPT_BYTES, 10_485_760)]
    assert drain(ring) == [b"a", b"c"]
    check(framer, len(data))


def test_too_long_final_line_is_rejected_by_finish():
    """A too-long line without a final newline is rejected when finish ends the stream."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=100)
    framer.feed(b"q" * 5000)
    framer.feed(b"q" * 5000)
    assert framer.finish() == 0
    assert framer.take_rejected() == [("too long", b"q" * KEPT_BYTES, 10_000)]
    check(framer, 10_000)
    assert framer.pending == 0


def test_partial_line_is_kept_whole_until_it_exceeds_max_line():
    """While a partial line could still fit it is held whole; past max_line + 1 bytes only 4096 stay."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=10_000)
    framer.feed(b"p" * 9000)
    assert framer.buffered == 9000
    framer.feed(b"p" * 1001)  # 10,001 bytes: a final \r could still make it fit
    assert framer.buffered == 10_001
    framer.feed(b"p")
    assert framer.buffered == KEPT_BYTES
    framer.feed(b"\n")
    assert framer.take_rejected() == [("too long", b"p" * KEPT_BYTES, 10_002)]


# --------------------------------------------------------------------------
# JSON in the framer


def test_json_rejections_name_offsets_within_the_line():
    """Reasons from the validator are relative to the line, and valid lines pass."""
    data = b'{"a":1}\n{"a":1,}\n  {"b": tru}\n{"s": "\\ud800"}\n[[]]\n'
    framer, records, rejected = run(data, validate=True)
    assert records == [b'{"a":1}', b"[[]]"]
    assert rejected == [
        ("not JSON: unexpected byte 0x7d at 7", b'{"a":1,}', 8),
        ("not JSON: unexpected byte 0x7d at 11", b'  {"b": tru}', 12),
        ("not JSON: lone surrogate escape at 7", b'{"s": "\\ud800"}', 15),
    ]
    assert framer.invalid == 3 and framer.too_long == 0


def test_invalid_json_line_longer_than_4096_keeps_its_prefix():
    """An invalid JSON line is reported with at most its first 4096 bytes and its full size."""
    line = b'["' + b"x" * 6000
    _, _, rejected = run(line + b"\n", max_line=10_000, validate=True)
    assert rejected == [("not JSON: unexpected end at 6002", line[:KEPT_BYTES], 6002)]


def test_raw_mode_accepts_anything_but_blank_and_too_long():
    """Without validation, invalid JSON and invalid UTF-8 are records."""
    _, records, rejected = run(b"{oops\n\xff\xfe\n")
    assert records == [b"{oops", b"\xff\xfe"]
    assert rejected == []


# --------------------------------------------------------------------------
# rejected lines


def test_take_rejected_empties_and_keeps_at_most_10000():
    """At most 10,000 rejections wait; the rest are counted in rejected_dropped (and in invalid)."""
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=1)
    framer.feed(b"xx\n" * (REJECTED_LIMIT + 50))
    rejected = framer.take_rejected()
    assert len(rejected) == REJECTED_LIMIT == 10_000
    assert rejected[0] == ("too long", b"xx", 2)
    assert framer.rejected_dropped == 50
    assert framer.invalid == REJECTED_LIMIT + 50
    assert framer.take_rejected() == []
    framer.feed(b"yy\n")
    assert framer.take_rejected() == [("too long", b"yy", 2)]


def test_many_rejections_in_one_buffer_keep_their_order():
    """More rejections than the staging area in one feed come out complete and in order."""
    lines = [b"%d" % i if i % 3 else b"[%d" % i for i in range(3000)]
    framer, records, rejected = run(b"\n".join(lines) + b"\n", validate=True)
    assert records == [line for line in lines if not line.startswith(b"[")]
    assert [line for _, line, _ in rejected] == [line for line in lines if line.startswith(b"[")]


# --------------------------------------------------------------------------
# the ring: full, timeouts, resume, closed


def test_full_ring_timeout_holds_lines_then_feed_resumes():
    """On timeout the unpushed lines stay held; the next feed(b"") pushes them, in order, nothing lost."""
    ring = RingBuffer(4)
    framer = LineFramer(ring, max_line=100, validate_json=True)
    lines = [b"%d" % i for i in range(10)]
    data = b"\n".join(lines[:5]) + b"\n[\n" + b"\n".join(lines[5:]) + b"\n"
    t0 = time.monotonic()
    assert framer.feed(data, timeout=0.05) == 4
    assert time.monotonic() - t0 >= 0.05 - TOL
    check(framer, len(data))
    assert framer.pending_lines == 6
    # consumed stops at the first held line; the bad line after it is reported at once
    assert framer.consumed == data.index(b"4\n")
    assert framer.take_rejected() == [("not JSON: unexpected end at 1", b"[", 1)]
    assert framer.invalid == 1 and framer.closed is False

    got = drain(ring)
    assert framer.feed(b"", timeout=0) == 4
    check(framer, len(data))
    assert framer.consumed == data.index(b"8\n")
    got += drain(ring)
    assert framer.feed(b"", timeout=0) == 2
    got += drain(ring)
    assert got == lines
    assert framer.pending_lines == 0 and framer.pending == 0 and framer.consumed == len(data)
    check(framer, len(data))


def test_feeding_while_lines_are_held_keeps_order():
    """New input fed while lines are held goes behind them; finish completes the last line."""
    ring = RingBuffer(2)
    framer = LineFramer(ring, max_line=100)
    assert framer.feed(b"a\nb\nc\nd", timeout=0) == 2
    assert framer.feed(b"\ne\nf", timeout=0) == 0
    assert framer.pending_lines == 3  # c, d, e
    assert framer.pending == len(b"c\nd\ne\nf")
    got = drain(ring)
    while framer.pending_lines or framer.pending:
        framer.finish(timeout=0)
        got += drain(ring)
    assert got == [b"a", b"b", b"c", b"d", b"e", b"f"]
    check(framer, 11)


def test_blocking_feed_waits_for_a_consumer():
    """feed with timeout=None waits (without the GIL) until a consumer makes room."""
    ring = RingBuffer(2)
    framer = LineFramer(ring, max_line=100)
    got: list[bytes] = []
    done = threading.Event()

    def consume():
        time.sleep(0.05)  # the feed must park on the full ring first
        while not done.is_set() or len(ring):
            try:
                got.extend(ring.get_many(10, timeout=0.01))
            except Exception:  # noqa: BLE001 - Empty: look again
                pass

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        lines = [b"line %d" % i for i in range(2000)]
        assert framer.feed(b"\n".join(lines) + b"\n") == 2000
    finally:
        done.set()
        thread.join(JOIN)
    assert not thread.is_alive()
    assert got == lines
    assert ring.put_waits > 0


def test_timeout_validation():
    """A negative or NaN timeout raises ValueError before anything is fed."""
    ring = RingBuffer(2)
    framer = LineFramer(ring, max_line=100)
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="timeout"):
            framer.feed(b"a\n", timeout=bad)
    assert framer.fed == 0


def test_closed_ring_holds_lines_without_raising():
    """On a closed ring feed returns what it pushed, sets closed, and holds the rest."""
    ring = RingBuffer(3)
    framer = LineFramer(ring, max_line=100)
    assert framer.feed(b"a\nb\nc\nd\ne\n", timeout=0) == 3
    assert framer.closed is False
    ring.close()
    assert framer.feed(b"f\n", timeout=None) == 0  # does not wait on a closed ring
    assert framer.closed is True
    assert framer.pending_lines == 3
    assert framer.consumed == 6
    check(framer, 12)
    assert framer.finish(timeout=None) == 0
    assert ring.get_many(10) == [b"a", b"b", b"c"]


@pytest.mark.parametrize("spin", [True, False], ids=["spin", "no-spin"])
@pytest.mark.parametrize("close_when", ["full", "parked"])
def test_ring_closed_while_feed_waits(spin, close_when):
    """A feed blocked on a full ring returns when the ring is closed, with closed set:
    closed as soon as the ring is full (the framer may still be spinning for room,
    docs/ringbuffer.md "A bulk producer's wait for room") or once it has parked."""
    was = ringbuf._set_bulk_spin(spin)
    try:
        ring = RingBuffer(1)
        framer = LineFramer(ring, max_line=100)
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(framer.feed(b"a\nb\nc\n")), daemon=True)
        thread.start()
        waiting = (lambda: len(ring) == 1) if close_when == "full" else (lambda: ring.put_waits > 0)
        deadline = time.monotonic() + 2
        while not waiting() and time.monotonic() < deadline:
            time.sleep(0.0001)
        ring.close()
        thread.join(JOIN)
    finally:
        ringbuf._set_bulk_spin(was)
    assert not thread.is_alive()
    assert result == [1]
    assert framer.closed is True and framer.pending_lines == 2
    check(framer, 6)


def test_concurrent_feed_is_refused():
    """A second thread feeding while a feed is blocked gets RuntimeError; the first is unharmed."""
    ring = RingBuffer(1)
    framer = LineFramer(ring, max_line=100)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(framer.feed(b"a\nb\n")), daemon=True)
    thread.start()
    deadline = time.monotonic() + 2
    while ring.put_waits == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(RuntimeError, match="another thread"):
        framer.feed(b"c\n")
    with pytest.raises(RuntimeError):
        framer.finish()
    assert ring.get() == b"a"
    thread.join(JOIN)
    assert not thread.is_alive()
    assert result == [2] and ring.get() == b"b"
    check(framer, 4)


# --------------------------------------------------------------------------
# construction


def test_constructor_validates_its_arguments():
    """max_line must be in [1, ring.max_record_size]; ring must be a RingBuffer."""
    ring = RingBuffer(10, max_record_size=1000)
    for bad in (0, -1, 1001, 1.5, "10"):
        with pytest.raises(ValueError, match="max_line"):
            LineFramer(ring, max_line=bad)
    with pytest.raises(TypeError):
        LineFramer(None, max_line=10)
    with pytest.raises(TypeError):
        LineFramer(ring, 10)  # max_line is keyword-only
    framer = LineFramer(ring, max_line=1000, validate_json=True)
    assert (framer.max_line, framer.validate_json, framer.ring) == (1000, True, ring)


def test_fresh_framer_counters_are_zero():
    """A new framer reports zero everywhere and is not closed."""
    framer = LineFramer(RingBuffer(1), max_line=1)
    values = [framer.lines, framer.records, framer.invalid, framer.too_long, framer.blank,
              framer.consumed, framer.pending, framer.pending_lines, framer.buffered,
              framer.rejected_dropped, framer.fed]
    assert values == [0] * 11
    assert framer.closed is False


def test_memory_of_a_long_good_line_is_given_back():
    """After a long (valid) partial line completes, the framer frees its big buffer."""
    ring = RingBuffer(10, max_record_size=MiB)
    framer = LineFramer(ring, max_line=MiB)
    piece = b"m" * (64 * KiB)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(12):
            framer.feed(piece)
        held = tracemalloc.get_traced_memory()[0] - base
        framer.feed(b"\nnext")
        after = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held >= 12 * 64 * KiB  # the partial line is held whole while it may still fit
    assert after < 64 * KiB  # the ring holds its own copy out of line; the framer holds "next"
    assert framer.buffered == 4
    assert ring.get() == piece * 12


def test_take_held_gives_back_the_lines_a_full_ring_refused():
    """take_held returns the held good lines in order, empties the backlog and counts them consumed."""
    ring = RingBuffer(2)
    framer = LineFramer(ring, max_line=100)
    data = b"a\nb\nc\nd\npartial"
    assert framer.feed(data, timeout=0.01) == 2
    assert framer.pending_lines == 2
    assert framer.take_held() == [b"c", b"d"]
    assert framer.pending_lines == 0 and framer.records == 2
    assert framer.consumed == len(b"a\nb\nc\nd\n")
    assert framer.take_held() == []
    assert ring.get_many(5, block=False) == [b"a", b"b"]
