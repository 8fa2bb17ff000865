"""Outage tests for logpipe.infrastructure.sinks.nats: a million records through three server outages, in both modes."""

from __future__ import annotations

import io
import re
import signal
import threading
import time

import orjson
import pytest

from logpipe.application.console import Console
from logpipe.application.pipeline import Pipeline
from logpipe.domain.config import PipelineConfig
from logpipe.infrastructure.sinks.nats import NatsSinkConfig

TOTAL = 1_000_000
STREAM = "LOGS"
CHANNEL_SIZE = 20_000
BATCH_SIZE = 2_000
MAX_WORKERS = 8
OUTAGE = 2.0  # seconds the server stays down, each time
# Stop the server when the source has produced these fractions of TOTAL.
OUTAGE_AT = (0.15, 0.40, 0.65)
# SIGTERM (a clean stop) twice, SIGKILL (a crash) once.
OUTAGE_SIGNALS = (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM)
RSS_GROWTH_LIMIT_MB = 300


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class Chaos(threading.Thread):
    """Stops the server three times during the run, ``OUTAGE`` seconds each, and samples RSS."""

    def __init__(self, pipeline: Pipeline, server) -> None:
        super().__init__(name="chaos", daemon=True)
        self.pipeline = pipeline
        self.server = server
        self.finished = threading.Event()
        self.outages: list[dict[str, float]] = []
        self.rss: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        ring = self.pipeline.ring
        try:
            for fraction, sig in zip(OUTAGE_AT, OUTAGE_SIGNALS):
                while ring.pushed < fraction * TOTAL:
                    if self.finished.wait(0.02):
                        return
                    self.rss.append(rss_mb())
                stopped_at = ring.pushed
                self.server.stop(sig)
                down_since = time.monotonic()
                while time.monotonic() - down_since < OUTAGE:
                    self.rss.append(rss_mb())
                    time.sleep(0.05)
                usage = ring.usage
                pushed_during = ring.pushed - stopped_at
                self.server.start()
                self.outages.append(
                    {"at": stopped_at, "pushed_during": pushed_during, "usage": usage, "signal": int(sig)}
                )
            while not self.finished.wait(0.05):
                self.rss.append(rss_mb())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            if not self.server.running:
                self.server.start()  # never leave the pipeline retrying for ever


def stored_records(messages, mode: str) -> list[bytes]:
    """The records in the stream's messages: one per message, or a batch-mode message's lines."""
    if mode == "record":
        return [data for _, _, data in messages]
    records = []
    for _, headers, data in messages:
        lines = data.split(b"\n")
        assert lines[-1] == b""  # every record ends with its newline
        assert headers["Logpipe-Records"] == str(len(lines) - 1)
        records.extend(lines[:-1])
    return records


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["record", "batch"])
def test_a_million_records_survive_three_outages_exactly_once(nats_server, mode):
    """Server down 3 x 2 s during a 1M-record run, per-record or batch mode: every seq stored once, retries counted, RSS bounded."""
    config = PipelineConfig(
        rate=0,
        count=TOTAL,
        channel_size=CHANNEL_SIZE,
        batch_size=BATCH_SIZE,
        batch_timeout=0.05,
        min_workers=2,
        max_workers=MAX_WORKERS,
        nats_stream=STREAM,
        nats_mode=mode,
        sink=f"nats://127.0.0.1:{nats_server.port}/logs",
    )
    sink = NatsSinkConfig.from_target(f"127.0.0.1:{nats_server.port}/logs", config).build(config)
    output = io.StringIO()
    pipeline = Pipeline(config, sink, console=Console(output))
    baseline = rss_mb()
    chaos = Chaos(pipeline, nats_server)
    chaos.start()
    started = time.monotonic()
    try:
        report = pipeline.run()
    finally:
        chaos.finished.set()
        chaos.join(30)
    elapsed = time.monotonic() - started
    assert not chaos.is_alive()
    assert chaos.error is None, chaos.error

    # The outages happened during the run, and the run saw them.
    assert len(chaos.outages) == 3, chaos.outages
    assert report.produced == report.processed == TOTAL
    assert report.lost == 0
    assert report.sink_errors > 0
    assert sink.disconnects >= 3
    assert sink.reconnects >= 3
    assert re.search(r"sink write failed \(nats://127\.0\.0\.1:\d+/logs: ", output.getvalue())

    # Backpressure: while the server was down the source was held back by
    # the full ring (it can fill the ring and the workers' batches, no more).
    held = CHANNEL_SIZE + MAX_WORKERS * BATCH_SIZE + 2 * 1024
    for outage in chaos.outages:
        assert outage["pushed_during"] <= held, chaos.outages
    # Memory stayed bounded.
    peak = max(chaos.rss)
    assert peak - baseline < RSS_GROWTH_LIMIT_MB, (baseline, peak)

    # Every seq is in the stream exactly once.
    count, window = nats_server.stream_info(STREAM)
    assert window == 120.0
    messages = nats_server.read_stream(STREAM)
    assert len(messages) == count
    seqs = [orjson.loads(data)["seq"] for data in stored_records(messages, mode)]
    assert len(seqs) == TOTAL
    assert len(set(seqs)) == TOTAL
    assert min(seqs) == 0 and max(seqs) == TOTAL - 1
    print(
        f"\n1M through 3 outages ({mode} mode): run {report.elapsed:.1f}s ({elapsed:.1f}s wall), "
        f"{report.rate:.0f} logs/s, sink_errors={report.sink_errors}, duplicates acked={sink.duplicates}, "
        f"rss baseline={baseline:.0f}MB peak={peak:.0f}MB, outages={chaos.outages}"
    )
