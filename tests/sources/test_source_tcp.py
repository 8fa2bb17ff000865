"""Tests for logpipe.infrastructure.sources.tcp: TcpSource and TcpSourceConfig.

Every test uses real sockets on 127.0.0.1 with port 0 and a real RingBuffer
drained by a consumer thread, like the pipeline's workers.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from logpipe import Closed, RingBuffer
from logpipe.application.metrics import Metrics
from logpipe.infrastructure.deadletter import DeadLetter
from logpipe.infrastructure.sources.context import SourceContext
from logpipe.infrastructure.sources.tcp import (
    PARTIAL_AT_STOP,
    UNPUSHED_AT_STOP,
    TcpSource,
    TcpSourceConfig,
    parse_address,
)

JOIN_TIMEOUT = 10.0


def make_context(tmp_path: Path, **options: object) -> SourceContext:
    settings: dict[str, object] = {"format": "raw", "max_line": 1 << 20, "max_connections": 64}
    settings.update(options)
    return SourceContext(
        metrics=Metrics(),
        dead_letter=DeadLetter(str(tmp_path / "dead-letter.ndjson")),
        **settings,  # type: ignore[arg-type]
    )


def dead_letters(context: SourceContext) -> list[dict]:
    context.dead_letter.close()
    path = Path(context.dead_letter.path)
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def wait_until(predicate: Callable[[], bool], timeout: float = JOIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.002)


class Running:
    """A TcpSource serving a ring in its own thread, and a consumer draining it.

    The consumer keeps the framed batches (``bytes(batch)``); :meth:`records`
    splits them once everything is joined.
    """

    def __init__(self, source: TcpSource, ring: RingBuffer, *, consumer_delay: float = 0.0) -> None:
        self.source = source
        self.ring = ring
        self.stop_event = threading.Event()
        self.chunks: list[bytes] = []
        self.errors: list[BaseException] = []
        self._consumer_delay = consumer_delay
        # Daemons: a test that fails before stop() must not keep pytest from exiting.
        self.source_thread = threading.Thread(target=self._run_source, name="tcp-source", daemon=True)
        self.consumer = threading.Thread(target=self._consume, name="tcp-consumer", daemon=True)
        self.source_thread.start()
        self.consumer.start()

    def _run_source(self) -> None:
        try:
            self.source.run(self.ring, self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.errors.append(exc)

    def _consume(self) -> None:
        time.sleep(self._consumer_delay)
        while True:
            try:
                batch = self.ring.get_batch(1024, timeout=0.05)
            except Closed:
                return
            if len(batch):
                self.chunks.append(bytes(batch))

    @property
    def received(self) -> int:
        return self.ring.popped

    def stop(self) -> float:
        """Stop the source, close the ring, join both; returns the source's join time."""
        started = time.monotonic()
        self.stop_event.set()
        self.source_thread.join(JOIN_TIMEOUT)
        joined = time.monotonic() - started
        self.ring.close()
        self.consumer.join(JOIN_TIMEOUT)
        assert not self.source_thread.is_alive(), "the source did not return after stop"
        assert not self.consumer.is_alive(), "the consumer did not finish"
        assert self.errors == []
        return joined

    def records(self) -> list[bytes]:
        lines = b"".join(self.chunks).split(b"\n")
        assert lines.pop() == b""
        return lines


def start(tmp_path: Path, *, capacity: int = 4096, consumer_delay: float = 0.0, **options: object) -> Running:
    context = make_context(tmp_path, **options)
    source = TcpSourceConfig(port=0).build(context)
    ring = RingBuffer(capacity, max_record_size=max(context.max_line, 1024))
    return Running(source, ring, consumer_delay=consumer_delay)


def connect(source: TcpSource) -> socket.socket:
    return socket.create_connection(source.address, timeout=JOIN_TIMEOUT)


