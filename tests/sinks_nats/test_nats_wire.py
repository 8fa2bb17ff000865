"""Tests for logpipe.infrastructure.sinks._nats_wire: the record-mode connection's parser, and its limits.

The parser is fed the bytes a nats-server sends, cut at every offset (a
socket may return any slice of them); the rest runs against a real server.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from logpipe import RingBuffer
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks._nats_wire import Wire
from logpipe.infrastructure.sinks.nats import NatsSink

INBOX = "_INBOX.abc"


def server_bytes() -> tuple[bytes, list[tuple[str, str, bytes]]]:
    """What a server sends a publisher: INFO, acks (one with CRLF inside its body), a 503, PING, -ERR; and the acks in it."""
    acks = [
        (f"{INBOX}.1", "", b'{"stream":"LOGS","seq":1}'),
        (f"{INBOX}.1", "", b'{"stream":"LOGS","seq":2,"duplicate":true}'),
        (f"{INBOX}.2", "", b'{"error":{"code":400,"description":"message size exceeds maximum allowed"}}'),
        (f"{INBOX}.3", "", b"body with \r\n inside, framed by its size"),
        (f"{INBOX}.4", "503", b""),
        (f"{INBOX}.5", "", b""),  # an empty MSG body
    ]
    out = b'INFO {"server_id":"X","headers":true,"max_payload":2048}\r\n+OK\r\n'
    for i, (subject, status, body) in enumerate(acks):
        if status:
            header = b"NATS/1.0 %s\r\n\r\n" % status.encode()
            out += b"HMSG %s 1 %d %d\r\n%s%s\r\n" % (subject.encode(), len(header), len(header) + len(body), header, body)
        else:
            out += b"MSG %s 1 %d\r\n%s\r\n" % (subject.encode(), len(body), body)
        if i == 2:
            out += b"PING\r\n"
    out += b"-ERR 'Stale Connection'\r\n"
    return out, acks


class Recorder(asyncio.Transport):
    """Stands in for the socket: keeps what the wire writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closing = False

    def write(self, data) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True


def parse(chunks: list[bytes]) -> tuple[list[tuple[str, str, bytes]], Wire, Recorder]:
    async def run():
        got: list[tuple[str, str, bytes]] = []
        wire = Wire(got.extend, lambda wire, reason: None)
        transport = Recorder()
        wire.connection_made(transport)
        for chunk in chunks:
            wire.data_received(chunk)
        return got, wire, transport

    return asyncio.run(run())


def test_acks_cut_at_any_offset_are_each_parsed_once():
    """Every split of the server's bytes into two chunks yields the same acks, one PONG, the INFO limit and the -ERR."""
    data, acks = server_bytes()
    for cut in range(len(data) + 1):
        got, wire, transport = parse([data[:cut], data[cut:]])
        assert got == acks, cut
        assert transport.written == b"PONG\r\n", cut
        assert wire.max_payload == 2048
        assert wire.last_error == "-ERR 'Stale Connection'"


def test_acks_in_many_small_random_chunks_are_each_parsed_once():
    """Random chunkings (1 to 7 bytes at a time) of 50 copies of the stream give every ack, in order."""
    data, acks = server_bytes()
    data = data * 50
    rng = random.Random(7)
    for _ in range(20):
        chunks, pos = [], 0
        while pos < len(data):
            step = rng.randint(1, 7)
            chunks.append(data[pos : pos + step])
            pos += step
        got, _, transport = parse(chunks)
        assert got == acks * 50
        assert transport.written == b"PONG\r\n" * 50


def test_a_record_over_max_payload_is_refused_before_anything_is_sent(nats_server, make_batch):
    """Record mode: a record the server would drop the connection for fails the batch for good, and nothing is stored."""
    sink = NatsSink("127.0.0.1", nats_server.port, "logs", stream="LOGS")
    ring = RingBuffer(4, max_record_size=2 << 20)
    with pytest.raises(SinkError) as info:
        sink.write_batch(make_batch([b"ok", b"m" * ((1 << 20) + 1), b"ok too"], ring))
    sink.close()
    message = str(info.value)
    assert "\n" not in message
    assert "over the server's max_payload (1048576 bytes with its headers)" in message
    assert info.value.retryable is False
    assert nats_server.stream_info("LOGS")[0] == 0


def test_a_run_id_that_could_break_a_header_is_refused(nats_server):
    """run_id goes into every frame's header: letters, digits, '_' and '-' only."""
    with pytest.raises(ValueError, match="run_id 'a b' may hold only letters, digits"):
        NatsSink("127.0.0.1", nats_server.port, "logs", stream="LOGS", run_id="a b")
