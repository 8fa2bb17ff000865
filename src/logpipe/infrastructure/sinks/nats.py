"""The ``nats://HOST:PORT/SUBJECT`` sink: records as JetStream messages, acknowledged.

Two modes, chosen by ``?mode=`` on the spec or ``--nats-mode``:

record (the default: what any NATS consumer expects)
    Every record is one message, its body the record without its newline,
    with the header ``Nats-Msg-Id: {run_id}-{position}``.
batch (one message per worker batch: over a million records/s, see bench/bench_nats.py)
    The body is the batch's own framing, ``bytes(batch)``: every record
    followed by ``\n``. Headers: ``Nats-Msg-Id: {run_id}-{first}+{count}``,
    ``Logpipe-Records: {count}`` (decimal) and ``Logpipe-Framing: ndjson``,
    where ``first`` is the ring position of the message's first record and
    ``count`` its number of records. A batch over the largest message the
    server (``max_payload``) or the stream (``max_msg_size``) takes is split
    at record boundaries into as few messages as fit, each named by its own
    first position and count.

``run_id`` is chosen once per sink (16 hex digits); positions come from
``batch.positions`` and every record has its own. A batch that fails is
retried whole by its worker, with the same ids, so JetStream's duplicate
window drops the copies it stored before the failure: within one run every
record is stored once. (Records re-read after a restart of logpipe get a
new run id: at least once.) The count is part of a batch id on purpose: if
a retry were ever split differently (a server with another max_payload), a
message whose first record matches but whose content differs is stored,
a duplicate rather than a loss.

How a batch is written
    nats-py is asyncio, so the sink runs one event loop in its own thread
    (``logpipe-nats``). ``write_batch`` (from any worker thread) hands the
    batch to that loop and waits until every message of it is acked
    (stored, or reported a duplicate): only then is the batch written, so
    checkpoints never run ahead of the stream. Messages are published with
    a reply subject of their attempt (``_INBOX.<id>.<n>``) and one ack
    handler counts them down.

    Batch mode publishes with nats-py, whose cost per message is nothing
    next to a batch's. Record mode cannot afford it (some 15 µs of Python
    per message and ack), so it publishes on a second, bare connection
    (:mod:`._nats_wire`): the worker thread builds every record's HPUB
    frame, the loop thread writes a window's worth of them in one call and
    parses the acks of each chunk the socket returns in one pass. nats-py
    keeps the main connection: the stream checks, reconnecting, and the
    connection state that decides when the bare one is opened again.

    All batches in flight share a window of
    ``max_inflight`` messages published and not yet acked (16384 by
    default): a worker publishes while the window has room and waits for
    acks when it is full, so publishing and acks overlap without the
    client's buffers growing with the batch size or the number of workers.

Failure
    - Unreachable server or no stream at startup: :class:`SinkError` from
      the constructor, one line (the registry turns it into ``--sink: ...``).
    - Server down later: nats-py reconnects by itself for ever (every
      ``reconnect_wait`` seconds); record mode's bare connection is opened
      again by the first write after that. Meanwhile ``write_batch`` fails
      fast: at once while disconnected, or when no ack comes for
      ``ack_timeout`` (2 s; the bare connection is then closed, and the
      retry opens a new one). The worker retries with backoff (counted in
      ``logpipe_sink_errors_total``), stops draining the ring, the ring
      fills and backpressure slows the source: memory stays bounded.
    - JetStream refuses a message: with a 5xx error (or no responders while
      a restarted server recovers its streams) the batch fails and is
      retried; with a 4xx error (a record larger than the stream's
      max_msg_size...) it fails with ``retryable=False``, since sending it
      again cannot help; so does a record over the server's max_payload
      (refused before anything of its batch is sent).

The stream
    With ``stream`` (``--nats-stream NAME``) the sink creates that stream if
    it does not exist (subjects ``[SUBJECT]``, file storage, a 2-minute
    duplicate window) and checks that it takes SUBJECT. Without it, some
    existing stream must take SUBJECT. The duplicate window must outlast an
    outage plus the retry backoff for the "once" guarantee to hold.

Requires the ``nats-py`` package (``pip install 'logpipe[nats]'``); without
it, building the sink fails with a one-line error saying so.

The spec's parsing (:class:`NatsSinkConfig`, :func:`check_subject`) lives in
:mod:`.nats_config`, which the registry imports to parse the spec; this module
(asyncio and all) is imported by ``NatsSinkConfig.build``, when a run uses
the sink. Both names are re-exported here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import re
import secrets
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import orjson

from logpipe._waits import wait_for
from logpipe.domain.ports import FramedBatch
from logpipe.exceptions import SinkError
from logpipe.infrastructure._nats_client import LoopThread, connect, describe
from logpipe.infrastructure.sinks._nats_wire import Ack, Wire, WireError, open_wire
from logpipe.infrastructure.sinks.nats_config import MODES, NatsSinkConfig, check_subject

__all__ = ["MODES", "NatsSink", "NatsSinkConfig", "batch_msg_id", "check_subject"]

ACK_TIMEOUT = 2.0  # longest wait for a batch's acks before write_batch fails
CONNECT_TIMEOUT = 2.0  # longest wait for the first connection and the stream checks
RECONNECT_WAIT = 0.25  # pause between reconnection attempts
DUPLICATE_WINDOW = 120.0  # of a stream the sink creates, in seconds
MAX_INFLIGHT = 16384  # messages published and not yet acked, all batches together
MSG_ID = "Nats-Msg-Id"
RECORDS_HEADER = "Logpipe-Records"  # batch mode: records in the message
FRAMING_HEADER = "Logpipe-Framing"  # batch mode: how the body separates them
FRAMING = "ndjson"  # every record followed by b"\n", as bytes(batch) frames it
HEADER_ROOM = 512  # bytes kept for the HPUB line and headers below max_payload
WRITE_CHUNK = 256 << 10  # record mode: most bytes of frames handed to the socket at once
INSTALL_HINT = "pip install 'logpipe[nats]'"

_T = TypeVar("_T")
_BAD_STREAM_CHARS = re.compile(r"[\s\x00-\x1f\x7f.*>/\\]")


def batch_msg_id(run_id: str, first: int, count: int) -> str:
    """The ``Nats-Msg-Id`` of a batch-mode message: ``{run_id}-{first}+{count}``.

    Args:
        run_id: the sink's run id.
        first: the ring position of the message's first record.
        count: how many records the message holds.
    """
    return f"{run_id}-{first}+{count}"


def _expand(positions: list[tuple[int, int]]) -> list[int]:
    """``[(first, count), ...]`` -> every position, in order."""
    return [p for first, count in positions for p in range(first, first + count)]


def _split(records: list[bytes], positions: list[int], limit: int) -> list[tuple[bytes, int, int]]:
    """Records -> as few (framed body, first position, count) as keep each body within ``limit``.

    A record that alone exceeds the limit gets a message of its own (which
    the server then refuses, permanently, naming the reason).
    """
    out: list[tuple[bytes, int, int]] = []
    start = 0
    size = 0
    for i, record in enumerate(records):
        framed = len(record) + 1
        if i > start and size + framed > limit:
            out.append((b"\n".join(records[start:i]) + b"\n", positions[start], i - start))
            start, size = i, 0
        size += framed
    if start < len(records):
        out.append((b"\n".join(records[start:]) + b"\n", positions[start], len(records) - start))
    return out


def _import_nats(name: str) -> Any:
    try:
        import nats  # noqa: PLC0415 - optional dependency, imported when used
        import nats.errors  # noqa: PLC0415
        import nats.js.errors  # noqa: PLC0415
    except ImportError:
        raise SinkError(
            f"{name}: the nats sink needs the nats-py package, which is not installed ({INSTALL_HINT})",
            retryable=False,
        ) from None
    return nats


class _Attempt:
    """One try at writing one batch: acks still expected, and how it ended."""

    __slots__ = ("duplicates", "error", "future", "held", "on_wire", "permanent", "remaining")

    def __init__(self, remaining: int, future: asyncio.Future[None]) -> None:
        self.remaining = remaining  # messages not yet acked
        self.future = future
        self.held = 0  # slots of the in-flight window this attempt holds
        self.on_wire = False  # published on the record-mode connection (not nats-py's)
        self.duplicates = 0  # records in messages acked as duplicates
        self.error: str | None = None
        self.permanent = False  # JetStream will refuse this batch however often it is sent

    def fail(self, reason: str, *, permanent: bool = False) -> None:
        """End the attempt with ``reason`` (the first reason wins); its waiter's future is done."""
        if self.error is None:
            self.error = reason
            self.permanent = permanent
        if not self.future.done():
            self.future.set_result(None)