# --- the spec ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:5170", ("127.0.0.1", 5170)),
        (":5170", ("127.0.0.1", 5170)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:65535", ("::1", 65535)),
        ("localhost:80", ("localhost", 80)),
        ("127.0.0.1:5170/", ("127.0.0.1", 5170)),
    ],
)
def test_from_target_parses_host_and_port(target, expected):
    """HOST:PORT, :PORT (loopback), [IPv6]:PORT and host names are accepted."""
    config = TcpSourceConfig.from_target(target)
    assert (config.host, config.port) == expected


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("127.0.0.1", "has no port"),
        ("127.0.0.1:", "has no port"),
        ("[::1]", "has no port"),
        ("127.0.0.1:65536", "port must be 0-65535"),
        ("127.0.0.1:http", "port must be 0-65535"),
        ("127.0.0.1:-1", "port must be 0-65535"),
        ("::1:5170", "without brackets"),
        ("[::zz]:5170", "bad IPv6 address"),
        ("[::1:5170", "unclosed"),
        ("300.1.1.1:5170", "bad IPv4 address"),
        ("bad host:5170", "bad host"),
        ("", "has no HOST:PORT"),
    ],
)
def test_from_target_rejects_a_bad_target_with_a_short_reason(target, reason):
    """A malformed target raises ValueError whose message says what is wrong."""
    with pytest.raises(ValueError, match=reason):
        TcpSourceConfig.from_target(target)


def test_parse_address_defaults_to_loopback():
    """A target with no host binds 127.0.0.1, not every interface."""
    assert parse_address(":0") == ("127.0.0.1", 0)


def test_config_names_its_scheme_and_usage():
    """The registry sees scheme tcp, usage tcp://HOST:PORT, and a required target."""
    assert TcpSourceConfig.scheme == "tcp"
    assert TcpSourceConfig.usage == "tcp://HOST:PORT"
    assert TcpSourceConfig.takes_target is True


def test_build_listens_at_once_on_the_port_it_reports(tmp_path):
    """build() binds and listens: a client connects before run() starts, to source.address."""
    source = TcpSourceConfig.from_target("127.0.0.1:0").build(make_context(tmp_path))
    try:
        host, port = source.address
        assert host == "127.0.0.1" and port > 0
        assert source.name == f"tcp://127.0.0.1:{port}"
        socket.create_connection(source.address, timeout=5).close()
    finally:
        source.close()


