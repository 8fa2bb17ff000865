"""LineFramer.feed_from: the framer reads the file itself, chunk after chunk without the GIL.

Whatever the chunk size, a stream read by feed_from must give exactly what
feeding the same bytes through feed() gives: the same records in the same
order, the same rejections, the same counters (lines == records + invalid +
blank + pending_lines, consumed + pending == fed). The inputs are the
production-like corpus (tests/_corpus.py: heavy-tailed sizes, lines on the
ring's boundaries, CRLF, invalid UTF-8, lines over the limit) and floods of
rejected lines, read through buffers small enough to split lines and stages
across chunks. Timed tests check that a timeout is honoured; none asserts
on speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from _corpus import make_corpus

from logpipe import RingBuffer
from logpipe._framing import LineFramer

JOIN = 10.0  # seconds a helper thread gets to finish once it should


def check(framer: LineFramer, fed: int) -> None:
    assert framer.fed == fed
    assert framer.consumed + framer.pending == fed
    assert framer.lines == framer.records + framer.invalid + framer.blank + framer.pending_lines


def drain(ring: RingBuffer) -> list[bytes]:
    out: list[bytes] = []
    while len(ring):
        out.extend(ring.get_many(1 << 16, block=False))
    return out


def counters(framer: LineFramer) -> tuple[int, ...]:
    return (framer.lines, framer.records, framer.invalid, framer.too_long, framer.blank, framer.fed,
            framer.consumed, framer.pending)  # fmt: skip


def by_feed(data: bytes, max_line: int, validate: bool):
    ring = RingBuffer(1 << 17, slot_size=512)
    framer = LineFramer(ring, max_line=max_line, validate_json=validate)
    framer.feed(data)
    framer.finish()
    return drain(ring), framer.take_rejected(), counters(framer)


def by_feed_from(path, buffer_size: int, max_line: int, validate: bool):
    ring = RingBuffer(1 << 17, slot_size=512)
    framer = LineFramer(ring, max_line=max_line, validate_json=validate)
    buffer = bytearray(buffer_size)
    rejected = []
    fd = os.open(path, os.O_RDONLY)
    try:
        read = 0
        while True:
            n = framer.feed_from(fd, buffer)
            check(framer, read + n)
            rejected += framer.take_rejected()  # a source takes them after every call
            if n == 0:
                break
            read += n
    finally:
        os.close(fd)
    framer.finish()
    rejected += framer.take_rejected()
    return drain(ring), rejected, counters(framer)


@pytest.mark.parametrize("buffer_size", [1, 7, 113, 4096, 65536, 1 << 20])
def test_a_production_corpus_read_in_any_chunk_size_frames_as_one_feed(tmp_path, buffer_size):
    corpus = make_corpus(seed=buffer_size, lines=4000, max_record_size=65536)
    path = tmp_path / "in.log"
    path.write_bytes(corpus.data)
    expected = by_feed(corpus.data, 65536, False)
    assert expected[0] == corpus.records
    assert by_feed_from(path, buffer_size, 65536, False) == expected


@pytest.mark.parametrize("buffer_size", [64, 4096, 1 << 20])
def test_floods_of_rejected_lines_between_good_ones_keep_their_order(tmp_path, buffer_size):
    """More rejections per chunk than the framer stages at once (256), some split across chunks."""
    lines = []
    for i in range(3000):
        if i % 7 == 0:
            lines.append(b'{"n": %d, "ok": true}' % i)
        elif i % 7 == 1:
            lines.append(b"x" * (300 + i % 50))  # too long for max_line 256
        elif i % 7 == 2:
            lines.append(b"\r")
        else:
            lines.append(b'{"n": %d, broken' % i + bytes([0x80 + i % 64]))
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "in.log"
    path.write_bytes(data)
    expected = by_feed(data, 256, True)
    assert len(expected[1]) == 3000 - 3000 // 7 * 2 - 2  # every too-long and broken line
    assert by_feed_from(path, buffer_size, 256, True) == expected


def test_a_huge_line_read_in_chunks_is_rejected_and_costs_little_memory(tmp_path):
    path = tmp_path / "in.log"
    path.write_bytes(b"before\n" + b"y" * (8 << 20) + b"\nafter\n")
    ring = RingBuffer(64)
    framer = LineFramer(ring, max_line=1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert framer.feed_from(fd, bytearray(1 << 16)) == path.stat().st_size
        assert framer.buffered <= 4096 + 1000
        assert framer.feed_from(fd, bytearray(1 << 16)) == 0
    finally:
        os.close(fd)
    assert drain(ring) == [b"before", b"after"]
    [(reason, head, size)] = framer.take_rejected()
    assert "too long" in reason and size == 8 << 20 and len(head) == 4096


def test_a_full_ring_makes_it_return_in_time_holding_the_rest_then_nothing_is_lost(tmp_path):
    path = tmp_path / "in.log"
    records = [b"line %06d" % i for i in range(5000)]
    path.write_bytes(b"\n".join(records) + b"\n")
    ring = RingBuffer(100)
    framer = LineFramer(ring, max_line=100)
    fd = os.open(path, os.O_RDONLY)
    got: list[bytes] = []
    try:
        n = framer.feed_from(fd, bytearray(1 << 20), timeout=0.02)
        assert n == path.stat().st_size  # one full read, then the wait for room gave up
        assert framer.pending_lines == 5000 - 100
        check(framer, n)
        while framer.pending_lines:
            got += drain(ring)
            framer.feed(b"", timeout=0.02)
        got += drain(ring)
        assert framer.feed_from(fd, bytearray(1 << 20), timeout=0.02) == 0
    finally:
        os.close(fd)
    assert got == records


def test_a_closed_ring_stops_the_reading(tmp_path):
    path = tmp_path / "in.log"
    path.write_bytes(b"a\n" * 1000)
    ring = RingBuffer(10)
    framer = LineFramer(ring, max_line=10)
    ring.close()
    fd = os.open(path, os.O_RDONLY)
    try:
        assert framer.feed_from(fd, bytearray(100), timeout=1.0) == 100  # no second read
    finally:
        os.close(fd)
    assert framer.closed and framer.records == 0 and framer.pending_lines == 50


def test_a_pipe_returns_after_each_short_read_and_a_consumer_thread_sees_every_line():
    read_end, write_end = os.pipe()
    ring = RingBuffer(64)
    framer = LineFramer(ring, max_line=100)
    sent = [b"msg %d" % i for i in range(20000)]
    got: list[bytes] = []

    def consume() -> None:
        while len(got) < len(sent):
            got.extend(ring.get_many(64, timeout=JOIN))

    def produce() -> None:
        with open(write_end, "wb", buffering=0) as pipe:
            for i in range(0, len(sent), 100):
                pipe.write(b"".join(line + b"\n" for line in sent[i : i + 100]))

    threads = [threading.Thread(target=consume), threading.Thread(target=produce)]
    for thread in threads:
        thread.start()
    try:
        while framer.feed_from(read_end, bytearray(1 << 20), timeout=JOIN):
            assert framer.pending_lines == 0
    finally:
        os.close(read_end)
    for thread in threads:
        thread.join(JOIN)
        assert not thread.is_alive()
    assert got == sent


def test_errors_are_oserrors_and_the_buffer_must_be_writable(tmp_path):
    framer = LineFramer(RingBuffer(8), max_line=10)
    with pytest.raises(OSError) as info:
        framer.feed_from(2**30, bytearray(10))
    assert info.value.errno == 9  # EBADF
    fd = os.open(tmp_path, os.O_RDONLY)  # a directory
    try:
        with pytest.raises(IsADirectoryError):
            framer.feed_from(fd, bytearray(10))
    finally:
        os.close(fd)
    with pytest.raises(BufferError):
        framer.feed_from(0, b"read-only")
    with pytest.raises(ValueError):
        framer.feed_from(0, bytearray(0))
    check(framer, 0)


SIGNAL_CHILD = r"""
import os, signal, sys, threading, time
from logpipe import RingBuffer
from logpipe._framing import LineFramer

