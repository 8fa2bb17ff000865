"""Tests for logpipe.infrastructure.exporters.prometheus: /metrics and /health over real HTTP.

Runs are real pipelines (generator source, in-process or the `logpipe`
command as a subprocess); each scrape is parsed with prometheus_client's own
text-format parser. The histograms' observations come from Worker._flush.
"""

from __future__ import annotations

import functools
import io
import math
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from logpipe import RingBuffer
from logpipe.application import worker as worker_module
from logpipe.application.console import Console
from logpipe.application.metrics import Histogram, Metrics
from logpipe.application.worker import Worker
from logpipe.exceptions import ConfigError
from logpipe.infrastructure.exporters import prometheus
from logpipe.infrastructure.sinks import NullSink
import _support

JOIN = 20.0


# Runs under load take longer here than the unit tests allow by default.
wait_until = functools.partial(_support.wait_until, timeout=10.0, interval=0.01)


# --- the histogram -------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_include_their_bound() -> None:
    """Observations land in the first bucket whose bound is >= the value (le); counts are cumulative."""
    histogram = Histogram([0.1, 1.0, 10.0])
    for value in (0.05, 0.1, 0.5, 1.0, 3.0, 100.0):
        histogram.observe(value)
    snap = histogram.snapshot()
    assert snap.bounds == (0.1, 1.0, 10.0, math.inf)
    assert snap.cumulative == (2, 4, 5, 6)
    assert snap.count == 6 and snap.sum == pytest.approx(104.65)


@pytest.mark.parametrize("bounds", [[], [1.0, 1.0], [2.0, 1.0], [1.0, math.inf]])
def test_histogram_refuses_bounds_that_are_not_finite_and_increasing(bounds) -> None:
    """Empty, repeated, decreasing or infinite bounds are a ValueError."""
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram(bounds)


def test_histogram_is_exact_under_concurrent_observations() -> None:
    """4 threads x 10,000 observations: count 40,000, every bucket and the sum exact."""
    histogram = Histogram([1.0, 2.0])

    def observe() -> None:
        for i in range(10_000):
            histogram.observe(0.5 if i % 2 else 1.5)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN)
    assert not any(t.is_alive() for t in threads)
    snap = histogram.snapshot()
    assert snap.cumulative == (20_000, 40_000, 40_000)
    assert snap.sum == pytest.approx(40_000.0)


def test_worker_flush_observes_both_histograms_once_per_batch() -> None:
    """Records that waited 200 ms in the ring: one observation per batch, enqueue-to-flush >= 0.15 s."""
    ring = RingBuffer(1000)
    ring.put_many([b'{"seq": %d}' % i for i in range(120)])
    time.sleep(0.2)
    metrics = Metrics()
    worker = Worker(
        1, ring, NullSink(), batch_size=50, batch_timeout=0.05, metrics=metrics, console=Console(io.StringIO())
    )
    worker.start()
    assert wait_until(lambda: metrics.processed.value == 120)
    ring.close()
    assert worker.join(JOIN)
    flush, latency = metrics.flush_duration.snapshot(), metrics.enqueue_to_flush.snapshot()
    assert metrics.batches_flushed.value == flush.count == latency.count == 3
    assert latency.sum / latency.count >= 0.15  # stamped on entry, measured after the write
    assert latency.sum / latency.count < 30  # the ring's clock is time.monotonic's
    assert 0 <= flush.sum < latency.sum
    assert worker.collecting == 0 and worker.holding == 0


def test_worker_reports_sink_health_failures_then_recovery(monkeypatch) -> None:
    """A sink failing 3 writes: sink_health counts 3 in a row and a start time; a success clears both."""
    monkeypatch.setattr(worker_module, "RETRY_FIRST", 0.01)
    calls: list[float] = []
    gate = threading.Event()

    class Flaky(NullSink):
        def write_batch(self, batch) -> None:
            calls.append(time.monotonic())
            if len(calls) <= 3:
                raise ConnectionError(f"down (call {len(calls)})")
            gate.wait(JOIN)  # hold the fourth write until the test has looked
            super().write_batch(batch)

    ring = RingBuffer(100)
    ring.put_many([b"x"] * 10)
    metrics = Metrics()
    worker = Worker(1, ring, Flaky(), batch_size=10, batch_timeout=0.05, metrics=metrics, console=Console(io.StringIO()))
    worker.start()
    try:
        assert wait_until(lambda: len(calls) >= 4)
        health = metrics.sink_health
        assert health.consecutive_failures == 3
        assert health.last_error == "down (call 3)"
        assert health.failing_for(time.monotonic()) >= calls[3] - calls[1] > 0  # failing since before call 2
    finally:
        gate.set()
        ring.close()
        assert worker.join(JOIN)
    assert metrics.processed.value == 10
    assert metrics.sink_health.consecutive_failures == 0
    assert metrics.sink_health.failing_for(time.monotonic()) == 0.0