def test_a_busy_port_is_a_clear_error_at_build(tmp_path):
    """Building on a port another socket listens on raises OSError(EADDRINUSE) naming the address."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = TcpSourceConfig.from_target(f"127.0.0.1:{port}")
        with pytest.raises(OSError) as caught:
            config.build(make_context(tmp_path))
    assert caught.value.errno == errno.EADDRINUSE
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "in use" in message and "\n" not in message


# --- delivery -------------------------------------------------------------------------


def test_lines_arrive_as_records_and_the_last_line_counts_at_close(tmp_path):
    """Each line is a record (\\r\\n and \\n; blank lines skipped); an unterminated last line counts at EOF."""
    running = start(tmp_path)
    with connect(running.source) as client:
        client.sendall(b"one\r\ntwo\n\nthree")
    wait_until(lambda: running.received == 3)
    running.stop()
    assert running.records() == [b"one", b"two", b"three"]
    assert running.source.records == 3
    assert running.source.active == 0


def test_lines_of_two_connections_never_mix(tmp_path):
    """Partial lines from two clients interleaved on the wire come out whole, each from its own client."""
    running = start(tmp_path)
    with connect(running.source) as a, connect(running.source) as b:
        wait_until(lambda: running.source.active == 2)
        a.sendall(b"aaa")
        wait_until(lambda: running.source.bytes_received == 3)
        b.sendall(b"bbb")
        wait_until(lambda: running.source.bytes_received == 6)
        a.sendall(b"AAA\n")
        b.sendall(b"BBB\n")
        wait_until(lambda: running.received == 2)
    running.stop()
    assert sorted(running.records()) == [b"aaaAAA", b"bbbBBB"]


def test_raw_mode_delivers_random_bytes_unchanged(tmp_path):
    """In raw mode any bytes but newline are a record: a line of random bytes arrives intact."""
    noise = random.Random(7).randbytes(50_000).replace(b"\n", b"!").replace(b"\r", b"?")
    running = start(tmp_path, format="raw")
    with connect(running.source) as client:
        client.sendall(noise + b"\n" + b"after\n")
        wait_until(lambda: running.received == 2)
    running.stop()
    assert running.records() == [noise, b"after"]
    assert running.source.invalid == 0


SENDERS = 8
LINES_PER_SENDER = 200_000


def sender_payload(sender: int) -> bytes:
    # ~40-byte lines tagged (sender, seq): enough to see loss, duplicates,
    # reordering and bytes mixed between connections.
    return b"".join(b"%d %07d ......................\n" % (sender, seq) for seq in range(LINES_PER_SENDER))


@pytest.mark.slow
def test_eight_concurrent_senders_every_line_exactly_once_in_order(tmp_path):
    """8 clients x 200k lines through a 4096-record ring: every line once, in per-client order, under backpressure."""
    payloads = [sender_payload(s) for s in range(SENDERS)]
    # The consumer starts late so the ring fills and the source must stop reading.
    running = start(tmp_path, capacity=4096, consumer_delay=0.3)
    barrier = threading.Barrier(SENDERS)
    errors: list[BaseException] = []

    def send(sender: int) -> None:
        try:
            with connect(running.source) as client:
                barrier.wait()
                client.sendall(payloads[sender])
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    senders = [threading.Thread(target=send, args=(s,)) for s in range(SENDERS)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(60)
    assert not any(thread.is_alive() for thread in senders)
    assert errors == []
    total = SENDERS * LINES_PER_SENDER
    wait_until(lambda: running.received >= total and running.source.active == 0, timeout=60)
    running.stop()

    by_sender: list[list[bytes]] = [[] for _ in range(SENDERS)]
    for line in running.records():
        by_sender[line[0] - 48].append(line)
    for sender in range(SENDERS):
        got = b"\n".join(by_sender[sender]) + b"\n"
        assert len(by_sender[sender]) == LINES_PER_SENDER, f"sender {sender}"
        assert got == payloads[sender], f"sender {sender}: lines differ from what was sent"
    source = running.source
    assert source.records == total and running.ring.pushed == total
    assert source.accepted == SENDERS and source.refused == 0
    assert source.pauses > 0  # backpressure happened: reading stopped
    assert source.context.metrics.backpressure_sleeps.value == source.pauses


# --- bad input ------------------------------------------------------------------------


def json_line(tag: str, seq: int) -> bytes:
    return orjson.dumps({"tag": tag, "seq": seq}) + b"\n"


def test_json_mode_rejects_a_huge_line_and_random_bytes_and_keeps_the_good_lines(tmp_path):
    """--format json: a 10 MB line and random bytes are counted and dead-lettered; the connection
    stays open and good lines on it and on another connection all arrive."""
    max_line = 64 * 1024
    running = start(tmp_path, format="json", max_line=max_line, capacity=1024)
    source = running.source
    huge = b'{"x": "' + b"y" * 10_000_000 + b'"}\n'
    noise = b"\xff" + random.Random(3).randbytes(30_000).replace(b"\n", b"\x00").replace(b"\r", b"\x00") + b"\n"
    stop_other = threading.Event()
    other_sent: list[bytes] = []

    def other_client() -> None:
        with connect(source) as other:
            seq = 0
            while not stop_other.is_set() or seq < 1000:
                line = json_line("b", seq)
                other.sendall(line)
                other_sent.append(line)
                seq += 1
                if seq % 50 == 0:
                    time.sleep(0.001)

    other = threading.Thread(target=other_client)
    with connect(source) as client:
        other.start()
        client.sendall(b"".join(json_line("a", i) for i in range(1000)))
        client.sendall(huge)
        client.sendall(b"".join(json_line("a", i) for i in range(1000, 2000)))
        client.sendall(noise)
        client.sendall(b"".join(json_line("a", i) for i in range(2000, 3000)))
        wait_until(lambda: source.invalid == 2 and source.records >= 3000)
        assert source.active == 2  # the bad lines did not cost the connection
        client.sendall(json_line("a", 3000))  # and it still delivers
        stop_other.set()
        other.join(JOIN_TIMEOUT)
        assert not other.is_alive()
        wait_until(lambda: source.records == 3001 + len(other_sent))
    running.stop()

    records = running.records()
    assert [r for r in records if b'"a"' in r] == [json_line("a", i)[:-1] for i in range(3001)]
    assert [r for r in records if b'"b"' in r] == [line[:-1] for line in other_sent]
    assert source.invalid == 2
    assert source.context.metrics.invalid.value == 2
    letters = dead_letters(source.context)
    assert sorted(entry["size"] for entry in letters) == sorted([len(noise) - 1, len(huge) - 1])
    assert all(entry["source"] == source.name for entry in letters)
    assert all(len(entry["line"]) <= 4096 for entry in letters)
    assert {entry["line"][:7] for entry in letters if entry["size"] > max_line * 100} == {'{"x": "'}


def test_raw_mode_rejects_only_the_too_long_line(tmp_path):
    """In raw mode a line over max_line is rejected (size and first 4 KiB kept) and the next line arrives."""
    running = start(tmp_path, format="raw", max_line=1000)
    with connect(running.source) as client:
        client.sendall(b"short\n" + b"z" * 5000 + b"\nnext\n")
        wait_until(lambda: running.received == 2 and running.source.invalid == 1)
    running.stop()
    assert running.records() == [b"short", b"next"]
    [letter] = dead_letters(running.source.context)
    assert letter["size"] == 5000
    assert letter["line"] == "z" * len(letter["line"]) and 0 < len(letter["line"]) <= 4096


def test_a_flood_of_bad_lines_is_counted_in_full(tmp_path):
    """20,000 malformed lines in one burst are all counted invalid, even past the framer's kept-rejection limit."""
    running = start(tmp_path, format="json")
    bad = 20_000
    with connect(running.source) as client:
        client.sendall(b"x\n" * bad + b'{"ok": true}\n')
        wait_until(lambda: running.received == 1 and running.source.invalid == bad)
    running.stop()
    assert running.records() == [b'{"ok": true}']
    assert running.source.context.metrics.invalid.value == bad
    assert 0 < len(dead_letters(running.source.context)) <= bad


