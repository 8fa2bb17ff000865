"""A bare NATS connection that publishes in bulk: the NATS sink's record mode.

nats-py spends some 9 µs of Python per message to publish it and another 5
or more to parse and dispatch its ack; at one message per record that, not
the server, is the limit (bench/bench_nats.py measures both). This
connection does the two in bulk: the sink hands it the frames of many
messages as one buffer (one ``write``), and :meth:`Wire.data_received`
splits every ack out of what the socket returned and hands them over in one
call per chunk.

It speaks only what publishing needs: it reads INFO, sends CONNECT (headers
on, no_responders on) and one SUB for the ack inbox, answers PING, and
parses MSG, HMSG (statuses such as 503 no responders), PONG and -ERR. No
TLS and no credentials (the sink supports neither). It never reconnects:
when the connection is lost it says so once (``on_lost``) and the sink
opens a new one on its next write, once nats-py (which keeps the sink's
main connection) is connected again.

Runs on the sink's event loop thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson

__all__ = ["Ack", "Wire", "WireError", "open_wire"]

# (reply subject, status code or "" , ack body)
Ack = tuple[str, str, bytes]

_CONNECT = {
    "verbose": False,
    "pedantic": False,
    "headers": True,
    "no_responders": True,
    "protocol": 1,
    "name": "logpipe-publisher",
    "lang": "python",
    "version": "logpipe",
}


class WireError(Exception):
    """The connection could not be opened or refused the handshake (one line)."""


class Wire(asyncio.Protocol):
    """One publishing connection: write frames, get acks in batches.

    Args:
        on_acks: called with every ack parsed from one chunk of input.
        on_lost: called once when the connection is lost, with this wire and the reason.
    """

    def __init__(self, on_acks: Callable[[list[Ack]], None], on_lost: Callable[[Wire, str], None]) -> None:
        self._on_acks = on_acks
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._rest = b""  # an incomplete frame at the end of the last chunk
        loop = asyncio.get_running_loop()
        self._info: asyncio.Future[dict] = loop.create_future()
        self._pongs: list[asyncio.Future[None]] = []
        self.writable = asyncio.Event()  # cleared while the transport's buffer is above its high mark
        self.writable.set()
        self.max_payload = 1 << 20
        self.last_error: str | None = None
        self.closed = False

    # -- asyncio.Protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._rest + data if self._rest else data
        end = len(buf)
        pos = 0
        acks: list[Ack] = []
        while pos < end:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            op = buf[pos : pos + 4]
            if op == b"MSG ":  # MSG <subject> <sid> [reply] <size>
                fields = buf[pos + 4 : eol].split(b" ")
                stop = eol + 2 + int(fields[-1])
                if stop + 2 > end:
                    break  # the body is not all here yet
                acks.append((fields[0].decode(), "", buf[eol + 2 : stop]))
                pos = stop + 2
            elif op == b"HMSG":  # HMSG <subject> <sid> [reply] <header size> <total size>
                fields = buf[pos + 5 : eol].split(b" ")
                start = eol + 2
                body = start + int(fields[-2])
                stop = start + int(fields[-1])
                if stop + 2 > end:
                    break
                status = b""
                if buf.startswith(b"NATS/1.0 ", start):  # a status line: "NATS/1.0 503"
                    status = buf[start + 9 : start + 12]
                acks.append((fields[0].decode(), status.decode(), buf[body:stop]))
                pos = stop + 2
            else:
                self._control(buf[pos:eol])
                pos = eol + 2
        self._rest = buf[pos:]
        if acks:
            self._on_acks(acks)

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.write(b"PONG\r\n")
        elif line == b"PONG":
            if self._pongs:
                waiter = self._pongs.pop(0)
                if not waiter.done():
                    waiter.set_result(None)
        elif line.startswith(b"INFO "):
            try:
                info = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                info = {}
            self.max_payload = int(info.get("max_payload") or self.max_payload)
            if not self._info.done():
                self._info.set_result(info)
        elif line.startswith(b"-ERR"):
            self.last_error = line.decode(errors="replace")
            for waiter in self._pongs:
                if not waiter.done():
                    waiter.set_exception(WireError(f"nats-server said {self.last_error}"))
            self._pongs.clear()
        # +OK and anything else: nothing to do

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # a writer waiting for room must see the loss
        reason = self.last_error or (f"{type(exc).__name__}: {exc}" if exc else "closed by the server")
        for waiter in self._pongs:
            if not waiter.done():
                waiter.set_exception(WireError(f"connection lost ({reason})"))
        self._pongs.clear()
        if not self._info.done():
            self._info.set_exception(WireError(f"connection lost ({reason})"))
        self._on_lost(self, reason)

    # -- use ------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(data)

    def close(self) -> None:
        """Close the socket (on_lost follows, as for any loss); nothing is written after this."""
        self.closed = True
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    async def handshake(self, inbox: str, timeout: float) -> None:
        """INFO in, CONNECT and SUB out, then a PING answered: ready to publish."""
        async with asyncio.timeout(timeout):
            info = await self._info
            if not info.get("headers", False):
                raise WireError("the server does not support headers (nats-server 2.2 or later is needed)")
            if info.get("auth_required"):
                raise WireError("the server requires credentials, which the nats sink does not support")
            pong = asyncio.get_running_loop().create_future()
            self._pongs.append(pong)
            self.write(
                b"CONNECT " + orjson.dumps(_CONNECT) + b"\r\n"
                + b"SUB " + inbox.encode() + b".* 1\r\n"
                + b"PING\r\n"
            )
            await pong


async def open_wire(
    host: str,
    port: int,
    inbox: str,
    *,
    timeout: float,
    on_acks: Callable[[list[Ack]], None],
    on_lost: Callable[[Wire, str], None],
) -> Wire:
    """Connect, handshake, subscribe to ``inbox.*``; WireError (one line) if any of it fails.

    Args:
        host, port: the nats-server.
        inbox: the prefix of the reply subjects whose acks come back here.
        timeout: for the whole of it.
        on_acks, on_lost: see :class:`Wire`.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            _, wire = await loop.create_connection(lambda: Wire(on_acks, on_lost), host, port)
    except TimeoutError:
        raise WireError(f"no connection within {timeout:g}s") from None
    except OSError as exc:
        raise WireError(f"{type(exc).__name__}: {exc}") from None
    try:
        await wire.handshake(inbox, timeout)
    except TimeoutError:
        wire.close()
        raise WireError(f"no answer to the handshake within {timeout:g}s") from None
    except BaseException:
        with contextlib.suppress(Exception):
            wire.close()
        raise
    return wire
