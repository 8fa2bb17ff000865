"""Tests for the loss ledger (logpipe.application.metrics.Ledger, Metrics.ledger, check_ledger).

received = produced + invalid = delivered + in ring + in worker batches +
dropped{reason} + invalid + undelivered: checked live during real runs (where
it must never raise a false alarm), exactly in the final report, and broken
on purpose (a sink that counts records the pipeline already counts, a rogue
consumer stealing from the ring) to show the alarm fires.
"""

from __future__ import annotations

import functools
import io
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from logpipe.application.console import Console
from logpipe.application.metrics import Ledger, Metrics, check_ledger
from logpipe.application.pipeline import Report
from logpipe.exceptions import SinkError
from logpipe.infrastructure.exporters.prometheus import MetricsCollector
from logpipe.infrastructure.sinks import NullSink
import _support

JOIN = 20.0


# Runs under load take longer here than the unit tests allow by default.
wait_until = functools.partial(_support.wait_until, timeout=10.0, interval=0.005)


# --- the arithmetic ------------------------------------------------------------------------


def test_a_ledger_balances_when_every_record_is_somewhere() -> None:
    """received (produced + invalid) equals delivered + in_ring + in_batches + dropped + invalid + undelivered."""
    ledger = Ledger(
        produced=100, invalid=7, delivered=60, in_ring=20, in_batches=10,
        dropped={"full": 4, "old": 1}, undelivered=5,
    )
    assert ledger.received == 107 and ledger.dropped_total == 5
    assert ledger.accounted == 107 and ledger.difference == 0
    assert ledger.balanced and ledger.exact
    assert ledger.line() == (
        "Ledger balanced: received=107 delivered=60 in_ring=20 in_batches=10 dropped=5{full:4,old:1} "
        "invalid=7 undelivered=5 difference=0"
    )


@pytest.mark.parametrize(
    ("delivered", "collecting_max", "balanced"),
    [(90, 0, False), (90, 9, False), (90, 10, True), (91, 10, True), (101, 10, False), (100, 0, True)],
)
def test_live_slack_covers_only_batches_being_collected(delivered, collecting_max, balanced) -> None:
    """Missing records are tolerated up to collecting_max; surplus (counted twice) never is."""
    ledger = Ledger(produced=100, invalid=0, delivered=delivered, in_ring=0, in_batches=0,
                    collecting_max=collecting_max)
    assert ledger.balanced is balanced
    assert ledger.exact is (delivered == 100)
    if not balanced:
        assert ledger.line().startswith("LEDGER IMBALANCE: received=100 ")
        assert f"difference={100 - delivered}" in ledger.line()


def test_report_is_not_ok_when_the_ledger_is_not_exact() -> None:
    """Report.ok needs lost == 0 and an exact ledger; as_dict carries the ledger's terms."""
    fields = dict(
        produced=10, processed=10, dropped=0, lost=0, elapsed=1.0, backpressure_sleeps=0, scale_ups=0,
        scale_downs=0, sink_errors=0, peak_workers=1, reason="source finished",
    )
    good = Ledger(produced=10, invalid=0, delivered=10, in_ring=0, in_batches=0)
    bad = Ledger(produced=10, invalid=0, delivered=9, in_ring=0, in_batches=0, collecting_max=5)
    assert Report(**fields, ledger=good).ok
    assert not Report(**fields, ledger=bad).ok  # slack is no excuse at the end
    as_dict = Report(**fields, ledger=bad).as_dict()
    assert as_dict["ok"] is False
    assert as_dict["ledger"]["difference"] == 1 and as_dict["ledger"]["exact"] is False