def test_ipv6_loopback_is_served_and_named_with_brackets(tmp_path):
    """tcp://[::1]:0 listens on IPv6 loopback; the source's name puts the address in brackets."""
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    context = make_context(tmp_path)
    source = TcpSourceConfig.from_target("[::1]:0").build(context)
    ring = RingBuffer(64)
    running = Running(source, ring)
    assert source.name == f"tcp://[::1]:{source.address[1]}"
    with connect(source) as client:
        client.sendall(b"six\n")
        wait_until(lambda: running.received == 1)
    running.stop()
    assert running.records() == [b"six"]


# --- limits and lifecycle -----------------------------------------------------------


def test_connections_beyond_the_limit_are_reset_and_counted(tmp_path):
    """With max_connections=2 a third client is closed at once, unread; a freed slot serves a new client."""
    running = start(tmp_path, max_connections=2)
    source = running.source
    first, second = connect(source), connect(source)
    try:
        first.sendall(b"first\n")
        second.sendall(b"second\n")
        wait_until(lambda: running.received == 2)
        try:
            third = connect(source)
        except ConnectionResetError:
            third = None  # reset before connect() even returned (a busy machine): that is the refusal
        if third is not None:
            with third:
                try:
                    third.sendall(b"third\n")
                except (ConnectionResetError, BrokenPipeError):
                    pass  # the reset may already have arrived: that is the refusal
                wait_until(lambda: source.refused == 1)
                try:
                    assert third.recv(1) == b""
                except ConnectionResetError:
                    pass  # the reset: what a refused client normally sees
        wait_until(lambda: source.refused == 1)
        first.close()
        wait_until(lambda: source.active == 1)
        with connect(source) as fourth:
            fourth.sendall(b"fourth\n")
            wait_until(lambda: running.received == 3)
    finally:
        first.close()
        second.close()
        running.stop()  # also when an assertion failed: a running source would keep pytest from exiting
    assert sorted(running.records()) == [b"first", b"fourth", b"second"]
    assert source.accepted == 3 and source.refused == 1


def test_stop_returns_promptly_with_idle_connections_open(tmp_path):
    """With idle clients connected, run() returns soon after stop, closes every socket and the listener,
    and dead-letters a client's partial line."""
    running = start(tmp_path)
    source = running.source
    clients = [connect(source) for _ in range(5)]
    try:
        clients[0].sendall(b"complete\npart")
        wait_until(lambda: source.active == 5 and running.received == 1 and source.bytes_received == 13)
        joined = running.stop()
        assert joined < 1.0
        for client in clients:
            assert client.recv(1) == b""  # closed by the source
    finally:
        for client in clients:
            client.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(source.address, timeout=2).close()
    assert running.records() == [b"complete"]
    assert source.partial_at_stop == 1 and source.unpushed_at_stop == 0
    [letter] = dead_letters(source.context)
    assert (letter["reason"], letter["line"], letter["size"]) == (PARTIAL_AT_STOP, "part", 4)
    assert source.context.metrics.invalid.value == 1


