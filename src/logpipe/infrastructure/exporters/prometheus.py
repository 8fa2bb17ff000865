"""``--metrics-addr HOST:PORT``: the pipeline's numbers for Prometheus, and ``/health``.

A custom collector reads the run's one
:class:`~logpipe.application.metrics.Metrics` at scrape time, so the
endpoint, the console line and the final report show the same numbers and
nothing is counted twice. A small ``ThreadingHTTPServer`` serves it in a
daemon thread:

- ``GET /metrics``: the Prometheus text format (see :class:`MetricsCollector`
  for the names);
- ``GET /health``: ``200 ok``, or ``503`` with one line saying why once the
  sink has failed every write for longer than the health threshold.

Usage (what the CLI does)::

    server = start(pipeline, "127.0.0.1:9108")   # prints "Metrics: http://..."
    try:
        report = pipeline.run()
    finally:
        server.stop()
"""

from __future__ import annotations

import ipaddress
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from logpipe._waits import join_thread
from logpipe.application.metrics import HistogramSnapshot, Metrics
from logpipe.exceptions import ConfigError

__all__ = ["MetricsCollector", "MetricsServer", "health", "parse_address", "start"]

FLAG = "--metrics-addr"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_HEALTH_THRESHOLD = 30.0
# How often the serving thread looks for a shutdown request.
POLL_INTERVAL = 0.05


