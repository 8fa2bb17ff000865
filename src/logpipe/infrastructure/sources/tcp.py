"""The ``tcp://HOST:PORT`` source: newline-delimited records from many TCP clients.

Each client sends lines (``\\n``-terminated, a trailing ``\\r`` is stripped,
blank lines are skipped); each line becomes one record. One thread serves
every connection with :mod:`selectors`; the line splitting, the JSON check
and the pushes into the ring happen in the Cython framer
(:class:`logpipe._framing.LineFramer`) without the GIL.

Behaviour, as an operator sees it:

* **Binding.** ``tcp://:5170`` binds 127.0.0.1 (loopback) unless a host is
  named: ``tcp://0.0.0.0:5170`` or ``tcp://[::]:5170`` listen on every
  interface. The socket is bound and listening when the source is built, so
  a busy port is an error at startup (``OSError`` naming the address), not a
  thread dying later. Port 0 picks a free port; :attr:`TcpSource.address`
  tells which.
* **One framer per connection.** A line never mixes the bytes of two
  clients, and a slow client never holds up the lines of the others.
* **Connection limit.** At most ``max_connections`` clients at once. A
  client beyond the limit is accepted and at once reset (closed with
  ``SO_LINGER`` 0, so its next send or receive fails with ``ECONNRESET``)
  with nothing read, and counted in :attr:`TcpSource.refused`. Accepting
  and resetting, rather than leaving it in the listen backlog, tells the
  client at once instead of letting it hang, and keeps the backlog free for
  the clients that will be served once a slot frees up.
* **Bad lines.** With ``--format json`` a line that is not valid JSON
  (random bytes included) is rejected; with ``raw`` any bytes are a valid
  record. A line longer than ``max_line`` is rejected whatever the format,
  and only its first 4 KiB are kept. A rejected line is counted
  (``metrics.invalid``) and written to the dead-letter file with its reason
  and size; **the connection stays open** and the lines after it, on it and
  on every other connection, are delivered.
* **End of a connection.** When a client closes (or resets) its connection,
  the last line is delivered even without its newline.
* **Backpressure.** When the ring is more than 90% full, or a push waited
  10 ms and the ring is still full, the source stops reading sockets
  altogether until the ring drains: the kernel's receive buffers fill, TCP
  flow control closes the window, and the senders block in ``send()``. Each
  pause is counted in ``metrics.backpressure_sleeps`` (the autoscaler's
  signal to add workers). Memory is therefore bounded: one shared 1 MiB
  receive buffer, plus per connection the framer's partial line (at most
  ``max_line + 1`` bytes; 4 KiB once the line is known to be too long),
  plus the complete lines of one receive (at most 1 MiB) waiting for room
  in the ring: while a connection holds such lines no socket is read, so
  only one ever does. Plus what the kernel buffers. With 256 connections
  and a 1 MiB ``max_line`` that is at most ~258 MiB, reached only if every
  client holds a nearly 1 MiB unfinished line; typically it is a few KiB
  each.
* **Shutdown.** Within ~10-50 ms of the stop signal the source stops
  reading, spends at most 0.5 s pushing lines it has already split but not
  yet pushed (the ring is still open then, and the workers drain it), and
  closes every socket and the listener. A connection still open at shutdown
  may have sent part of a line: that partial line is *not* delivered as a
  record (it may be cut anywhere); it is counted in
  :attr:`TcpSource.partial_at_stop` and in ``metrics.invalid``, and written
  to the dead-letter file with reason ``"connection open at shutdown:
  partial line"``. Complete lines still unpushed after the 0.5 s (only
  possible when no worker makes progress, e.g. a sink that is down) are
  written to the dead-letter file with reason ``"read but not delivered:
  shutdown while the ring stayed full"``, counted as invalid and in
  :attr:`TcpSource.unpushed_at_stop`. Bytes still in the
  kernel's buffers are never read: TCP has no acknowledgement a client
  could wait for, so a sender that needs every line across a restart must
  resend; this is the same contract as syslog over TCP.
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import re
import selectors
import socket
import struct
import time
from typing import ClassVar

from logpipe._framing import LineFramer
from logpipe.domain.policies import backpressure_sleep
from logpipe.domain.ports import Ring, StopFlag
from logpipe.domain.records import frozen
from logpipe.infrastructure.sources._lines import ReadBuffer
from logpipe.infrastructure.sources.context import SourceContext

__all__ = ["TcpSource", "TcpSourceConfig", "parse_address"]

DEFAULT_HOST = "127.0.0.1"
# Bytes read per receive (the framer's read(2), LineFramer.feed_from, which
# frames and pushes them before it takes the GIL back). Between two receives
# the reading thread takes the GIL back, which a worker busy with its writes
# gives up only once the ring runs dry: each receive can cost the pipeline a
# stall. 1 MiB instead of 256 KiB made TCP -> file at the spec's defaults
# ~1.3x faster (docs/benchmarks.md, issue 9's eleventh round); memory stays
# bounded (the module doc).
RECV_SIZE = 1024 * 1024
# Longest the loop waits in select() or in a push before looking at stop.
POLL_TIMEOUT = 0.01
# Above this ring usage, no socket is read until the workers drain it.
PAUSE_ABOVE = 0.9
# Shortest pause once reading has stopped for backpressure.
MIN_PAUSE = 0.0005
# Connections accepted per wakeup of the listener, so a connection storm
# cannot starve the clients already connected.
ACCEPT_BURST = 64
# How long accepting pauses when the process is out of file descriptors.
ACCEPT_RETRY = 0.1
# At shutdown: how long to keep pushing lines already split off.
STOP_FLUSH = 0.5  # workers drain the ring meanwhile; only a stalled sink uses it all
PARTIAL_AT_STOP = "connection open at shutdown: partial line"
UNPUSHED_AT_STOP = "read but not delivered: shutdown while the ring stayed full"

# accept() errors that mean "out of resources now": retry later.
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_LINGER_RESET = struct.pack("ii", 1, 0)
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def parse_address(target: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[IPv6]:PORT``, or ``:PORT`` for 127.0.0.1).

    Args:
        target: the part of ``tcp://TARGET`` after the scheme.

    Returns:
        ``(host, port)``; the host without brackets, the port 0-65535 (0: any
        free port).

    Raises:
        ValueError: a short reason, e.g. ``"has no port"``.
    """
    if target.endswith("/"):
        target = target[:-1]
    if target.startswith("["):
        host, bracket, rest = target[1:].partition("]")
        if not bracket:
            raise ValueError("has an unclosed '[' (use [IPv6]:PORT)")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"has a bad IPv6 address {host!r}") from None
        if not rest.startswith(":"):
            raise ValueError("has no port")
        port_text = rest[1:]
    else:
        host, colon, port_text = target.rpartition(":")
        if not colon:
            raise ValueError("has no port")
        if ":" in host:
            raise ValueError("has an IPv6 address without brackets (use [IPv6]:PORT)")
        host = host or DEFAULT_HOST
        if all(part.isdigit() for part in host.split(".")):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"has a bad IPv4 address {host!r}") from None
        elif not _HOSTNAME.match(host):
            raise ValueError(f"has a bad host {host!r}")
    if not port_text:
        raise ValueError("has no port")
    if not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"has a bad port {port_text!r} (port must be 0-65535)")
    port = int(port_text)
    if port > 65535:
        raise ValueError("port must be 0-65535")
    return host, port


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@frozen
class TcpSourceConfig:
    """Builds a :class:`TcpSource`; spec ``tcp://HOST:PORT``.

    Attributes:
        host: the address to bind (default 127.0.0.1: loopback only).
        port: the port; 0 picks a free one.
        backlog: the listen backlog.
    """

    scheme: ClassVar[str] = "tcp"
    usage: ClassVar[str] = "tcp://HOST:PORT"
    takes_target: ClassVar[bool] = True

    host: str = DEFAULT_HOST
    port: int = 0
    backlog: int = 128

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> TcpSourceConfig:
        """The config for ``tcp://<target>``.

        Raises:
            ValueError: a short reason (``"has no port"``, ``"port must be 0-65535"``).
        """
        if not target:
            raise ValueError("has no HOST:PORT")
        host, port = parse_address(target)
        return cls(host=host, port=port)

    def build(self, context: SourceContext) -> TcpSource:
        """Bind and listen now, so a busy port fails at startup.

        Raises:
            OSError: the address cannot be resolved or bound; the message
                names it (``127.0.0.1:5170: Address already in use``).
        """
        return TcpSource(self.host, self.port, context=context, backlog=self.backlog)