def test_a_long_partial_line_sent_in_pieces_is_dead_lettered_by_its_head_and_size(tmp_path):
    """The partial line at a stop is the framer's own: its first 4 KiB and its full size, across
    receives; a lone CR after a complete line is no partial line (the start of a CRLF)."""
    running = start(tmp_path)
    source = running.source
    long_client, cr_client = connect(source), connect(source)
    head = bytes(range(32, 127)) * 100  # 9,500 bytes, no newline
    try:
        long_client.sendall(b"first\n" + head[:3000])
        wait_until(lambda: source.bytes_received == 3006)
        long_client.sendall(head[3000:7000])
        wait_until(lambda: source.bytes_received == 7006)
        long_client.sendall(head[7000:])
        cr_client.sendall(b"second\r\n\r")
        wait_until(lambda: running.received == 2 and source.bytes_received == 9506 + 9)
        running.stop()
    finally:
        long_client.close()
        cr_client.close()
    assert sorted(running.records()) == [b"first", b"second"]
    assert source.partial_at_stop == 1
    [letter] = dead_letters(source.context)
    assert (letter["reason"], letter["size"]) == (PARTIAL_AT_STOP, 9500)
    assert letter["line"] == head[:4096].decode()


def test_stop_returns_while_the_ring_is_full(tmp_path):
    """A source blocked on a full ring (nobody consuming) still returns soon after stop."""
    context = make_context(tmp_path)
    source = TcpSourceConfig().build(context)
    ring = RingBuffer(16)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(ring, stop))
    thread.start()
    with connect(source) as client:
        client.sendall(b"".join(b"line %d\n" % i for i in range(10_000)))
        wait_until(lambda: len(ring) == 16)
        time.sleep(0.05)
        started = time.monotonic()
        stop.set()
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive()
        assert time.monotonic() - started < 1.0
    assert source.records == 16 == ring.pushed
    assert source.unpushed_at_stop > 0  # split off, but the ring never had room
    assert source.pauses > 0
    # The unpushed lines are in the dead letter, in order, right after the 16 delivered.
    letters = [orjson.loads(x) for x in Path(context.dead_letter.path).read_bytes().splitlines()]
    unpushed = [x["line"] for x in letters if x["reason"] == UNPUSHED_AT_STOP]
    assert unpushed == ["line %d" % i for i in range(16, 16 + source.unpushed_at_stop)]
    assert context.metrics.invalid.value >= source.unpushed_at_stop


def test_a_closed_ring_ends_the_run(tmp_path):
    """If the ring is closed under it, the source returns instead of spinning."""
    context = make_context(tmp_path)
    source = TcpSourceConfig().build(context)
    ring = RingBuffer(4)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(ring, stop))
    thread.start()
    with connect(source) as client:
        client.sendall(b"a\nb\n")
        wait_until(lambda: ring.pushed == 2)
        ring.close()
        client.sendall(b"c\n")
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive()
    stop.set()


def test_reset_connection_delivers_what_it_sent(tmp_path):
    """A client that resets its connection after sending still has its complete lines delivered."""
    running = start(tmp_path)
    client = connect(running.source)
    client.sendall(b"x\ny\n")
    wait_until(lambda: running.received == 2)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    wait_until(lambda: running.source.active == 0)
    running.stop()
    assert running.records() == [b"x", b"y"]


def test_many_short_lived_connections_are_all_served(tmp_path):
    """200 clients connecting, sending a line and closing, one after another, all arrive; no socket leaks."""
    running = start(tmp_path, max_connections=4)
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(200):
        with connect(running.source) as client:
            client.sendall(b"client %d" % i)  # no newline: EOF ends the line
        wait_until(lambda: running.received == i + 1 and running.source.active == 0)
    running.stop()
    assert sorted(running.records()) == sorted(b"client %d" % i for i in range(200))
    assert running.source.refused == 0
    assert len(os.listdir("/proc/self/fd")) <= fds_before
