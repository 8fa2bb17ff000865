"""``logpipe.logging.LogpipeHandler``: a logging handler that never writes in the caller's thread.

Each record is rendered to one JSON line (see logpipe._logjson) and put on a
:class:`~logpipe.RingBuffer`; background workers, the same
:class:`~logpipe.application.Worker` and :class:`~logpipe.application.WorkerPool`
that ``logpipe run`` uses, take batches off the ring and write each with
one call to any logpipe sink (``file:PATH`` with rotation, ``stdout``,
``nats://HOST:PORT/SUBJECT``...). A failing sink is retried with backoff.

The calling thread pays for the rendering and one put, nothing else: no
handler lock (the ring is thread-safe, so ``handle`` skips
``Handler.acquire``; a Formatter, when one is set, is therefore called from
many threads at once), no Formatter unless one is set, no copy of the
record, and no wake-up of a worker (see :class:`_HandlerRing`).

When the ring is full:

* ``when_full="block"`` (the default): the caller waits for room. Nothing
  is lost, and a stalled sink slows the program down instead of filling
  its memory.
* ``when_full="drop"``: the record is dropped and counted
  (:attr:`LogpipeHandler.dropped`); the caller never waits. A warning line
  goes to stderr (written directly, not through logging, which could
  recurse into this handler) at most once per ``drop_report_interval``.

Lifecycle: :meth:`LogpipeHandler.flush` waits until everything logged
before it is written; :meth:`LogpipeHandler.close` closes the ring, lets the
workers drain it and closes the sink. At interpreter exit an atexit hook
flushes and ``logging.shutdown()`` (which logging runs at exit, after that
hook) closes. A record logged after close() cannot reach the sink any more:
its line is written to stderr instead, so it is not lost silently.

SIGTERM: by default a process killed by SIGTERM dies without running atexit,
and whatever is in the ring would be lost. So, unless ``sigterm=False``,
the first handler created in the main thread while SIGTERM has its default
action installs a handler that raises ``SystemExit(143)`` in the main
thread: ``finally`` blocks and atexit run, and the ring is flushed. A
program that has its own SIGTERM handler keeps it (it decides how to exit).

fork: a forked child has copies of the handlers but none of their threads;
there they send records to stderr (see _after_fork_in_child).
See docs/logging.md for the whole story.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any

from logpipe._logjson import render
from logpipe._ringbuf import RingBuffer
from logpipe.application.autoscaler import AutoScaler
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pool import WorkerPool
from logpipe.application.worker import Worker
from logpipe.domain.config import PipelineConfig
from logpipe.domain.durations import parse_duration
from logpipe.domain.ports import Sink
from logpipe.exceptions import Closed, ConfigError, Full

__all__ = ["LogpipeHandler"]

_NAME = "LogpipeHandler"
_OWN_THREADS = "logpipe-"  # how the pipeline's threads are named (workers, scaler, NATS loop)
_PREFIX = "logpipe.logging: "
_WHEN_FULL = ("block", "drop")
_HANDLE_RETURNS_RECORD = sys.version_info >= (3, 12)  # Handler.handle's contract there
_FLUSH_POLL = 0.005  # seconds between looks while flush() waits for the workers


class LogpipeHandler(logging.Handler):
    """A ``logging.Handler`` that hands JSON lines to background workers through a ring buffer.

    Args:
        sink: where the lines go: a sink spec (``"file:/var/log/app.ndjson"``,
            ``"stdout"``, ``"nats://127.0.0.1:4222/logs"``...) or an object
            with the Sink methods (``write_batch``, ``flush``, ``close``).
        level: the handler's level, as for any Handler.
        when_full: ``"block"`` (wait for room, lose nothing) or ``"drop"``
            (never wait, count what is dropped).
        capacity: records the ring holds.
        batch_size: most records per write.
        batch_timeout: longest a record waits for its batch to fill before
            it is written (seconds, or a duration such as ``"200ms"``).
        workers: worker threads started at once.
        max_workers: with more than ``workers``, an autoscaler adds workers
            while the ring is over 80% full and removes them below 20%
            (checked every ``scale_interval``).
        scale_interval: how often the autoscaler looks (seconds or duration).
        max_record_size: the longest line accepted, in bytes; a longer one is
            dropped, counted and reported on stderr.
        rotate_bytes, rotate_keep: file sink rotation (see docs/sinks.md).
        nats_stream: nats sink: the JetStream stream to create if missing.
        drop_report_interval: most one drop warning per this many seconds.
        sigterm: install the SIGTERM handler described in the module docstring.

    Raises:
        ConfigError: a bad value (one line naming it) or a sink that cannot
            be opened.
    """

    def __init__(
        self,
        sink: str | Sink,
        level: int | str = logging.NOTSET,
        *,
        when_full: str = "block",
        capacity: int = 8192,
        batch_size: int = 512,
        batch_timeout: float | str = 0.1,
        workers: int = 1,
        max_workers: int | None = None,
        scale_interval: float | str = 1.0,
        max_record_size: int = 1 << 20,
        rotate_bytes: int | None = None,
        rotate_keep: int = 5,
        nats_stream: str | None = None,
        drop_report_interval: float | str = 10.0,
        sigterm: bool = True,
    ) -> None:
        if when_full not in _WHEN_FULL:
            raise ConfigError(f"{_NAME}: when_full {when_full!r} is not one of 'block', 'drop'")
        capacity = _count("capacity", capacity)
        batch_size = _count("batch_size", batch_size)
        workers = _count("workers", workers)
        max_workers = workers if max_workers is None else _count("max_workers", max_workers)
        if max_workers < workers:
            raise ConfigError(f"{_NAME}: max_workers {max_workers} is below workers {workers}")
        max_record_size = _count("max_record_size", max_record_size)
        batch_timeout = _seconds("batch_timeout", batch_timeout)
        scale_interval = _seconds("scale_interval", scale_interval)
        drop_report_interval = _seconds("drop_report_interval", drop_report_interval)
        # Everything that can fail comes before Handler.__init__, which
        # registers the handler for logging.shutdown(): a handler that failed
        # to build must not be flushed and closed at exit.
        self.sink = _open(sink, rotate_bytes, rotate_keep, nats_stream)
        try:
            self.ring = _HandlerRing(capacity, max_record_size=max_record_size)
        except BaseException:
            self.sink.close()
            raise
        super().__init__(level)
        self.when_full = when_full
        self.metrics = Metrics()
        console = _WarningConsole()
        self._pool = WorkerPool(
            lambda worker_id: Worker(
                worker_id,
                self.ring,
                self.sink,
                batch_size=batch_size,
                batch_timeout=batch_timeout,
                metrics=self.metrics,
                console=console,
            ),
            min_workers=workers,
            max_workers=max_workers,
        )
        self.metrics.bind(
            produced=lambda: self.ring.pushed,
            queue_depth=lambda: len(self.ring),
            queue_capacity=capacity,
            workers=lambda: len(self._pool),
            in_batches=self._pool.pending,
        )
        self._scaler: AutoScaler | None = None
        if max_workers > workers:
            self._scaler = AutoScaler(
                self.ring,
                self._pool,
                metrics=self.metrics,
                console=console,
                interval=scale_interval,
                scale_up=0.8,
                scale_down=0.2,
            )
        # Block mode too tries without waiting first: only a full ring waits (see emit).
        self._put = self.ring.put_nowait
        self._close_lock = threading.Lock()
        self._closed = False
        self._late = 0  # records logged after close(), written to stderr
        self._abandoned = False  # a signal interrupted the exit flush
        self._forked = False  # this is a forked child's copy (see _after_fork_in_child)
        # Drop mode reports its drops once per interval; in block mode the only
        # drops are oversized records, each reported when it happens.
        self._reporter = _DropReporter(self.metrics, drop_report_interval) if when_full == "drop" else None
        self._pool.start()
        if self._scaler is not None:
            self._scaler.start()
        if self._reporter is not None:
            self._reporter.start()
        atexit.register(self._at_exit)
        _HANDLERS.add(self)
        if sigterm:
            _install_sigterm_exit()

    # -- what the calling thread runs -----------------------------------------

    def handle(self, record: logging.LogRecord) -> logging.LogRecord | bool:
        """Filter and emit, without the handler lock: the ring is thread-safe."""
        if self.filters:
            result = self.filter(record)
            if not result:
                return False
            if isinstance(result, logging.LogRecord):  # 3.12+: a filter may replace the record
                record = result
        self.emit(record)
        return record if _HANDLE_RETURNS_RECORD else True

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 - logging's name
        """Set the formatter that makes ``msg``; logging.basicConfig's default one is ignored.

        ``basicConfig(handlers=[...])`` gives every handler without a
        formatter its default ``%(levelname)s:%(name)s:%(message)s``: here
        that would repeat two fields of the line inside ``msg`` (and cost
        a Formatter call per record), so it counts as no formatter.
        """
        if (
            type(fmt) is logging.Formatter
            and fmt._fmt == logging.BASIC_FORMAT
            and fmt.datefmt is None
            and isinstance(fmt._style, logging.PercentStyle)
        ):
            fmt = None
        super().setFormatter(fmt)

    def emit(self, record: logging.LogRecord) -> None:
        """Render ``record`` to a JSON line and put it on the ring."""
        line = None
        try:
            line = render(record) if self.formatter is None else render(record, self.format(record))
            self._put(line)  # never waits: the ring's put_nowait
        except Full:
            if self.when_full == "drop":
                self.metrics.dropped.add(reason="full")
            elif threading.current_thread().name.startswith(_OWN_THREADS):
                # Logged by a thread of the pipeline itself (nats-py and asyncio
                # log from the sink's event loop): waiting for room there would
                # wait for the very thread that makes it. Dropped, counted.
                self.metrics.dropped.add(reason="logged_by_logpipe_thread")
            else:
                self._put_waiting(line, record)
        except Closed:
            self._write_late(line)
        except RecursionError:
            raise
        except ValueError:
            if line is not None and len(line) > self.ring.max_record_size:
                self._oversized(line)
            else:
                self.handleError(record)
        except Exception:  # noqa: BLE001 - as every Handler: report on stderr, never raise
            self.handleError(record)

    def _put_waiting(self, line: bytes, record: logging.LogRecord) -> None:
        """Block mode, ring full: wait for room (a signal's exception propagates)."""
        try:
            self.ring.put(line)
        except Closed:
            self._write_late(line)
        except Exception:  # noqa: BLE001 - as every Handler: report on stderr, never raise
            self.handleError(record)

    def _oversized(self, line: bytes) -> None:
        self.metrics.dropped.add(reason="too_large")
        _warn(
            f"dropped a log record of {len(line)} bytes: larger than "
            f"max_record_size={self.ring.max_record_size} (starts {line[:80]!r})"
        )

    def _write_late(self, line: bytes) -> None:
        with self._close_lock:
            self._late += 1
            first = self._late == 1
        if first and self._forked:
            _warn(
                f"process {os.getpid()} was forked from the one that created the handler and has none "
                "of its worker threads: its records go to stderr (create a LogpipeHandler after fork)"
            )
        elif first:
            _warn("a record was logged after the handler was closed; such records go to stderr")
        _write_stderr(line.decode("utf-8", "replace") + "\n")

    # -- counters ------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records dropped: the ring was full (``when_full="drop"``) or the line too large."""
        return self.metrics.dropped.value

    @property
    def written(self) -> int:
        """Records the sink has taken."""
        return self.metrics.processed.value

    @property
    def pending(self) -> int:
        """Records accepted and not yet written (in the ring or in a worker's batch)."""
        return len(self.ring) + self._pool.pending()

    @property
    def closed(self) -> bool:
        """Whether close() has run."""
        return self._closed

    # -- lifecycle -----------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record accepted before this call is written (or given up on).

        Args:
            timeout: seconds to wait at most; None waits as long as it takes
                (a sink that is down is retried until it comes back).

        Returns:
            True if they were written, False on timeout.
        """
        if self._abandoned or self._forked:
            return False  # the exit flush was given up on, or no workers here: do not wait
        target = self.ring.pushed
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._settled() < target:
            if not any(worker.alive for worker in self._pool.workers):
                break  # closed and joined: nothing will be written any more
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_FLUSH_POLL)
        try:
            self.sink.flush()
        except Exception as exc:  # noqa: BLE001 - flush is best effort: workers retry writes
            _warn(f"sink flush failed ({exc})")
        return self._settled() >= target

    def close(self) -> None:
        """Write everything accepted, stop the workers, close the sink; idempotent.

        In block mode this waits until the sink has taken every record (a
        sink that is down is retried until it comes back; a signal such as
        a second Ctrl+C interrupts the wait).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._at_exit)
        if self._forked:
            # The ring, pool and sink are the parent's (copies, their locks in
            # whatever state fork found them): the parent closes them.
            super().close()
            return
        try:
            if self._scaler is not None:
                self._scaler.stop()
            self.ring.close()
            if self._abandoned:
                _warn(f"exit flush abandoned: {self.pending} log records not written")
                return
            self._pool.join_all(timeout=math.inf)  # in slices: a signal can interrupt it
            try:
                self.sink.close()
            except Exception as exc:  # noqa: BLE001 - report it, and close the handler anyway
                _warn(f"closing the sink failed ({exc})")
        finally:
            if self._reporter is not None:
                self._reporter.stop()
            super().close()

    def _at_exit(self) -> None:
        # Runs before logging.shutdown (registered later, so called earlier):
        # flush only, so records logged by atexit hooks that run between
        # this one and logging.shutdown still reach the sink; shutdown closes.
        if self._scaler is not None:
            self._scaler.stop()  # from 3.12 no thread may start during shutdown: no scaling up now
        try:
            self.flush()
        except BaseException:
            # A signal (a second SIGTERM, Ctrl+C) ended the wait: the user
            # gives up on a sink that is down. Do not wait again in close().
            self._abandoned = True
            raise

    def _become_fork_copy(self) -> None:
        """In a forked child: no workers run here, so refuse records (they go to stderr)."""
        self._forked = True
        self._close_lock = threading.Lock()  # a parent thread may have held it at fork
        self._put = _refuse_in_fork

    def _settled(self) -> int:
        """Records whose fate is known: written, or refused for good by the sink."""
        return self.metrics.processed.value + self.metrics.undelivered.value

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        state = "closed" if self._closed else "open"
        return f"<{_NAME} {getattr(self.sink, 'name', self.sink)!s} ({level}) {self.when_full} {state}>"