def test_check_ledger_says_each_new_imbalance_once() -> None:
    """check_ledger: silent when balanced; one LEDGER IMBALANCE line per new difference, counted in ledger_alarms."""
    metrics = Metrics()
    counts = [(10, 10)]
    metrics.bind(ring_counts=lambda: counts[0])
    out = io.StringIO()
    console = Console(out)
    metrics.processed.add(10)
    assert check_ledger(metrics, console) == 0
    metrics.processed.add(2)  # counted twice: 12 delivered of 10
    reported = check_ledger(metrics, console)
    assert reported == -2
    assert check_ledger(metrics, console, reported) == -2  # the same imbalance: not repeated
    counts[0] = (13, 13)  # one more record, delivered and counted once: now 13 - 12 = 1 missing
    assert check_ledger(metrics, console, reported) == 1
    lines = out.getvalue().splitlines()
    assert lines == [
        "LEDGER IMBALANCE: received=10 delivered=12 in_ring=0 in_batches=0 dropped=0 invalid=0 undelivered=0 difference=-2",
        "LEDGER IMBALANCE: received=13 delivered=12 in_ring=0 in_batches=0 dropped=0 invalid=0 undelivered=0 difference=1",
    ]
    assert metrics.ledger_alarms.value == 2


# --- live, in real runs ------------------------------------------------------------------------


class GateSink(NullSink):
    """Every write waits for ``gate`` (so workers hold their batches), then counts."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = 0
        self._count_lock = threading.Lock()

    def write_batch(self, batch) -> None:
        with self._count_lock:
            self.waiting += 1
        self.gate.wait(JOIN)
        super().write_batch(batch)


class Counted:
    """A Source putting ``count`` records, then returning."""

    def __init__(self, count: int) -> None:
        self.count = count

    def run(self, ring, stop) -> None:
        ring.put_many([b'{"seq": %d}' % i for i in range(self.count)])


def test_the_ledger_sees_records_held_in_worker_batches(background) -> None:
    """Two workers blocked in the sink with 100 records each: in_batches 200, in_ring 300, exactly balanced."""
    sink = GateSink()
    run, _ = background(
        sink, source=Counted(500), min_workers=2, max_workers=2, batch_size=100, batch_timeout=60.0,
        channel_size=1000,
    )  # batch_timeout: only a full batch (or the drain) ends a worker's get_batch
    try:
        assert wait_until(lambda: sink.waiting == 2)
        ledger = run.pipeline.metrics.ledger()
        assert (ledger.received, ledger.delivered, ledger.in_batches, ledger.in_ring) == (500, 0, 200, 300)
        assert ledger.exact and ledger.collecting_max == 0
    finally:
        sink.gate.set()
    report = run.finish(stop=False)
    assert report.produced == report.processed == 500 and report.ledger.exact


def test_live_readings_always_balance_and_the_final_one_is_exact(background) -> None:
    """Hundreds of live readings while 4 workers race a paced source: all balanced, no alarm; final exact."""
    run, out = background(
        NullSink(), rate=20e-6, min_workers=4, max_workers=4, batch_size=20, batch_timeout=0.01,
        metrics_interval=0.1,
    )
    metrics = run.pipeline.metrics
    assert wait_until(lambda: metrics.processed.value > 0)
    readings = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        readings.append(metrics.ledger())
    report = run.finish()
    bad = [r.line() for r in readings if not r.balanced]
    assert not bad, bad[:3]
    assert len(readings) > 100
    assert all(r.in_ring >= 0 and r.in_batches >= 0 for r in readings)
    assert any(r.in_ring > 0 or r.in_batches > 0 or r.difference > 0 for r in readings)
    assert metrics.ledger_alarms.value == 0 and "LEDGER" not in out.getvalue()
    final = report.ledger
    assert final.exact and final.received == report.produced and final.delivered == report.processed
    assert (final.in_ring, final.in_batches, final.collecting_max) == (0, 0, 0)
    assert report.ok


class DiesAfter(NullSink):
    """Accepts ``good`` writes, then fails every write for good (a reader that went away)."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good
        self.calls = 0
        self._count_lock = threading.Lock()

    def write_batch(self, batch) -> None:
        with self._count_lock:
            self.calls += 1
            call = self.calls
        if call > self.good:
            raise SinkError("pipe: the reader has gone", retryable=False)
        super().write_batch(batch)