class NatsSink:
    """Publishes records (or whole batches) to a JetStream subject and waits for the acks.

    Connects, checks (or creates) the stream and subscribes to its acks
    before returning. Thread-safe: workers call :meth:`write_batch` at once,
    and their batches are in flight together, within one window of
    ``max_inflight`` unacked messages.

    Args:
        host, port: the nats-server.
        subject: where records are published (see :func:`check_subject`).
        mode: ``"record"`` (a message per record) or ``"batch"`` (a message
            per batch; see the module docstring for its body and headers).
        stream: a stream to create if missing (subjects ``[subject]``) and
            to check takes ``subject``; None: an existing stream must.
        ack_timeout: longest wait for an ack: for room in the window while it
            is full, and for a batch's last acks.
        max_inflight: most messages published and not yet acked, all batches together.
        connect_timeout: longest wait to connect and check the stream at startup.
        reconnect_wait: pause between reconnection attempts once connected.
        duplicate_window: of a stream created here, in seconds.
        run_id: the prefix of every Nats-Msg-Id (default: 16 random hex digits).

    Raises:
        SinkError: nats-py is missing, the server cannot be reached, it has
            no JetStream, or no stream takes the subject (one line each).
        ValueError: a bad subject, stream name, mode or max_inflight.

    Attributes:
        name: ``nats://HOST:PORT/SUBJECT``.
        mode: ``"record"`` or ``"batch"``.
        stream: the stream that takes the subject (found or created).
        created_stream: whether this sink created it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        subject: str,
        *,
        stream: str | None = None,
        mode: str = "record",
        ack_timeout: float = ACK_TIMEOUT,
        max_inflight: int = MAX_INFLIGHT,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_wait: float = RECONNECT_WAIT,
        duplicate_window: float = DUPLICATE_WINDOW,
        run_id: str | None = None,
    ) -> None:
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.name = f"nats://{hostport}/{subject}"
        why = check_subject(subject)
        if why:
            raise ValueError(f"{self.name}: {why}")
        if stream is not None and (not stream or _BAD_STREAM_CHARS.search(stream)):
            raise ValueError(
                f"{self.name}: stream name {stream!r} is not valid "
                "(no spaces, dots, '*', '>', '/' or '\\')"
            )
        if mode not in MODES:
            raise ValueError(f"{self.name}: mode {mode!r} is not one of {', '.join(MODES)}")
        if max_inflight < 1:
            raise ValueError(f"{self.name}: max_inflight {max_inflight!r} is out of range (must be >= 1)")
        if run_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", run_id):
            raise ValueError(f"{self.name}: run_id {run_id!r} may hold only letters, digits, '_' and '-'")
        self._nats = _import_nats(self.name)
        self.mode = mode
        self.url = f"nats://{hostport}"
        self.subject = subject
        self.stream = stream
        self.created_stream = False
        self.run_id = run_id if run_id is not None else secrets.token_hex(8)
        self._ack_timeout = ack_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._duplicate_window = duplicate_window

        self._records = 0
        self._batches = 0
        self._nbytes = 0
        self._duplicates = 0
        self._disconnects = 0
        self._reconnects = 0
        self._last_error: str | None = None
        # reply subject -> (attempt, records per message on it)
        self._attempts: dict[str, tuple[_Attempt, int]] = {}
        self._max_inflight = max_inflight
        self._free = max_inflight  # free slots of the window (loop thread only)
        self._room: asyncio.Event | None = None  # set when slots come free (made on the loop)
        self._max_msg_size = -1  # the stream's limit per message; -1: none
        # Record mode publishes on a connection of its own (_nats_wire), which
        # acks come back to under this inbox; opened at start, and again after a loss.
        self._host = host
        self._port = port
        self._wire: Wire | None = None
        self._wire_lock: asyncio.Lock | None = None  # made on the loop
        self._wire_inbox = f"_INBOX.{secrets.token_hex(11)}"
        self._wire_seq = itertools.count(1)
        self._attempt_seq = 0
        self._nc: Any = None
        self._inbox = ""

        self._cond = threading.Condition()
        self._inflight = 0
        self._closed = False
        self._loop_thread = LoopThread("logpipe-nats", SinkError)
        self._loop = self._loop_thread.loop
        try:
            # The coroutine bounds itself; this outer limit only guards the loop.
            self._call(self._start(), timeout=4 * connect_timeout + 5)
        except BaseException:
            self._stop_loop()
            raise

    # -- counters -----------------------------------------------------------

    @property
    def records(self) -> int:
        """Records acknowledged by JetStream (duplicates included)."""
        return self._records

    @property
    def batches(self) -> int:
        """Calls to :meth:`write_batch` that succeeded."""
        return self._batches

    @property
    def nbytes(self) -> int:
        """Message bodies acknowledged, in bytes (batch mode: newlines included)."""
        return self._nbytes

    @property
    def duplicates(self) -> int:
        """Records whose message was acked as a duplicate: retried copies JetStream dropped."""
        return self._duplicates

    @property
    def disconnects(self) -> int:
        """Times the connection was lost."""
        return self._disconnects

    @property
    def reconnects(self) -> int:
        """Times the connection was re-established."""
        return self._reconnects

    @property
    def pending_acks(self) -> int:
        """Messages published and not yet acked (or given up on) right now; at most ``max_inflight``."""
        return self._max_inflight - self._free

    @property
    def max_inflight(self) -> int:
        """The window: most messages published and not yet acked, all batches together."""
        return self._max_inflight

    @property
    def connected(self) -> bool:
        """Whether the client is connected right now."""
        return bool(self._nc is not None and self._nc.is_connected)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    # -- the Sink protocol --------------------------------------------------

    def write_batch(self, batch: FramedBatch) -> None:
        """Publish ``batch`` (a message per record, or per batch) and wait until JetStream has acked it all.

        Args:
            batch: a ``logpipe.Batch`` (its ``positions`` make the message ids).

        Raises:
            SinkError: a message was refused, or no ack came within
                ``ack_timeout`` (the server is down, reconnecting or
                recovering), or the sink is closed. Retrying the same batch
                is safe.
            TypeError: ``batch`` has no ``positions``.
        """
        positions = getattr(batch, "positions", None)
        if positions is None:
            raise TypeError(
                f"{self.name}: write_batch needs a logpipe.Batch (with positions), "
                f"not {type(batch).__name__}"
            )
        with self._cond:
            if self._closed:
                raise SinkError(f"{self.name}: write after close", retryable=False)
            self._inflight += 1
            attempt_no = next(self._wire_seq)
        try:
            count = len(batch)
            covered = sum(n for _, n in positions)
            if covered != count:  # a Batch never does this; a fake one might
                raise TypeError(f"{self.name}: batch positions cover {covered} of {count} records")
            # The frames are built here, on the worker's thread: the loop
            # thread, which every batch shares, only writes and counts acks.
            if self.mode == "batch":
                messages = self._batch_messages(batch, positions)
                sends = len(messages)
                publish = self._publish(messages, count)
            else:
                reply = f"{self._wire_inbox}.{attempt_no}"
                frames, nbytes = self._record_frames(batch, positions, reply)
                sends = len(frames)
                publish = self._publish_frames(frames, reply, count, nbytes)
            # Every wait inside is bounded by ack_timeout; this outer limit
            # only guards against a stuck loop, so it grows with the rounds
            # of the window the batch needs.
            rounds = math.ceil(sends / self._max_inflight)
            self._call(publish, timeout=(2 + rounds) * self._ack_timeout + 5)
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def _batch_messages(
        self, batch: FramedBatch, positions: list[tuple[int, int]]
    ) -> list[tuple[bytes, dict[str, str], int]]:
        """A batch as batch-mode messages: (body, headers, records); usually one."""
        count = len(batch)
        if count == 0:
            return []
        limit = self._message_limit()
        data = bytes(batch)  # type: ignore[call-overload]  # the records, each followed by b"\n"
        if data.count(b"\n") != count:
            raise SinkError(
                f"{self.name}: batch mode: a record holds a newline, which the NDJSON framing "
                "of a batch message cannot carry (use mode=record)",
                retryable=False,
            )
        if len(data) <= limit:
            parts = [(data, positions[0][0], count)]
        else:
            parts = _split(list(batch), _expand(positions), limit)  # type: ignore[call-overload]
        run = self.run_id
        return [
            (
                body,
                {MSG_ID: batch_msg_id(run, first, n), RECORDS_HEADER: str(n), FRAMING_HEADER: FRAMING},
                n,
            )
            for body, first, n in parts
        ]

    def _record_frames(
        self, batch: FramedBatch, positions: list[tuple[int, int]], reply: str
    ) -> tuple[list[bytes], int]:
        """Record mode: every record as a whole HPUB frame (headers and all); and their bytes."""
        wire = self._wire
        limit = wire.max_payload if wire is not None else 1 << 20
        head = b"HPUB %s %s " % (self.subject.encode(), reply.encode())
        prefix = b"NATS/1.0\r\n%s: %s-" % (MSG_ID.encode(), self.run_id.encode())
        frames = []
        nbytes = 0
        for record, position in zip(batch, _expand(positions)):  # type: ignore[call-overload]
            header = b"%s%d\r\n\r\n" % (prefix, position)
            size = len(header) + len(record)
            if size > limit:  # the server would drop the connection: refuse it here
                raise SinkError(
                    f"{self.name}: a record of {len(record)} bytes is over the server's "
                    f"max_payload ({limit} bytes with its headers)",
                    retryable=False,
                )
            frames.append(b"%s%d %d\r\n%s%s\r\n" % (head, len(header), size, header, record))
            nbytes += len(record)
        return frames, nbytes

    def _message_limit(self) -> int:
        """The largest batch-mode body that the server and the stream both take, in bytes."""
        nc = self._nc
        limit = int(getattr(nc, "max_payload", 0) or 0) or 1 << 20  # 1 MiB: the server's default
        if self._max_msg_size > 0:
            limit = min(limit, self._max_msg_size)
        return max(1, limit - HEADER_ROOM)

    def flush(self) -> None:
        """Wait for batches being written, then for the server to have read everything sent.

        Raises:
            SinkError: the server did not answer within ``ack_timeout``.
        """
        self._wait_idle()
        if self._closed:
            return
        self._call(self._flush_connection(), timeout=self._ack_timeout + 5)

    def close(self) -> None:
        """Wait for batches in flight, drain and close the connection, stop the loop thread.

        Idempotent; later writes raise SinkError. Never waits for a server
        that is down for longer than ``ack_timeout``.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._wait_idle()
        try:
            self._call(self._shutdown(), timeout=2 * self._ack_timeout + 5)
        except concurrent.futures.CancelledError:
            pass  # the shutdown task was cancelled under us: the loop stops anyway
        finally:
            self._stop_loop()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self.connected else "disconnected")
        return f"<NatsSink {self.name} stream={self.stream} {state} records={self._records}>"

    # -- the loop thread ----------------------------------------------------

    def _stop_loop(self) -> None:
        self._loop_thread.stop()

    def _call(self, coro: Coroutine[Any, Any, _T], *, timeout: float) -> _T:
        """Run ``coro`` on the loop thread and wait for its result."""
        return self._loop_thread.call(coro, timeout=timeout, what=self.name)

    def _wait_idle(self) -> None:
        with self._cond:
            wait_for(self._cond, lambda: self._inflight == 0, timeout=2 * self._ack_timeout + 10)

    # -- coroutines (run on the loop thread) --------------------------------

    def _note_error(self, line: str) -> None:
        self._last_error = line

    async def _start(self) -> None:
        nats = self._nats
        nc = nats.NATS()
        self._nc = nc
        self._room = asyncio.Event()
        self._wire_lock = asyncio.Lock()

        async def disconnected_cb() -> None:
            if self._closed:
                return  # our own close(), not an outage
            self._disconnects += 1
            # Acks of attempts in flight will not come: fail them now, and
            # wake those waiting for room in the window so they see it.
            for attempt, _ in list(self._attempts.values()):
                attempt.fail("connection lost")
            self._make_room()

        async def reconnected_cb() -> None:
            self._reconnects += 1

        await connect(
            nc, self.url, client_name="logpipe",
            connect_timeout=self._connect_timeout, reconnect_wait=self._reconnect_wait,
            on_error=self._note_error,
            cannot_connect=lambda reason: SinkError(f"{self.name}: {reason}", retryable=False),
            disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb,
        )
        try:
            await self._check_stream(nc)
            self._inbox = nc.new_inbox()
            await nc.subscribe(
                f"{self._inbox}.*",
                cb=self._on_ack,
                pending_msgs_limit=1 << 20,
                pending_bytes_limit=256 << 20,
            )
            await nc.flush(timeout=self._connect_timeout)  # the subscription is in place
            if self.mode == "record":
                try:
                    await self._ensure_wire()
                except SinkError as exc:
                    raise SinkError(str(exc), retryable=False) from None
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1)
            raise

    async def _check_stream(self, nc: Any) -> None:
        errors = self._nats.js.errors
        js = nc.jetstream(timeout=self._connect_timeout)
        try:
            if self.stream is not None:
                try:
                    await js.stream_info(self.stream)
                except errors.NotFoundError:
                    await js.add_stream(
                        name=self.stream,
                        subjects=[self.subject],
                        duplicate_window=self._duplicate_window,
                    )
                    self.created_stream = True
            try:
                found = await js.find_stream_name_by_subject(self.subject)
            except errors.NotFoundError:
                found = None
            if found is None and self.stream is None:
                raise SinkError(
                    f"{self.name}: no JetStream stream takes subject {self.subject!r} "
                    "(create one, or pass --nats-stream NAME to have logpipe create it)",
                    retryable=False,
                )
            if found != self.stream and self.stream is not None:
                info = await js.stream_info(self.stream)
                subjects = ", ".join(info.config.subjects or []) or "none"
                taken = f"; it goes to stream {found!r}" if found else ""
                raise SinkError(
                    f"{self.name}: stream {self.stream!r} exists but does not take subject "
                    f"{self.subject!r} (its subjects: {subjects}){taken}",
                    retryable=False,
                )
            self.stream = found
            info = await js.stream_info(found)
            limit = info.config.max_msg_size
            self._max_msg_size = int(limit) if limit is not None else -1
        except errors.ServiceUnavailableError:
            raise SinkError(
                f"{self.name}: the server has no JetStream (start nats-server with -js)",
                retryable=False,
            ) from None
        except (errors.APIError, self._nats.errors.Error, asyncio.TimeoutError) as exc:
            raise SinkError(
                f"{self.name}: cannot check JetStream stream ({describe(exc)})", retryable=False
            ) from None

    def _make_room(self) -> None:
        if self._room is not None:
            self._room.set()

    def _release(self, attempt: _Attempt, slots: int) -> None:
        """Give back ``slots`` of the window that ``attempt`` holds."""
        attempt.held -= slots
        self._free += slots
        self._make_room()

    async def _on_ack(self, msg: Any) -> None:
        """An ack on nats-py's connection (batch mode)."""
        entry = self._attempts.get(msg.subject)
        if entry is not None:
            status = "" if msg.data else (msg.headers or {}).get("Status", "")
            self._ack(entry, status, msg.data)

    def _on_wire_acks(self, acks: list[Ack]) -> None:
        """The acks in one chunk read from the record-mode connection.

        A plain "stored" ack, nearly every one, is counted inline and the
        window woken once per chunk; anything else goes through _ack.
        """
        attempts = self._attempts
        freed = 0
        for reply, status, data in acks:
            entry = attempts.get(reply)
            if entry is None:
                continue  # the ack of an attempt that already failed: its retry decides
            if status or not data or b'"error"' in data or b'"duplicate"' in data:
                self._ack(entry, status, data)
                continue
            attempt = entry[0]
            attempt.held -= 1
            freed += 1
            attempt.remaining -= 1
            if attempt.remaining == 0 and not attempt.future.done():
                attempt.future.set_result(None)
        if freed:
            self._free += freed
            self._make_room()

    def _ack(self, entry: tuple[_Attempt, int], status: str, data: bytes) -> None:
        attempt, weight = entry
        self._release(attempt, 1)  # answered, whatever the answer: its slot is free
        if not data:
            if status == "503":
                attempt.fail("no responders: the stream is not available (server recovering?)")
            else:
                attempt.fail(f"empty ack (status {status or 'none'})")
            return
        if b'"error"' in data:
            code = 0
            try:
                error = orjson.loads(data)["error"]
                code = int(error.get("code") or 0)
                reason = f"JetStream error {code}: {error.get('description')}"
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
                reason = f"JetStream error {data[:200]!r}"
            # 4xx: the record itself is refused (too large for the stream...);
            # 5xx: the stream is unavailable or out of resources, for now.
            attempt.fail(reason, permanent=400 <= code < 500)
            return
        if b'"duplicate"' in data:
            attempt.duplicates += weight
        attempt.remaining -= 1
        if attempt.remaining == 0 and not attempt.future.done():
            attempt.future.set_result(None)

    def _on_wire_lost(self, wire: Wire, reason: str) -> None:
        if self._wire is wire:
            self._wire = None
        # Acks of what was published on it will not come: fail those attempts now,
        # and wake any that waits for room in the window so it sees it.
        for attempt, _ in list(self._attempts.values()):
            if attempt.on_wire:
                attempt.fail(f"connection lost ({reason})")
        self._make_room()

    async def _ensure_wire(self) -> Wire:
        """The record-mode connection, opened (again) if needed; SinkError if it cannot be."""
        assert self._wire_lock is not None
        async with self._wire_lock:  # one opening at a time, however many batches wait
            wire = self._wire
            if wire is not None and not wire.closed:
                return wire
            if not self._nc.is_connected:
                raise SinkError(f"{self.name}: not connected ({self._state()})")
            try:
                wire = await open_wire(
                    self._host,
                    self._port,
                    self._wire_inbox,
                    timeout=self._connect_timeout,
                    on_acks=self._on_wire_acks,
                    on_lost=self._on_wire_lost,
                )
            except WireError as exc:
                raise SinkError(f"{self.name}: cannot open the publishing connection ({exc})") from None
            self._wire = wire
            return wire

    async def _reserve(self, attempt: _Attempt, wanted: int, deadline: asyncio.Timeout) -> int:
        """Up to ``wanted`` slots of the window, waiting for room; 0 if the attempt failed meanwhile.

        Waiting for room is progress as soon as an ack frees a slot, so the
        deadline moves on then: an attempt fails when no ack has come for
        ack_timeout, not when a large batch simply takes long to send.
        """
        room = self._room
        assert room is not None
        while self._free <= 0 and attempt.error is None:
            room.clear()
            await room.wait()
            deadline.reschedule(asyncio.get_running_loop().time() + self._ack_timeout)
        if attempt.error is not None:
            return 0
        take = min(self._free, wanted)
        self._free -= take
        attempt.held += take
        return take

    async def _publish_frames(self, frames: list[bytes], reply: str, count: int, nbytes: int) -> None:
        """Record mode: write the frames on the wire within the window, then wait for every ack."""
        if not frames:
            self._batches += 1
            return
        wire = await self._ensure_wire()
        loop = asyncio.get_running_loop()
        attempt = _Attempt(len(frames), loop.create_future())
        attempt.on_wire = True
        self._attempts[reply] = (attempt, 1)
        sent = 0
        try:
            async with asyncio.timeout(self._ack_timeout) as deadline:
                while sent < len(frames) and attempt.error is None:
                    take = await self._reserve(attempt, len(frames) - sent, deadline)
                    stop = sent + take
                    while sent < stop and attempt.error is None:
                        # Writes of at most WRITE_CHUNK bytes, each once the socket's
                        # buffer has drained: what waits in this process to be sent
                        # stays small however large the records.
                        first, size = sent, 0
                        while sent < stop and (size == 0 or size + len(frames[sent]) <= WRITE_CHUNK):
                            size += len(frames[sent])
                            sent += 1
                        wire.write(b"".join(frames[first:sent]))
                        if not wire.writable.is_set():
                            await wire.writable.wait()
                if attempt.error is None:
                    deadline.reschedule(loop.time() + self._ack_timeout)
                    await attempt.future
        except TimeoutError:
            if attempt.error is None:  # else it failed while waiting: that reason, below
                # Acks that stopped coming do not come back on this socket: a
                # retry gets a new one.
                wire.close()
                raise SinkError(
                    f"{self.name}: {attempt.remaining} of {len(frames)} records "
                    f"not acknowledged within {self._ack_timeout:g}s ({self._state()})"
                ) from None
        finally:
            del self._attempts[reply]
            if attempt.held:
                self._release(attempt, attempt.held)  # acks that will not be counted now
        self._settle(attempt, count, nbytes)

    async def _publish(self, messages: list[tuple[bytes, dict[str, str], int]], count: int) -> None:
        """Batch mode: publish ``messages`` (body, headers, records) within the window; wait for every ack.

        Each message has a reply subject of its own, so an ack says how many
        records it stands for (a duplicate's weight).
        """
        nc = self._nc
        if not messages:
            self._batches += 1
            return
        if not nc.is_connected:
            raise SinkError(f"{self.name}: not connected ({self._state()})")
        loop = asyncio.get_running_loop()
        attempt = _Attempt(len(messages), loop.create_future())
        replies: list[str] = []
        for _, _, records in messages:
            self._attempt_seq += 1
            replies.append(f"{self._inbox}.{self._attempt_seq}")
            self._attempts[replies[-1]] = (attempt, records)
        subject = self.subject
        publish = nc.publish
        nbytes = 0
        sent = 0
        try:
            async with asyncio.timeout(self._ack_timeout) as deadline:
                while sent < len(messages) and attempt.error is None:
                    take = await self._reserve(attempt, len(messages) - sent, deadline)
                    for i in range(sent, sent + take):
                        body, headers, _ = messages[i]
                        await publish(subject, body, reply=replies[i], headers=headers)
                        nbytes += len(body)
                        if attempt.error is not None:
                            break  # failed already (connection lost, a message refused): stop sending
                    sent += take
                if attempt.error is None:
                    deadline.reschedule(loop.time() + self._ack_timeout)
                    await attempt.future
        except TimeoutError:
            if attempt.error is None:  # else it failed while waiting: that reason, below
                raise SinkError(
                    f"{self.name}: {attempt.remaining} of {len(messages)} messages "
                    f"({count} records) not acknowledged within {self._ack_timeout:g}s ({self._state()})"
                ) from None
        except self._nats.errors.Error as exc:
            retryable = not isinstance(exc, self._nats.errors.MaxPayloadError)
            raise SinkError(f"{self.name}: publish failed ({describe(exc)})", retryable=retryable) from None
        finally:
            for reply in replies:
                del self._attempts[reply]
            if attempt.held:
                self._release(attempt, attempt.held)  # acks that will not be counted now
        self._settle(attempt, count, nbytes)

    def _settle(self, attempt: _Attempt, count: int, nbytes: int) -> None:
        """Raise the attempt's failure, or count the batch as written."""
        if attempt.error is not None:
            raise SinkError(
                f"{self.name}: batch of {count} records failed ({attempt.error})",
                retryable=not attempt.permanent,
            )
        self._records += count
        self._nbytes += nbytes
        self._batches += 1
        self._duplicates += attempt.duplicates

    async def _flush_connection(self) -> None:
        nc = self._nc
        if not nc.is_connected:
            raise SinkError(f"{self.name}: flush failed: not connected ({self._state()})")
        try:
            await nc.flush(timeout=self._ack_timeout)
        except (self._nats.errors.Error, asyncio.TimeoutError) as exc:
            raise SinkError(f"{self.name}: flush failed ({describe(exc)})") from None

    async def _shutdown(self) -> None:
        if self._wire is not None:
            self._wire.close()  # every batch on it has been acked: nothing to drain
            await asyncio.sleep(0)  # let the transport finish closing before the loop stops
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        # Closing is best effort past this point. The client may cancel what
        # we await when it notices the server is gone (seen: a CancelledError
        # out of drain() after the server was killed), so that is swallowed
        # too: close() must end, not fail, whatever the server's state.
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), self._ack_timeout)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001
            pass
        if not nc.is_closed:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(nc.close(), self._ack_timeout)

    def _state(self) -> str:
        nc = self._nc
        if nc is None:
            return "no client"
        if nc.is_connected:
            return "connected; server slow or stream unavailable"
        last = f", last error: {self._last_error}" if self._last_error else ""
        return f"disconnected, reconnecting every {self._reconnect_wait:g}s{last}"