# --- the ring ------------------------------------------------------------------------


class _HandlerRing(RingBuffer):
    """The handler's ring: after an idle spell, the first record is written at once.

    A worker gathering a batch parks with its need noted in the ring (the
    core's gathering, docs/ringbuffer.md): a put wakes it only once the
    batch can be had, so the logging thread pays no wake-up per record, the
    very cost this handler exists to avoid. The worker is also woken when
    the ring fills (a put that finds no room, in either ``when_full``
    mode), and by its timeout, stop signal or close. The flush rule is the
    pipeline's (a full batch, or ``timeout``), with one addition: a worker
    that finds the ring empty waits for one record only and writes it at
    once, so an idle program's next line is not held back for the batch
    timeout. The call after such a lone record gathers as usual, even from
    an empty ring: otherwise a trickle of records, each finding the ring
    empty, would be written one by one, a wake-up each.
    """

    _after_lone = False  # the last call took a lone record from an idle ring

    def get_batch(
        self, max_items: int, timeout: float | None = None, *, stop: Any = None, hold: bool = False
    ) -> Any:
        if len(self) or self._after_lone:
            self._after_lone = False
            return super().get_batch(max_items, timeout, stop=stop, hold=hold)
        batch = super().get_batch(1, timeout, stop=stop, hold=hold)  # idle: park until a record comes
        self._after_lone = len(batch) == 1
        return batch