# --- addresses and the server itself ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        (":9108", ("127.0.0.1", 9108)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:9108", ("::1", 9108)),
    ],
)
def test_parse_address_accepts_host_port_forms(text, expected) -> None:
    """HOST:PORT, :PORT (127.0.0.1), port 0 and [IPv6]:PORT are understood."""
    assert prometheus.parse_address(text) == expected


@pytest.mark.parametrize("text", ["9108", "host:", "host:port", "h:65536", "::1:9108", "[nope]:1"])
def test_parse_address_rejects_malformed_addresses_in_one_line(text) -> None:
    """A malformed address is a one-line ConfigError naming --metrics-addr and the text."""
    with pytest.raises(ConfigError) as caught:
        prometheus.parse_address(text)
    message = str(caught.value)
    assert message.startswith("--metrics-addr: ") and "\n" not in message


def test_a_busy_port_is_a_one_line_error() -> None:
    """Listening on a port already taken raises ConfigError naming the address and the reason."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^--metrics-addr: cannot listen on 127\.0\.0\.1:{port} \("):
            prometheus.start(Metrics(), f"127.0.0.1:{port}")


def test_server_answers_paths_and_stops_cleanly(http_get) -> None:
    """/ and unknown paths answer; after stop() the thread is gone and the port refuses connections."""
    lines: list[str] = []
    server = prometheus.start(Metrics(), ":0", announce=lines.append)
    try:
        assert lines == [f"Metrics: http://127.0.0.1:{server.port}/metrics"] and server.port > 0
        assert http_get(server.base_url + "/")[0] == 200
        status, body = http_get(server.base_url + "/nothing")
        assert status == 404 and "/metrics" in body
        status, body = http_get(server.base_url + "/health")
        assert (status, body) == (200, "ok\n")
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    server.stop()  # twice is harmless


def test_health_is_unhealthy_only_past_the_threshold() -> None:
    """health(): None while failing <= threshold or after a success; one line with the reason beyond it."""
    metrics = Metrics()
    assert prometheus.health(metrics, 1.0, now=50.0) is None
    metrics.sink_health.failed(100.0, "connection refused")
    metrics.sink_health.failed(100.7, "connection refused")
    assert prometheus.health(metrics, 1.0, now=101.0) is None
    why = prometheus.health(metrics, 1.0, now=102.5)
    assert why == "sink failing for 2.5s (over the 1s threshold), 2 failed writes in a row; last error: connection refused"
    metrics.sink_health.succeeded()
    assert prometheus.health(metrics, 1.0, now=200.0) is None


# --- scraping real runs ------------------------------------------------------------------


def test_scrapes_during_a_run_move_and_the_last_matches_the_report(background, scrape_metrics) -> None:
    """Scraped mid-run, counters grow and the ledger balances; after the run every figure equals the report's."""
    run, out = background(NullSink(), rate=20e-6, channel_size=4000, max_workers=4, scale_interval=0.2)
    server = prometheus.start(run.pipeline, "127.0.0.1:0")
    try:
        assert f"Metrics: {server.url}" in out.getvalue().splitlines()
        scrapes = []
        assert wait_until(lambda: run.pipeline.metrics.processed.value > 0)
        for _ in range(4):
            scrapes.append(scrape_metrics(server.url))
            time.sleep(0.15)
        report = run.finish()
        final = scrape_metrics(server.url)
    finally:
        server.stop()

    produced = [s.value("logpipe_records_produced_total") for s in scrapes]
    processed = [s.value("logpipe_records_processed_total") for s in scrapes]
    assert produced == sorted(produced) and produced[-1] > produced[0]
    assert processed == sorted(processed) and processed[-1] > processed[0]
    for s in scrapes:
        assert s.value("logpipe_records_processed_total") <= s.value("logpipe_records_produced_total")
        assert s.value("logpipe_queue_capacity") == 4000
        assert 0 <= s.value("logpipe_queue_depth") <= 4000
        assert 0.0 <= s.value("logpipe_queue_usage") <= 1.0
        assert 1 <= s.value("logpipe_workers") <= 4
        assert s.value("logpipe_ledger_balanced") == 1
        assert s.types["logpipe_flush_duration_seconds"] == "histogram"
        # Observed before the batch is counted, read after: never fewer.
        assert s.value("logpipe_flush_duration_seconds_count") >= s.value("logpipe_batches_flushed_total") > 0

    assert final.value("logpipe_records_produced_total") == report.produced > 0
    assert final.value("logpipe_records_processed_total") == report.processed == report.produced
    assert final.value("logpipe_backpressure_sleeps_total") == report.backpressure_sleeps
    assert final.value("logpipe_scale_events_total", direction="up") == report.scale_ups
    assert final.value("logpipe_scale_events_total", direction="down") == report.scale_downs
    assert final.value("logpipe_sink_errors_total") == report.sink_errors == 0
    assert final.value("logpipe_records_invalid_total") == report.invalid == 0
    batches = final.value("logpipe_batches_flushed_total")
    for name in ("logpipe_flush_duration_seconds", "logpipe_enqueue_to_flush_seconds"):
        buckets = final.buckets(name)
        counts = [count for _, count in buckets]
        assert counts == sorted(counts), f"{name} buckets are not cumulative"
        assert buckets[-1] == (math.inf, batches) == (math.inf, final.value(f"{name}_count"))
        assert final.value(f"{name}_sum") > 0
    ledger = report.ledger
    assert ledger is not None and ledger.exact
    assert final.value("logpipe_ledger_received") == ledger.received == report.produced
    assert final.value("logpipe_ledger_delivered") == ledger.delivered == report.processed
    for term in ("in_ring", "in_batches", "dropped", "invalid", "undelivered"):
        assert final.value(f"logpipe_ledger_{term}") == 0, term
    assert final.value("logpipe_ledger_balanced") == 1