def test_a_sink_failing_for_good_is_a_known_loss_not_an_imbalance(background) -> None:
    """A permanent sink failure: lost == undelivered > 0, ledger exact, report not ok, no LEDGER IMBALANCE."""
    sink = DiesAfter(good=5)
    run, out = background(sink, rate=0, batch_size=50, channel_size=2000, min_workers=2, max_workers=2)
    report = run.finish(stop=False)  # the failure stops the run
    ledger = report.ledger
    assert ledger.undelivered > 0
    assert report.lost == ledger.undelivered
    assert report.processed == sink.records == 250
    assert ledger.exact and not report.ok
    text = out.getvalue()
    assert f"ERROR: {report.lost} logs were lost" in text
    assert "LEDGER IMBALANCE" not in text


# --- broken on purpose: the alarm fires -----------------------------------------------------


class DoubleCounting(NullSink):
    """A buggy sink that also counts its records into metrics.processed, which the worker does already."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def write_batch(self, batch) -> None:
        super().write_batch(batch)
        self.metrics.processed.add(len(batch))


def test_a_sink_counting_twice_raises_the_alarm_live_in_prometheus_and_in_the_report(
    background, parse_metrics
) -> None:
    """Double counting: a live LEDGER IMBALANCE line, logpipe_ledger_balanced 0, the final line, ok False."""
    metrics = Metrics()
    run, out = background(DoubleCounting(metrics), metrics=metrics, rate=0.001, metrics_interval=0.05)
    assert wait_until(lambda: "LEDGER IMBALANCE" in out.getvalue()), out.getvalue()
    registry = CollectorRegistry()
    registry.register(MetricsCollector(metrics))
    scraped = parse_metrics(generate_latest(registry).decode())
    assert scraped.value("logpipe_ledger_balanced") == 0
    assert scraped.value("logpipe_ledger_delivered") > scraped.value("logpipe_ledger_received")
    assert scraped.value("logpipe_ledger_alarms_total") >= 1
    report = run.finish()
    assert not report.ok and not report.ledger.balanced
    assert report.ledger.difference == -report.produced  # every record counted twice
    lines = out.getvalue().splitlines()
    live = [line for line in lines if line.startswith("LEDGER IMBALANCE: ")]
    assert len(live) >= 2  # at least one live, and the final one
    final = lines[lines.index("Program finished") + 2]
    assert final == report.ledger.line()
    assert final.startswith(f"LEDGER IMBALANCE: received={report.produced} delivered={2 * report.produced} ")


class RogueConsumer(NullSink):
    """A buggy component: each write also pops a record from the ring and throws it away."""

    def __init__(self) -> None:
        super().__init__()
        self.ring = None
        self.stolen = 0
        self._count_lock = threading.Lock()

    def write_batch(self, batch) -> None:
        super().write_batch(batch)
        if self.ring is not None:
            try:
                self.ring.get_nowait()
            except Exception:  # noqa: BLE001 - empty or closed: nothing to steal
                return
            with self._count_lock:
                self.stolen += 1


def test_records_vanishing_from_the_ring_raise_the_alarm(background) -> None:
    """Records taken out of the ring behind the pipeline's back: the live alarm fires, the final ledger is short by exactly them."""
    sink = RogueConsumer()
    run, out = background(sink, rate=200e-6, batch_size=5, batch_timeout=0.01, metrics_interval=0.05)
    sink.ring = run.pipeline.ring
    assert wait_until(lambda: "LEDGER IMBALANCE" in out.getvalue()), out.getvalue()[-2000:]
    sink.ring = None
    report = run.finish()
    assert sink.stolen > 0
    assert report.ledger.difference == sink.stolen == report.lost
    assert not report.ok and run.pipeline.metrics.ledger_alarms.value >= 1