# --- helpers ---------------------------------------------------------------------


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{_NAME}: {name} {value!r} must be an integer >= 1")
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, str):
        seconds = parse_duration(value, name=f"{_NAME}: {name}")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ConfigError(f"{_NAME}: {name} {value!r} is not a number of seconds or a duration")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{_NAME}: {name} {value!r} must be more than 0 seconds")
    return seconds


def _open(sink: str | Sink, rotate_bytes: int | None, rotate_keep: int, nats_stream: str | None) -> Sink:
    if not isinstance(sink, str):
        if not all(callable(getattr(sink, name, None)) for name in ("write_batch", "flush", "close")):
            raise ConfigError(f"{_NAME}: sink {sink!r} is neither a sink spec nor a Sink")
        return sink
    from logpipe.infrastructure.registry import open_sink  # noqa: PLC0415 - infrastructure, at the edge

    if rotate_bytes is not None:
        rotate_bytes = _count("rotate_bytes", rotate_bytes)
    settings = PipelineConfig(
        rotate_bytes=rotate_bytes, rotate_keep=_count("rotate_keep", rotate_keep), nats_stream=nats_stream
    )
    return open_sink(sink, label=f"{_NAME} sink", settings=settings)


def _write_stderr(text: str) -> None:
    """Write to the current sys.stderr; never raises (stderr may be closed at exit)."""
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