class MetricsCollector(Collector):
    """Reads a :class:`Metrics` whenever Prometheus scrapes.

    Counters: ``logpipe_records_produced_total``, ``_processed_total``,
    ``_dropped_total{reason}``, ``_invalid_total``, ``_undelivered_total``,
    ``logpipe_batches_flushed_total``, ``logpipe_backpressure_sleeps_total``,
    ``logpipe_scale_events_total{direction}``, ``logpipe_sink_errors_total``,
    ``logpipe_ledger_alarms_total``.
    Gauges: ``logpipe_queue_depth``, ``_capacity``, ``_usage``,
    ``logpipe_workers``, ``logpipe_sink_failing_seconds``, and the loss
    ledger: ``logpipe_ledger_received``, ``_delivered``, ``_in_ring``,
    ``_in_batches``, ``_dropped``, ``_invalid``, ``_undelivered``,
    ``_balanced`` (1 or 0).
    With a consuming source (NATS) only: ``logpipe_upstream_pending`` and
    ``logpipe_upstream_ack_pending`` (gauges, messages) and
    ``logpipe_upstream_redelivered_total`` (counter).
    Histograms (seconds, per batch written):
    ``logpipe_flush_duration_seconds``, ``logpipe_enqueue_to_flush_seconds``.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        # Without describe(), registering would call collect() once at start.
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        snap = m.snapshot()
        ledger = m.ledger()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield counter("logpipe_records_produced_total", "Records that entered the ring.", snap.produced)
        yield counter("logpipe_records_processed_total", "Records the sink accepted.", snap.processed)
        dropped = CounterMetricFamily(
            "logpipe_records_dropped_total", "Records discarded on purpose, by reason.", labels=["reason"]
        )
        for reason, count in sorted(m.dropped.by_reason().items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield counter(
            "logpipe_records_invalid_total", "Lines a source rejected (malformed, oversized).", snap.invalid
        )
        yield counter(
            "logpipe_records_undelivered_total",
            "Records of batches the sink refused for good (lost, and known to be).",
            m.undelivered.value,
        )
        yield counter("logpipe_batches_flushed_total", "Batches written to the sink.", snap.batches_flushed)
        yield counter(
            "logpipe_backpressure_sleeps_total",
            "Times the producer slept because the ring was filling.",
            snap.backpressure_sleeps,
        )
        scale = CounterMetricFamily(
            "logpipe_scale_events_total", "Workers added (up) and removed (down).", labels=["direction"]
        )
        scale.add_metric(["up"], snap.scale_ups)
        scale.add_metric(["down"], snap.scale_downs)
        yield scale
        yield counter("logpipe_sink_errors_total", "Failed sink writes (each retry counts).", snap.sink_errors)
        yield counter(
            "logpipe_ledger_alarms_total",
            "Live ledger checks that did not balance.",
            m.ledger_alarms.value,
        )

        yield gauge("logpipe_queue_depth", "Records in the ring now.", snap.queue_depth)
        yield gauge("logpipe_queue_capacity", "The ring's capacity, in records.", snap.queue_capacity)
        yield gauge(
            "logpipe_queue_usage", "Ring occupancy, 0-1 (the larger of records and bytes).", m.queue_usage()
        )
        yield gauge("logpipe_workers", "Running workers.", snap.workers)
        yield gauge(
            "logpipe_sink_failing_seconds",
            "How long every sink write has been failing; 0 after a success.",
            m.sink_health.failing_for(time.monotonic()),
        )

        if snap.upstream is not None:
            yield gauge(
                "logpipe_upstream_pending",
                "Messages in the upstream stream not yet delivered to the consumer group.",
                snap.upstream.pending,
            )
            yield gauge(
                "logpipe_upstream_ack_pending",
                "Upstream messages delivered to the consumer group and not yet acknowledged.",
                snap.upstream.ack_pending,
            )
            yield counter(
                "logpipe_upstream_redelivered_total",
                "Upstream messages this process received more than once (duplicates).",
                snap.upstream.redelivered,
            )

        yield _histogram(
            "logpipe_flush_duration_seconds",
            "Time to flush a batch: the sink write with its retries.",
            m.flush_duration.snapshot(),
        )
        yield _histogram(
            "logpipe_enqueue_to_flush_seconds",
            "From a batch's oldest record entering the ring to the batch written.",
            m.enqueue_to_flush.snapshot(),
        )

        terms = (
            ("received", "Records received: produced plus invalid.", ledger.received),
            ("delivered", "Records the sink accepted.", ledger.delivered),
            ("in_ring", "Records in the ring.", ledger.in_ring),
            ("in_batches", "Records held in workers' unwritten batches.", ledger.in_batches),
            ("dropped", "Records dropped on purpose.", ledger.dropped_total),
            ("invalid", "Lines sources rejected.", ledger.invalid),
            ("undelivered", "Records the sink refused for good.", ledger.undelivered),
        )
        for term, doc, value in terms:
            yield gauge(f"logpipe_ledger_{term}", f"Loss ledger: {doc}", value)
        yield gauge(
            "logpipe_ledger_balanced",
            "1 if received = delivered + in_ring + in_batches + dropped + invalid + undelivered.",
            1 if ledger.balanced else 0,
        )


def _histogram(name: str, doc: str, snap: HistogramSnapshot) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if math.isinf(bound) else floatToGoString(bound), count)
        for bound, count in zip(snap.bounds, snap.cumulative)
    ]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=snap.sum)


def health(metrics: Metrics, threshold: float, now: float | None = None) -> str | None:
    """Why the pipeline is unhealthy (one line), or None if it is healthy.

    Unhealthy: the sink has failed every write for longer than ``threshold``
    seconds (consecutive failures with no success since).
    """
    now = time.monotonic() if now is None else now
    state = metrics.sink_health
    failing = state.failing_for(now)
    if failing <= threshold:
        return None
    last = f"; last error: {state.last_error}" if state.last_error else ""
    line = (
        f"sink failing for {failing:.1f}s (over the {threshold:g}s threshold), "
        f"{state.consecutive_failures} failed writes in a row{last}"
    )
    return " ".join(line.split())


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (host 127.0.0.1) or ``[IPv6]:PORT`` as ``(host, port)``.

    Raises:
        ConfigError: ``--metrics-addr: 'x' is not HOST:PORT (...)``.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{FLAG}: {text!r} is not HOST:PORT (e.g. 127.0.0.1:9108, or :9108)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{FLAG}: {text!r} has a bad IPv6 address in [...]") from None
    elif ":" in host:
        raise ConfigError(f"{FLAG}: {text!r}: write an IPv6 host in brackets, e.g. [::1]:9108")
    return host or DEFAULT_HOST, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scraper that hangs up late never holds shutdown
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running ``/metrics`` and ``/health`` endpoint; :meth:`stop` ends it.

    Build one with :func:`start`.
    """

    def __init__(self, metrics: Metrics, host: str, port: int, *, health_threshold: float) -> None:
        self.metrics = metrics
        self.health_threshold = health_threshold
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(MetricsCollector(metrics))
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        server_class = _Server6 if ":" in host else _Server
        try:
            self._server = server_class((host, port), _handler(self))
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ConfigError(f"{FLAG}: cannot listen on {where} ({exc.strerror or exc})") from None
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL},
            name="logpipe-metrics-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """Where to scrape: ``http://HOST:PORT/metrics``."""
        return self.base_url + "/metrics"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket and join the thread (idempotent)."""
        if self._thread.is_alive():
            # shutdown() waits, without a timeout, for serve_forever to return:
            # let a helper wait, and join the server thread in slices instead.
            threading.Thread(target=self._server.shutdown, name="logpipe-metrics-stop", daemon=True).start()
            join_thread(self._thread, timeout)
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(owner: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "logpipe"

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
            elif path == "/health":
                why = health(owner.metrics, owner.health_threshold)
                if why is None:
                    self._reply(200, b"ok\n")
                else:
                    self._reply(503, f"unhealthy: {why}\n".encode())
            elif path == "/":
                self._reply(200, b"logpipe: /metrics (Prometheus), /health\n")
            else:
                self._reply(404, b"not found: try /metrics or /health\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # scrapes every few seconds would bury the pipeline's own lines

    return Handler


def start(
    target: Any,
    addr: str,
    *,
    health_threshold: float | None = None,
    announce: Callable[[str], None] | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` and ``/health`` for a run on ``addr``, in a daemon thread.

    Args:
        target: a Pipeline (its metrics, its config's health_threshold and
            its console are used) or a Metrics.
        addr: ``HOST:PORT``; ``:PORT`` means 127.0.0.1; port 0 picks a free one.
        health_threshold: seconds of failing sink writes before /health is
            503 (default: the pipeline's config, else 30 s).
        announce: told ``Metrics: http://HOST:PORT/metrics`` once listening
            (default: the pipeline's console).

    Returns:
        The running server; call ``stop()`` at shutdown.

    Raises:
        ConfigError: a malformed address, or one that cannot be listened on.
    """
    host, port = parse_address(addr)
    metrics = target if isinstance(target, Metrics) else target.metrics
    if health_threshold is None:
        config = getattr(target, "config", None)
        health_threshold = getattr(config, "health_threshold", DEFAULT_HEALTH_THRESHOLD)
    if announce is None and not isinstance(target, Metrics):
        console = getattr(target, "console", None)
        announce = console.say if console is not None else None
    server = MetricsServer(metrics, host, port, health_threshold=float(health_threshold))
    if announce is not None:
        announce(f"Metrics: {server.url}")
    return server