mode = sys.argv[1]
read_end, write_end = os.pipe()
def handler(signum, frame):
    print("handler ran", flush=True)
    if mode == "raise":
        raise KeyboardInterrupt
signal.signal(signal.SIGALRM, handler)
signal.setitimer(signal.ITIMER_REAL, 0.2)
threading.Timer(0.6, lambda: os.write(write_end, b"after the signal\n")).start()
ring = RingBuffer(8)
framer = LineFramer(ring, max_line=100)
try:
    print("read", framer.feed_from(read_end, bytearray(100)), ring.get(timeout=1))
except KeyboardInterrupt:
    print("interrupted", framer.fed)
"""


@pytest.mark.parametrize(("mode", "expected"), [("retry", "read 17 b'after the signal'"), ("raise", "interrupted 0")])
def test_a_signal_runs_its_handler_and_the_read_is_retried_unless_it_raised(mode, expected):
    done = subprocess.run([sys.executable, "-c", SIGNAL_CHILD, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["handler ran", expected]


def test_once_reads_one_chunk_and_its_lines_still_wait_for_room(tmp_path):
    path = tmp_path / "in.log"
    path.write_bytes(b"".join(b"line %04d\n" % i for i in range(1000)))  # 10,000 bytes
    ring = RingBuffer(1 << 12)
    framer = LineFramer(ring, max_line=100)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert framer.feed_from(fd, bytearray(4000), timeout=1.0, once=True) == 4000
        assert framer.records == 400 and framer.pending_lines == 0
        assert framer.feed_from(fd, bytearray(4000), timeout=1.0) == 6000  # on to the end
    finally:
        os.close(fd)
    assert drain(ring) == [b"line %04d" % i for i in range(1000)]


def test_the_partial_line_is_its_first_4_kib_and_its_size():
    framer = LineFramer(RingBuffer(8), max_line=1 << 20)
    assert framer.partial is None
    framer.feed(b"done\nab")
    assert framer.partial == (b"ab", 2)
    body = (bytes(range(256)) * 40).replace(b"\n", b".")  # 10,240 bytes, no newline
    framer.feed(body[:5000])
    framer.feed(body[5000:])
    assert framer.partial == ((b"ab" + body)[:4096], 2 + len(body))
    framer.feed(b"\n")
    assert framer.partial is None
    long_framer = LineFramer(RingBuffer(8), max_line=100)  # past max_line: only 4 KiB are kept
    long_framer.feed(body)
    assert long_framer.partial == (body[:4096], len(body))