def _warn(message: str) -> None:
    _write_stderr(f"{_PREFIX}{message}\n")


class _WarningConsole(Console):
    """The workers' and autoscaler's lines, as an application's stderr wants them.

    A sink failure and its retries are worth a line on stderr. The progress
    lines meant for the operator of ``logpipe run`` (each shutdown flush,
    each scaling step) are not: every close() would print them.
    """

    def say(self, line: str) -> None:
        _warn(line)

    def progress(self, line: str) -> None:
        pass  # routine progress: not for an application's stderr


class _DropReporter:
    """A thread that writes one stderr line per interval in which records were dropped."""

    def __init__(self, metrics: Metrics, interval: float) -> None:
        self._metrics = metrics
        self._interval = interval
        self._reported = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="logpipe-logging-drops", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        self.report()  # whatever the last interval dropped

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.report()

    def report(self) -> None:
        dropped = self._metrics.dropped.by_reason()
        total = sum(dropped.values())
        new, self._reported = total - self._reported, total
        if new > 0:
            reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(dropped.items()))
            _warn(f"dropped {new} log records (the ring was full or a record too large; {total} in all: {reasons})")


def _refuse_in_fork(line: bytes) -> None:
    raise Closed("a forked copy of the handler has no workers")


# --- fork ------------------------------------------------------------------------

# A forked child has a copy of each handler's ring but none of its threads:
# records put there would never be written, and in block mode the child
# would wait for ever once the copy is full. So in the child every handler
# sends its records to stderr (with a notice) until one is made there.
_HANDLERS: weakref.WeakSet[LogpipeHandler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for handler in list(_HANDLERS):
        handler._become_fork_copy()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- SIGTERM ---------------------------------------------------------------------

_sigterm_installed = False
_sigterm_lock = threading.Lock()


def _install_sigterm_exit() -> None:
    """Make SIGTERM raise SystemExit(143) in the main thread, if nobody else handles it.

    Only from the main thread (the only one that may set handlers) and only
    over the default action: a program with its own handler keeps it. Once
    installed it stays for the life of the process, for every handler.
    """
    global _sigterm_installed
    if threading.current_thread() is not threading.main_thread():
        return
    with _sigterm_lock:
        if _sigterm_installed or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        _sigterm_installed = True


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)