class SwitchableSink(NullSink):
    """Raises ConnectionError on every write while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.failures = 0
        self._count_lock = threading.Lock()

    def write_batch(self, batch) -> None:
        if self.down.is_set():
            with self._count_lock:
                self.failures += 1
            raise ConnectionError("connection refused")
        super().write_batch(batch)


def test_health_turns_503_while_the_sink_fails_past_the_threshold_and_back(
    background, http_get, scrape_metrics, monkeypatch
) -> None:
    """/health: 200, then 503 with one line once writes have failed > 0.3 s, then 200 after recovery; nothing lost."""
    monkeypatch.setattr(worker_module, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(worker_module, "RETRY_MAX", 0.05)
    sink = SwitchableSink()
    run, _ = background(sink, rate=0.001, batch_timeout=0.02, health_threshold=0.3)
    server = prometheus.start(run.pipeline, ":0")
    health = server.base_url + "/health"
    try:
        assert wait_until(lambda: sink.records > 0)
        assert http_get(health) == (200, "ok\n")
        sink.down.set()
        broke = time.monotonic()
        assert wait_until(lambda: http_get(health)[0] == 503), "never unhealthy"
        assert time.monotonic() - broke > 0.3  # not before the threshold
        status, body = http_get(health)
        assert status == 503 and body.count("\n") == 1
        assert re.fullmatch(
            r"unhealthy: sink failing for \d+\.\ds \(over the 0\.3s threshold\), \d+ failed writes in a row; "
            r"last error: connection refused\n",
            body,
        ), body
        failing = scrape_metrics(server.url).value("logpipe_sink_failing_seconds")
        assert failing > 0.3
        sink.down.clear()
        assert wait_until(lambda: http_get(health) == (200, "ok\n")), "never healthy again"
        assert scrape_metrics(server.url).value("logpipe_sink_failing_seconds") == 0
        report = run.finish()
    finally:
        server.stop()
    assert sink.failures > 0 and report.sink_errors == sink.failures
    assert report.lost == 0 and report.ok and sink.records == report.produced


LOGPIPE = [sys.executable, "-m", "logpipe"]


def test_the_command_serves_metrics_on_the_port_it_prints(scrape_metrics) -> None:
    """`logpipe run --metrics-addr 127.0.0.1:0` prints its URL; scrapes move; the last one <= the report."""
    process = subprocess.Popen(
        [*LOGPIPE, "run", "--rate", "50us", "--duration", "2s", "--metrics-addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:
            match = re.fullmatch(r"Metrics: (http://127\.0\.0\.1:(\d+)/metrics)\n", line)
            if match:
                url = match.group(1)
                break
        assert url, "no 'Metrics: http://...' line (is --metrics-addr wired in cli.py?)"
        scrapes = [scrape_metrics(url)]
        while scrapes[-1].value("logpipe_records_produced_total") == 0 and len(scrapes) < 500:
            time.sleep(0.01)
            scrapes.append(scrape_metrics(url))
        first = scrapes[-1]
        time.sleep(0.3)
        second = scrape_metrics(url)
        rest, err = process.communicate(timeout=JOIN)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    before = first.value("logpipe_records_produced_total")
    after = second.value("logpipe_records_produced_total")
    assert 0 < before < after
    assert second.value("logpipe_ledger_balanced") == 1
    report = dict(re.findall(r"(\w+)=(\S+)", next(l for l in rest.splitlines() if l.startswith("Report: "))))
    assert after <= int(report["produced"]) and report["lost"] == "0"