class _Conn:
    """One client: its socket, its framer, and what the loop knows of it."""

    __slots__ = ("sock", "framer", "peer", "eof", "invalid")

    def __init__(self, sock: socket.socket, framer: LineFramer, peer: object) -> None:
        self.sock: socket.socket | None = sock
        self.framer = framer
        self.peer = peer
        self.eof = False  # the client closed; the framer has been finished
        self.invalid = 0  # framer.invalid already added to the metrics


class TcpSource:
    """Listens on ``host:port`` and puts every line its clients send into the ring.

    See the module docstring for the behaviour (limits, backpressure,
    shutdown). The socket is bound and listening once the constructor
    returns; :meth:`run` serves it once, then closes it.

    Args:
        host: the address to bind; a name is resolved (its IPv4 address first).
        port: the port; 0 picks a free one (see :attr:`address`).
        context: format, max_line, max_connections, metrics, dead letter.
        backlog: the listen backlog.

    Raises:
        OSError: cannot resolve or bind; the message names the address.

    Attributes:
        name: ``tcp://HOST:PORT`` with the bound port; the dead letter's ``source``.
        address: ``(host, port)`` actually bound.
        accepted: connections served so far.
        refused: connections reset because ``max_connections`` were open.
        records: records pushed into the ring.
        invalid: lines rejected (malformed, too long, partial at shutdown).
        bytes_received: bytes read from all clients.
        pauses: times reading stopped because the ring was (nearly) full.
        partial_at_stop: connections open at shutdown with part of a line.
        unpushed_at_stop: complete lines not pushed before the shutdown budget ran out.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        *,
        context: SourceContext,
        backlog: int = 128,
    ) -> None:
        self.context = context
        self.max_connections = context.max_connections
        self._framer_options = {"max_line": context.max_line, "validate_json": context.format == "json"}
        self._listener = self._listen(host, port, backlog)
        bound = self._listener.getsockname()
        self.address: tuple[str, int] = (bound[0], bound[1])
        self.name = f"tcp://{_format_address(*self.address)}"
        self.accepted = 0
        self.refused = 0
        self.records = 0
        self.invalid = 0
        self.bytes_received = 0
        self.pauses = 0
        self.partial_at_stop = 0
        self.unpushed_at_stop = 0
        self._conns: dict[int, _Conn] = {}
        self._held: list[_Conn] = []  # framers holding lines the ring had no room for
        self._ready: collections.deque[_Conn] = collections.deque()
        self._selector: selectors.BaseSelector | None = None
        self._accept_paused_until = 0.0
        self._ring_closed = False
        self._view = ReadBuffer(RECV_SIZE).view

    @staticmethod
    def _listen(host: str, port: int, backlog: int) -> socket.socket:
        where = _format_address(host, port)
        try:
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
            )
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"{where}: cannot resolve {host!r}: {exc.strerror}") from None
        # A name with both kinds of address (localhost) binds its IPv4 one,
        # where clients that were told "localhost" usually connect.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            # Lets a restarted logpipe bind while old connections sit in
            # TIME_WAIT; a live listener on the port still makes bind fail.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"{where}: {exc.strerror or exc}") from None
        return sock

    # -- observing ------------------------------------------------------------

    @property
    def active(self) -> int:
        """Connections open now."""
        return len(self._conns)

    # -- the loop -------------------------------------------------------------

    def run(self, ring: Ring, stop: StopFlag) -> None:
        """Serve clients until ``stop`` is set (or the ring is closed), then close.

        Args:
            ring: where records go; this source is its only producer.
            stop: checked at least every ~10 ms.
        """
        if self._listener.fileno() < 0:
            raise RuntimeError(f"{self.name}: run() was called after the source was closed")
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        try:
            while not stop.is_set() and not self._ring_closed:
                if self._held and not self._resume(POLL_TIMEOUT):
                    self._count_pause()  # the ring is still full: read nothing
                    continue
                usage = ring.usage
                if usage > PAUSE_ABOVE:
                    self._pause(usage)
                elif self._ready:
                    self._serve(ring, stop)
                else:
                    self._poll(ring)
        finally:
            self._shutdown()

    def _pause(self, usage: float) -> None:
        # Read nothing until the workers make room: the kernel buffers fill
        # and TCP flow control slows the senders.
        self._count_pause()
        time.sleep(max(backpressure_sleep(usage), MIN_PAUSE))

    def _count_pause(self) -> None:
        # Each pause is evidence the workers are not keeping up: the
        # autoscaler counts backpressure sleeps as a reason to scale up.
        self.pauses += 1
        self.context.metrics.backpressure_sleeps.add()

    def _poll(self, ring: Ring) -> None:
        selector = self._selector
        assert selector is not None
        if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            selector.register(self._listener, selectors.EVENT_READ, None)
        for key, _ in selector.select(POLL_TIMEOUT):
            if key.data is None:
                self._accept(ring)
            else:
                self._ready.append(key.data)

    def _accept(self, ring: Ring) -> None:
        selector = self._selector
        assert selector is not None
        for _ in range(ACCEPT_BURST):
            try:
                sock, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_EXHAUSTED:
                    # Out of descriptors: stop listening a moment rather than spin.
                    selector.unregister(self._listener)
                    self._accept_paused_until = time.monotonic() + ACCEPT_RETRY
                    return
                continue  # ECONNABORTED and the like: that client is gone
            if len(self._conns) >= self.max_connections:
                self.refused += 1
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                finally:
                    sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, LineFramer(ring, **self._framer_options), peer)
            self._conns[sock.fileno()] = conn
            selector.register(sock, selectors.EVENT_READ, conn)
            self.accepted += 1

    def _serve(self, ring: Ring, stop: StopFlag) -> None:
        # Readable connections are served in turn, one receive each; when the
        # ring fills part-way, the rest keep their place in the queue and go
        # first next time, so no client is starved.
        view, ready = self._view, self._ready
        while ready:
            conn = ready.popleft()
            sock = conn.sock
            if sock is None or conn.eof:
                continue
            framer = conn.framer
            records = framer.records
            try:
                # One receive, made by the framer without the GIL, its lines
                # pushed before it returns (waiting up to POLL_TIMEOUT for room).
                n = framer.feed_from(sock.fileno(), view, timeout=POLL_TIMEOUT, once=True)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                n = 0  # reset or timed out: what arrived before counts, as at EOF
            if n == 0:
                self._end(conn)
            else:
                self.bytes_received += n
                self._account(conn, framer.records - records)
            if framer.pending_lines:
                self._held.append(conn)
                return
            if framer.closed:
                self._ring_closed = True
                return
            if stop.is_set() or ring.usage > PAUSE_ABOVE:
                return

    def _end(self, conn: _Conn) -> None:
        # The client closed: its last line counts even without a newline.
        assert self._selector is not None and conn.sock is not None
        self._selector.unregister(conn.sock)
        conn.eof = True
        self._account(conn, conn.framer.finish(timeout=POLL_TIMEOUT))
        if not conn.framer.pending_lines:
            self._close(conn)

    def _resume(self, timeout: float) -> bool:
        """Push what held framers hold; True once none holds anything."""
        blocked = False
        for conn in list(self._held):
            framer = conn.framer
            pushed = framer.finish(timeout=timeout) if conn.eof else framer.feed(b"", timeout=timeout)
            self._account(conn, pushed)
            if framer.closed:
                self._ring_closed = True
                return False
            if framer.pending_lines:
                blocked = True
                timeout = 0.0  # one wait per turn, so stop is seen in time
                continue
            self._held.remove(conn)
            if conn.eof:
                self._close(conn)
        return not blocked

    def _account(self, conn: _Conn, pushed: int) -> None:
        self.records += pushed
        framer = conn.framer
        for reason, line, size in framer.take_rejected():
            self.context.dead_letter.reject(self.name, reason, line, size)
        # Counted from the framer's counter, not the list: past 10,000
        # waiting rejections the framer keeps counting but stops keeping lines.
        invalid = framer.invalid
        if invalid != conn.invalid:
            self.invalid += invalid - conn.invalid
            self.context.metrics.invalid.add(invalid - conn.invalid)
            conn.invalid = invalid

    def _close(self, conn: _Conn) -> None:
        sock = conn.sock
        if sock is None:
            return
        conn.sock = None
        self._conns.pop(sock.fileno(), None)
        if not conn.eof and self._selector is not None:
            self._selector.unregister(sock)
        sock.close()

    def _shutdown(self) -> None:
        # Lines already split off go in while time allows (the workers are
        # still draining); partial lines of live clients are dead-lettered.
        deadline = time.monotonic() + STOP_FLUSH
        try:
            for conn in self._held:
                framer = conn.framer
                remaining = deadline - time.monotonic()
                if not self._ring_closed and remaining > 0:
                    pushed = framer.finish(timeout=remaining) if conn.eof else framer.feed(b"", timeout=remaining)
                    self._account(conn, pushed)
                    self._ring_closed = self._ring_closed or framer.closed
                # Still no room (the sink is stalled): the lines were read
                # and TCP cannot give them back; the dead letter keeps them.
                for line in framer.take_held():
                    self.unpushed_at_stop += 1
                    self.invalid += 1
                    self.context.dead_letter.reject(self.name, UNPUSHED_AT_STOP, line)
                    self.context.metrics.invalid.add(1)
            for conn in self._conns.values():
                # The framer's line begun and not ended: its first 4 KiB and size.
                partial = None if conn.eof else conn.framer.partial
                if partial is not None and partial[0] != b"\r":
                    self.partial_at_stop += 1
                    self.invalid += 1
                    self.context.dead_letter.reject(self.name, PARTIAL_AT_STOP, *partial)
                    self.context.metrics.invalid.add(1)
        finally:
            self._held.clear()
            self._ready.clear()
            for conn in list(self._conns.values()):
                self._close(conn)
            self.close()

    def close(self) -> None:
        """Close the listener (and the selector); idempotent. run() calls it on return."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self._listener.close()
