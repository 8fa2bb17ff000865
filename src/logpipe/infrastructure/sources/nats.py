"""The ``nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME`` source: a JetStream consumer group.

Every process started with the same ``durable`` name reads through one
durable pull consumer of the stream, so JetStream hands each message to one
of them (work-queue semantics): run more consumers to share a backlog.

The consumer
    Created if missing, with explicit acks, ``ack_wait`` (default 30 s,
    ``&ack_wait=10s``), ``max_ack_pending`` (default and upper bound: the
    ring's capacity, ``--channel-size``; ``&max_ack_pending=N``) and the
    spec's SUBJECT as its filter. An existing consumer is used as it is
    (its own ack wait and limit apply) if it is a pull consumer with
    explicit acks whose filter is SUBJECT.

Messages to records
    A message without a ``Logpipe-Records`` header is one record (what the
    nats sink publishes by default). A message with ``Logpipe-Records: N``
    and ``Logpipe-Framing: ndjson`` (the sink's batch mode) holds N records,
    each followed by ``\\n``. Records go through the same line framer as
    the file, stdin and tcp sources: a trailing ``\\r`` is stripped, blank
    records are skipped, ``--format json`` validates, ``--max-record-size``
    applies, and a rejected record goes to the dead letter. A batch message
    whose body does not hold exactly N newline-ended records, or whose
    framing is unknown, is bad input: it is written to the dead letter
    (its first 4 KiB), counted once in ``invalid`` and in
    :attr:`NatsSource.bad_messages`, and acknowledged; the source goes on.

Pulling
    One pull request is open at a time (up to :data:`FETCH_MAX` messages,
    lingering :data:`FETCH_WAIT` on the server when nothing waits); the
    messages arrive on the client's event-loop thread and are handed to the
    source thread as they come, which frames the ones waiting together (a
    group: one call into the framer, bounded by the ring's free room).

Acknowledgement follows the writes
    Every record has a ring position, and the source notes, after each
    group, how many records it has pushed. The pipeline passes its flush
    watermark to :meth:`NatsSource.commit` (every :data:`COMMIT_INTERVAL`
    and once more after the last batch is written), and every message of a
    group whose records all lie below it is acknowledged: a message is acked
    only once the sink has written all of its records. A consumer killed at any
    moment loses nothing: what it had not acked is redelivered after
    ``ack_wait``, to it or to another member of the group. The records of
    those messages that had been written already arrive twice; a message
    delivered more than once is counted in :attr:`NatsSource.redelivered`
    (``logpipe_upstream_redelivered_total``). The duplicates are bounded by
    what was unacknowledged, at most ``max_ack_pending`` messages (the
    consumer's limit, shared by the whole group) per crash. Acks are plain
    publishes, so a dead server or a consumer leader being re-elected loses
    those in flight: after a reconnect or a leader change the acks of the
    last ``max_ack_pending`` messages are sent again (see ``_reack``).

Backpressure
    A pull request is sent only while the ring is at most 90% full, and asks
    for no more messages than the free room holds (in records, estimated per
    message from what has arrived so far). While the ring is fuller the
    source sleeps by the backpressure table (counted in
    ``backpressure_sleeps``) and asks for nothing: the stream keeps the
    backlog. logpipe holds at most ``max_ack_pending`` messages, which
    JetStream enforces: no more are delivered until some are acked.

Shutdown
    On the stop signal the source returns within ~10 ms (at most
    :data:`STOP_FLUSH` if the ring is full then: the records of the group
    being pushed get that long to enter it). The pipeline
    drains the ring, its last commit acknowledges everything written, and
    :meth:`NatsSource.close` (the pipeline calls it last) lets the open
    pull request end (at most :data:`FETCH_WAIT` more), then negatively
    acknowledges every message received but not written (still waiting,
    in a group the stop cut short, or in batches the sink refused for
    good), so JetStream redelivers them at once instead of after
    ``ack_wait``; then it flushes the acks to the server and disconnects.

Lag
    Once a second the consumer's ``num_pending`` (messages not yet
    delivered to the group) and ``num_ack_pending`` (delivered, not acked)
    are read; they are shown on the ``[METRICS]`` line and exported as
    ``logpipe_upstream_pending`` and ``logpipe_upstream_ack_pending``.
    :meth:`NatsSource.upstream_pressure` says whether the backlog is at
    least a ring's worth of records: a signal for the autoscaler.

Requires the ``nats-py`` package (``pip install 'logpipe[nats]'``).

The spec's parsing (:class:`NatsSourceConfig`) lives in :mod:`.nats_config`,
which the registry imports to parse the spec; this module (asyncio and all) is
imported by ``NatsSourceConfig.build``, when a run reads from NATS.
``NatsSourceConfig`` is re-exported here.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, ClassVar, TypeVar

import orjson

from logpipe.application.metrics import UpstreamLag
from logpipe.domain.policies import backpressure_sleep
from logpipe.domain.ports import Ring, StopFlag
from logpipe.exceptions import SourceError
from logpipe.infrastructure._nats_client import LoopThread, connect, describe
from logpipe.infrastructure.sources._lines import PUSH_SLICE, LineInput
from logpipe.infrastructure.sources.context import SourceContext
from logpipe.infrastructure.sources.nats_config import DEFAULT_ACK_WAIT, NatsSourceConfig

__all__ = ["NatsSource", "NatsSourceConfig"]

CONNECT_TIMEOUT = 2.0  # longest wait to connect and set up the consumer at startup
# JetStream requests of the consumer's setup that time out are tried again,
# for this many CONNECT_TIMEOUTs in all: a cluster whose server was just
# restarted can leave them unanswered while it elects its leaders, and a
# logpipe restarted then should wait that out rather than exit.
SETUP_PATIENCE = 3
SETUP_RETRY_PAUSE = 0.25  # seconds between two setup attempts
RECONNECT_WAIT = 0.25  # between reconnection attempts
# Longest a pull request lingers on the server when nothing is waiting. It
# bounds how long close() waits for the request open at a stop, not the stop.
FETCH_WAIT = 0.25
FETCH_MAX = 1024  # messages asked for by one pull request at most
# A request whose end never came (the connection dropped) is given up this
# long after its expiry, and a new one is sent.
REQUEST_GRACE = 1.0
# Messages waiting are framed together, up to these limits: one call into the
# framer (one GIL release) per group, not per message, and one ack unit.
GROUP_MAX = 1024
GROUP_BYTES = 1 << 20
# How often the pipeline hands the flush watermark over (acks go out then):
# in-flight messages count against max_ack_pending until acked.
COMMIT_INTERVAL = 0.05
LAG_INTERVAL = 1.0  # between reads of the consumer's num_pending
PAUSE_ABOVE = 0.9  # ring usage above which nothing is fetched
# After a stop, how long the records of a group cut short may still wait for
# ring room (the workers drain meanwhile; only a stalled sink uses it all).
STOP_FLUSH = 0.5
MIN_PAUSE = 0.0005
# upstream_pressure(): the backlog is at least this many rings of records.
PRESSURE_RINGS = 1.0
RECORDS_HEADER = "Logpipe-Records"
FRAMING_HEADER = "Logpipe-Framing"
FRAMING_NDJSON = "ndjson"
INSTALL_HINT = "pip install 'logpipe[nats]'"

_T = TypeVar("_T")


def _import_nats(name: str) -> Any:
    try:
        import nats  # noqa: PLC0415 - optional dependency, imported when used
        import nats.errors  # noqa: PLC0415
        import nats.js.api  # noqa: PLC0415
        import nats.js.errors  # noqa: PLC0415
    except ImportError:
        raise SourceError(
            f"{name}: the nats source needs the nats-py package, which is not installed ({INSTALL_HINT})"
        ) from None
    return nats


def check_batch(headers: dict[str, str], body: bytes) -> str | None:
    """Why a batch message (one with ``Logpipe-Records``) is bad input, or None.

    The sink's contract: ``Logpipe-Framing: ndjson`` and a body of exactly
    ``Logpipe-Records`` records, each followed by ``\\n``.
    """
    framing = headers.get(FRAMING_HEADER, FRAMING_NDJSON)
    if framing != FRAMING_NDJSON:
        return f"batch message: unknown {FRAMING_HEADER} {framing[:64]!r} (only {FRAMING_NDJSON!r})"
    text = headers.get(RECORDS_HEADER, "").strip()
    if not (text.isascii() and text.isdigit()):
        return f"batch message: {RECORDS_HEADER} {text[:64]!r} is not a count"
    count = int(text)
    found = body.count(b"\n")
    if found != count or (body and not body.endswith(b"\n")):
        tail = "" if not body or body.endswith(b"\n") else " and a partial one"
        return f"batch message: {RECORDS_HEADER} says {count} records, the body holds {found}{tail}"
    return None


class NatsSource:
    """Reads a JetStream stream through a durable pull consumer shared by a group of logpipes.

    Connects, checks the stream and creates (or checks) the consumer before
    returning, so a wrong server, stream or consumer fails at startup.

    Args:
        host, port: the nats-server to connect to (the client learns the
            cluster's other servers from it and fails over to them).
        subject: the consumer's filter subject (wildcards allowed).
        durable: the consumer's name; every process using it shares the messages.
        context: ring_capacity, format, max_line, metrics, dead_letter.
        stream: the stream; None: the one that takes ``subject``.
        ack_wait: of a consumer created here, in seconds.
        max_ack_pending: of a consumer created here; default the ring's capacity.
        connect_timeout: longest wait to connect and set up at startup.
        reconnect_wait: pause between reconnection attempts.
        fetch_wait: longest a pull request lingers on the server when nothing waits.

    Raises:
        SourceError: nats-py is missing, the server cannot be reached, has no
            JetStream, the stream is missing, or the consumer does not fit.
        ValueError: ``max_ack_pending`` above the ring's capacity.

    Attributes:
        name: the spec, ``nats://HOST:PORT/SUBJECT?stream=S&durable=D``.
        stream: the stream read.
        ack_wait, max_ack_pending: the consumer's, as the server reports them.
        created_consumer: whether this process created the consumer.
        messages: messages received and pushed (or dead-lettered).
        records: records pushed into the ring.
        redelivered: messages received that had been delivered before.
        redelivered_records: records those messages held (the possible duplicates).
        bad_messages: batch messages rejected as bad input.
        acked, nacked: acknowledgements sent.
        reacks: times the recent acks were sent again (after a reconnect or
            a change of the consumer's leader).
        pauses: times fetching paused because the ring was over 90% full.
        max_outstanding: the most messages held unacknowledged at once.
    """

    def __init__(
        self,
        host: str,
        port: int,
        subject: str,
        durable: str,
        *,
        context: SourceContext,
        stream: str | None = None,
        ack_wait: float = DEFAULT_ACK_WAIT,
        max_ack_pending: int | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        reconnect_wait: float = RECONNECT_WAIT,
        fetch_wait: float = FETCH_WAIT,
    ) -> None:
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        query = f"?stream={stream}&durable={durable}" if stream else f"?durable={durable}"
        self.name = f"nats://{hostport}/{subject}{query}"
        self.capacity = context.ring_capacity
        limit = max_ack_pending if max_ack_pending is not None else self.capacity
        if not 1 <= limit <= self.capacity:
            raise ValueError(
                f"{self.name}: max_ack_pending {limit} must be 1 to the ring's capacity ({self.capacity}, --channel-size)"
            )
        self._nats = _import_nats(self.name)
        self.url = f"nats://{hostport}"
        self.subject = subject
        self.durable = durable
        self.stream = stream
        self.context = context
        self.ack_wait = ack_wait
        self.max_ack_pending = limit
        self.created_consumer = False
        self._connect_timeout = connect_timeout
        self._reconnect_wait = reconnect_wait
        self._fetch_wait = fetch_wait

        self.messages = 0
        self.records = 0
        self.redelivered = 0
        self.redelivered_records = 0
        self.bad_messages = 0
        self.acked = 0
        self.nacked = 0
        self.reacks = 0
        self.pauses = 0
        self.max_outstanding = 0
        self.last_error: str | None = None
        self._lag: UpstreamLag | None = None

        # (records pushed once this group of messages was in, the group), in
        # push order: run() appends, commit() pops what the watermark covers.
        self._entries: collections.deque[tuple[int, list[Any]]] = collections.deque()
        self._outstanding = 0  # messages in _entries
        self._entries_lock = threading.Lock()
        self._unpushed: list[Any] = []  # received, not (fully) pushed when run() stopped
        # Messages arrive on the loop thread (one pull request open at a
        # time) and wait here for the source thread; deque ends are thread-safe.
        self._inbound: collections.deque[Any] = collections.deque()
        self._arrived = threading.Event()
        self._request_open = False  # set by run(), cleared by the loop when the request ends
        self._request_id = 0
        self._request_left = 0
        self._inbox = ""
        self._next_subject = ""
        self._acking: list[concurrent.futures.Future[None]] = []  # acks sent by commit()
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._lines: LineInput | None = None
        self._lag_task: asyncio.Task[None] | None = None
        # The ack subjects of the last max_ack_pending messages acked (not the
        # messages: their bodies would stay in memory), to ack again when acks
        # may have been lost (see _reack); sized once the consumer's limit is known.
        self._recent: collections.deque[str] = collections.deque(maxlen=1)
        self._leader: str | None = None
        self._closed = False
        self._loop_thread = LoopThread("logpipe-nats-source", SourceError)
        self._loop = self._loop_thread.loop
        try:
            # Connecting, then the setup and its retries (SETUP_PATIENCE), each of a few requests.
            self._call(self._start(), timeout=(SETUP_PATIENCE + 5) * connect_timeout + 5)
        except BaseException:
            self._stop_loop()
            raise
        context.metrics.bind_upstream(self.lag)

    # -- what the pipeline and the autoscaler read ----------------------------

    commit_interval: ClassVar[float] = COMMIT_INTERVAL  # the pipeline's pace for commit()

    def lag(self) -> UpstreamLag | None:
        """The consumer's last known lag (read once a second); None until first read."""
        lag = self._lag
        if lag is None:
            return None
        return UpstreamLag(lag.pending, lag.ack_pending, self.redelivered)

    def upstream_pressure(self) -> bool:
        """Whether the stream's backlog for the group is at least a ring's worth of records.

        For ``AutoScaler(external_pressure=source.upstream_pressure)``: a
        backlog waiting upstream is load the ring cannot show, since the
        source fetches no more than it has room for. Records per message
        are estimated from what has arrived (1 before anything has).
        """
        lag = self._lag
        if lag is None:
            return False
        per_message = self.records / self.messages if self.messages else 1.0
        return lag.pending * max(per_message, 1.0) >= PRESSURE_RINGS * self.capacity

    def lines_waiting(self) -> int:
        """Records framed but waiting for room in the ring (the ring is full)."""
        lines = self._lines
        return int(lines.framer.pending_lines) if lines is not None else 0

    @property
    def outstanding(self) -> int:
        """Messages pushed and not yet acknowledged."""
        return self._outstanding

    # -- the source thread ------------------------------------------------------

    def run(self, ring: Ring, stop: StopFlag) -> None:
        """Pull messages and push their records until ``stop`` is set."""
        if self._closed:
            raise RuntimeError(f"{self.name}: run() was called after close()")
        lines = self._lines = LineInput(ring, self.context, self.name)
        inbound = self._inbound
        while not stop.is_set() and not lines.closed:
            self._arrived.clear()
            if inbound:
                room = int((1.0 - ring.usage) * self.capacity)
                group = _take_group(inbound, room)
                if not self._deliver(group, lines, stop):
                    self._unpushed.extend(group)
                    return
                continue
            usage = ring.usage
            if usage > PAUSE_ABOVE:
                # The workers are behind: ask for nothing, the stream keeps the backlog.
                self.pauses += 1
                self.context.metrics.backpressure_sleeps.add()
                _sleep(stop, max(backpressure_sleep(usage), MIN_PAUSE))
                continue
            if not self._request_open:
                room = int((1.0 - usage) * self.capacity)
                per_message = self.records / self.messages if self.messages else 1.0
                self._request_open = True
                want = max(1, min(FETCH_MAX, int(room / max(per_message, 1.0))))
                self._loop.call_soon_threadsafe(self._pull, want)
            self._arrived.wait(PUSH_SLICE)

    def _deliver(self, group: list[Any], lines: LineInput, stop: StopFlag) -> bool:
        """Push the records of a group of messages; False if stopped (or the ring closed) first."""
        parts: list[bytes] = []
        for msg in group:
            data = msg.data
            headers = msg.headers
            if headers and RECORDS_HEADER in headers:
                problem = check_batch(headers, data)
                if problem is not None:
                    self.bad_messages += 1
                    self.context.dead_letter.reject(self.name, problem, data, len(data))
                    self.context.metrics.invalid.add(1)
                    continue
                parts.append(data)
                count = data.count(b"\n")
            else:
                parts.append(data)  # a per-record message: one line
                parts.append(b"\n")
                count = 1
            if _num_delivered(msg) > 1:
                self.redelivered += 1
                self.redelivered_records += count
        body = b"".join(parts)
        before = lines.records
        if body and not _push(lines, body, stop):
            return False
        self.records += lines.records - before
        self.messages += len(group)
        with self._entries_lock:
            self._entries.append((lines.records, group))
            self._outstanding += len(group)
            self.max_outstanding = max(self.max_outstanding, self._outstanding)
        return True

    # -- acknowledgements -------------------------------------------------------

    def commit(self, watermark: int) -> None:
        """Acknowledge every message whose records are all among the first ``watermark`` written.

        Args:
            watermark: how many of this source's first records sinks have
                written (the pipeline's flush watermark).
        """
        done = []
        with self._entries_lock:
            entries = self._entries
            while entries and entries[0][0] <= watermark:
                group = entries.popleft()[1]
                self._outstanding -= len(group)
                done.extend(group)
        if done and not self._loop.is_closed():
            # Not waited for: a publish each, buffered by the client. close()
            # waits for them and flushes them to the server before it disconnects.
            future = asyncio.run_coroutine_threadsafe(self._reply(done, ack=True), self._loop)
            with self._entries_lock:
                self._acking = [f for f in self._acking if not f.done()]
                self._acking.append(future)

    def close(self) -> None:
        """Give back what was not written (nak), flush the acks, disconnect; idempotent.

        The pipeline calls it after its last commit. Never waits for a
        server that is down longer than ``connect_timeout``.
        """
        if self._closed:
            return
        self._closed = True
        # The pull request open at the stop may still bring messages: let it end
        # (its expiry bounds the wait), then give back everything never pushed.
        deadline = time.monotonic() + self._fetch_wait + REQUEST_GRACE
        while self._request_open and time.monotonic() < deadline and not self._loop.is_closed():
            time.sleep(PUSH_SLICE)
        back = list(self._unpushed)
        self._unpushed.clear()
        while self._inbound:
            back.append(self._inbound.popleft())
        with self._entries_lock:
            for _, group in self._entries:  # pushed, never written
                back.extend(group)
            self._entries.clear()
            self._outstanding = 0
            acking, self._acking = self._acking, []
        # The last commit's acks go out before the connection is flushed and closed.
        concurrent.futures.wait(acking, timeout=self._connect_timeout)
        try:
            self._call(self._shutdown(back), timeout=4 * self._connect_timeout + 5)
        except (SourceError, concurrent.futures.CancelledError):
            pass  # unacked messages are redelivered after ack_wait: nothing is lost
        finally:
            self._stop_loop()

    # -- the loop thread --------------------------------------------------------

    def _stop_loop(self) -> None:
        self._loop_thread.stop()

    def _call(self, coro: Coroutine[Any, Any, _T], *, timeout: float) -> _T:
        """Run ``coro`` on the loop thread and wait for its result."""
        return self._loop_thread.call(coro, timeout=timeout, what=self.name)

    # -- coroutines (on the loop thread) ----------------------------------------

    def _note_error(self, line: str) -> None:
        self.last_error = line

    async def _start(self) -> None:
        nats = self._nats
        nc = nats.NATS()
        self._nc = nc

        async def reconnected_cb() -> None:
            asyncio.ensure_future(self._reack_when_ready())

        await connect(
            nc, self.url, client_name="logpipe-source",
            connect_timeout=self._connect_timeout, reconnect_wait=self._reconnect_wait,
            on_error=self._note_error,
            cannot_connect=lambda reason: SourceError(f"{self.name}: {reason}"),
            reconnected_cb=reconnected_cb,
        )
        try:
            self._js = nc.jetstream(timeout=self._connect_timeout)
            await self._setup_consumer()
            # Pulled messages come to this inbox; one request is open at a time,
            # so the client never queues more than FETCH_MAX of them.
            self._inbox = nc.new_inbox()
            self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
            self._sub = await nc.subscribe(
                self._inbox, cb=self._on_message, pending_msgs_limit=4 * FETCH_MAX, pending_bytes_limit=512 << 20
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 1)
            raise
        self._lag_task = asyncio.ensure_future(self._poll_lag())

    async def _setup_consumer(self) -> None:
        """Find the stream and find or create the durable consumer; SourceError naming what is wrong.

        A request that times out is tried again, up to ``SETUP_PATIENCE``
        times the connect timeout in all (see there); every other answer
        is final.
        """
        errors = self._nats.js.errors
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETUP_PATIENCE * self._connect_timeout
        while True:
            try:
                await self._find_or_create_consumer()
                return
            except errors.ServiceUnavailableError:
                raise SourceError(
                    f"{self.name}: the server has no JetStream (start nats-server with -js)"
                ) from None
            except (self._nats.errors.TimeoutError, asyncio.TimeoutError) as exc:
                if loop.time() + SETUP_RETRY_PAUSE >= give_up:
                    raise SourceError(f"{self.name}: cannot set up the consumer ({describe(exc)})") from None
                await asyncio.sleep(SETUP_RETRY_PAUSE)
            except (errors.APIError, self._nats.errors.Error) as exc:
                raise SourceError(f"{self.name}: cannot set up the consumer ({describe(exc)})") from None

    async def _find_or_create_consumer(self) -> None:
        errors = self._nats.js.errors
        api = self._nats.js.api
        js = self._js
        if self.stream is None:
            try:
                self.stream = await js.find_stream_name_by_subject(self.subject)
            except errors.NotFoundError:
                raise SourceError(f"{self.name}: no JetStream stream takes subject {self.subject!r}") from None
        else:
            try:
                await js.stream_info(self.stream)
            except errors.NotFoundError:
                raise SourceError(
                    f"{self.name}: no JetStream stream {self.stream!r} (the agents' nats sink "
                    "creates it with --nats-stream NAME, or create it first)"
                ) from None
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except errors.NotFoundError:
            config = api.ConsumerConfig(
                durable_name=self.durable,
                name=self.durable,
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=self.max_ack_pending,
                filter_subject=self.subject,
            )
            try:
                info = await js.add_consumer(self.stream, config=config)
                self.created_consumer = True
            except errors.BadRequestError:
                # Another member of the group created it meanwhile: use theirs.
                info = await js.consumer_info(self.stream, self.durable)
        self._check_consumer(info)

    def _check_consumer(self, info: Any) -> None:
        api = self._nats.js.api
        config = info.config
        problem = None
        if config.deliver_subject:
            problem = "is a push consumer (logpipe needs a pull consumer)"
        elif config.ack_policy not in (api.AckPolicy.EXPLICIT, "explicit"):
            problem = f"has ack policy {config.ack_policy!s} (logpipe needs explicit acks)"
        elif (config.filter_subject or None) != self.subject or config.filter_subjects:
            shown = config.filter_subjects or config.filter_subject or "every subject"
            problem = f"filters {shown!r}, not {self.subject!r}"
        if problem:
            raise SourceError(f"{self.name}: consumer {self.durable!r} of stream {self.stream!r} {problem}")
        if config.ack_wait:
            self.ack_wait = float(config.ack_wait)
        if config.max_ack_pending and config.max_ack_pending > 0:
            self.max_ack_pending = int(config.max_ack_pending)
        self._lag = UpstreamLag(int(info.num_pending or 0), int(info.num_ack_pending or 0))
        self._recent = collections.deque(maxlen=self.max_ack_pending)
        self._leader = info.cluster.leader if info.cluster else None

    def _pull(self, want: int) -> None:
        """Ask for up to ``want`` messages (on the loop thread; run() has marked a request open)."""
        self._request_id += 1
        self._request_left = want
        request = orjson.dumps({"batch": want, "expires": int(self._fetch_wait * 1e9)})
        self._loop.call_later(self._fetch_wait + REQUEST_GRACE, self._give_up, self._request_id)
        asyncio.ensure_future(self._send_request(request))

    async def _send_request(self, request: bytes) -> None:
        try:
            # Buffered by the client, also while it reconnects.
            await self._nc.publish(self._next_subject, request, reply=self._inbox)
        except Exception as exc:  # noqa: BLE001 - closed or buffer full: run() asks again after the grace
            self.last_error = describe(exc)

    def _give_up(self, request_id: int) -> None:
        # The request's end never came (a reconnect lost it): allow a new one.
        if request_id == self._request_id and self._request_open:
            self._end_request()

    def _end_request(self) -> None:
        self._request_open = False
        self._arrived.set()

    async def _on_message(self, msg: Any) -> None:
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status and not msg.data and not msg.reply:
            # 404 no messages, 408 expired, 409 leader change or limits: the
            # request is over (100 is a heartbeat, which is not asked for).
            if status != "100":
                if status not in ("404", "408"):
                    self.last_error = f"pull request ended: {status} {headers.get('Description', '')}"
                self._end_request()
            return
        self._inbound.append(msg)
        self._request_left -= 1
        if self._request_left <= 0:
            self._end_request()
        else:
            self._arrived.set()

    async def _reply(self, msgs: list[Any], *, ack: bool) -> None:
        for msg in msgs:
            try:
                if ack:
                    await msg.ack()
                    self.acked += 1
                    self._recent.append(msg.reply)
                else:
                    await msg.nak()
                    self.nacked += 1
            except Exception as exc:  # noqa: BLE001 - redelivered after ack_wait: nothing is lost
                self.last_error = describe(exc)

    async def _poll_lag(self) -> None:
        failed = False
        while True:
            await asyncio.sleep(LAG_INTERVAL)
            try:
                info = await self._js.consumer_info(self.stream, self.durable)
            except Exception as exc:  # noqa: BLE001 - an outage: keep the last values
                self.last_error = describe(exc)
                failed = True
                continue
            self._lag = UpstreamLag(int(info.num_pending or 0), int(info.num_ack_pending or 0))
            leader = info.cluster.leader if info.cluster else None
            # A new leader, or an answer after none: acks may have gone nowhere meanwhile.
            if leader != self._leader or failed:
                self._leader = leader
                failed = False
                await self._reack()

    async def _reack_when_ready(self) -> None:
        # A restarted server takes a moment to recover its streams: acks sent
        # before the consumer is back go nowhere. Wait for it (bounded), then ack.
        for _ in range(20):
            try:
                await self._js.consumer_info(self.stream, self.durable)
                break
            except Exception:  # noqa: BLE001 - not recovered yet
                await asyncio.sleep(0.25)
        await self._reack()

    async def _reack(self) -> None:
        """Ack the last max_ack_pending acked messages again.

        An ack is a plain publish: one sent while the consumer's leader was
        being re-elected (its server died) or sitting in a dead server's
        socket is lost, and the message would be delivered again after
        ack_wait, a duplicate. Acks can only be lost for messages delivered
        before the loss, of which this process holds at most max_ack_pending,
        so sending those acks again once a reconnect or a new leader is seen
        saves every such duplicate that ack_wait has not already caused. An
        ack for a message already acked changes nothing.
        """
        recent = list(self._recent)
        if not recent:
            return
        self.reacks += 1
        publish = self._nc.publish
        for reply in recent:
            try:
                await publish(reply, b"+ACK")
            except Exception as exc:  # noqa: BLE001 - redelivered after ack_wait: nothing is lost
                self.last_error = describe(exc)
                return

    async def _shutdown(self, back: list[Any]) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(BaseException):
                await self._lag_task
        nc = self._nc
        if nc is None or nc.is_closed:
            return
        await self._reply(back, ack=False)
        # Acks and naks are buffered publishes: the PING/PONG of a flush
        # means the server has read them all.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            if nc.is_connected:
                await nc.flush(timeout=self._connect_timeout)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(nc.close(), self._connect_timeout)

    def __repr__(self) -> str:
        return f"<NatsSource {self.name} messages={self.messages} records={self.records}>"


def _push(lines: LineInput, body: bytes, stop: StopFlag) -> bool:
    """Frame ``body`` into the ring; True once every record of it is in (or rejected).

    A stop that finds records still waiting for room gives them STOP_FLUSH
    more: a group cut short is given back whole, and its records already in
    the ring would then be delivered twice.
    """
    if lines.feed(body, stop):
        return True
    framer = lines.framer
    deadline = time.monotonic() + STOP_FLUSH
    while framer.pending_lines and not framer.closed and time.monotonic() < deadline:
        framer.feed(b"", timeout=PUSH_SLICE)
    lines.report()
    return not framer.pending_lines


def _take_group(inbound: collections.deque[Any], room: int) -> list[Any]:
    """Waiting messages, oldest first: at least one, then while their records fit in
    ``room`` (so the framer does not hold many records waiting for the ring), up to
    GROUP_MAX messages and about GROUP_BYTES."""
    group = [inbound.popleft()]
    records = _records_in(group[0])
    size = len(group[0].data)
    while inbound and len(group) < GROUP_MAX and size < GROUP_BYTES:
        msg = inbound[0]
        count = _records_in(msg)
        if records + count > room:
            break
        group.append(inbound.popleft())
        records += count
        size += len(msg.data)
    return group


def _records_in(msg: Any) -> int:
    """The records a message says it holds: its Logpipe-Records count, else 1."""
    headers = msg.headers
    if headers and RECORDS_HEADER in headers:
        text = headers[RECORDS_HEADER].strip()
        return int(text) if text.isascii() and text.isdigit() else 1
    return 1


def _num_delivered(msg: Any) -> int:
    """How often JetStream has delivered ``msg``, from its ack subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>``,
    or the newer form with domain and account hash before the stream (and
    possibly a token after the pending count).
    """
    reply = msg.reply or ""
    tokens = reply.split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[4])
        if len(tokens) >= 11:
            return int(tokens[6])
    except ValueError:
        pass
    return 1  # not a JetStream message: delivered once, as far as we know


def _sleep(stop: StopFlag, seconds: float) -> None:
    wait = getattr(stop, "wait", None)
    if wait is not None:
        wait(seconds)
    else:
        time.sleep(seconds)
