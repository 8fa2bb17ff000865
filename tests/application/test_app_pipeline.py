"""End-to-end tests of logpipe.application.pipeline, in process, with an in-memory sink.

Every record carries a ``seq``; the sink keeps the framed bytes of each batch,
so a test can check that every produced seq arrived exactly once. Each run's
threads (source, workers, scaler, reporter) are asserted dead afterwards.
"""

from __future__ import annotations

import io
import random
import re
import threading
import time
from collections import Counter as Multiset

import orjson
import pytest

from logpipe.application import worker as worker_module
from logpipe.application.console import Console
from logpipe.application.pipeline import RING_SLOTS_MAX_BYTES, Pipeline, Report, ring_slot_size
from logpipe.domain.config import PipelineConfig

JOIN = 10.0
SEQ = re.compile(rb'"seq": ?(\d+)')
REPORT = re.compile(
    r"Report: produced=(\d+) processed=(\d+) dropped=(\d+) invalid=\d+ lost=(-?\d+) elapsed=[\d.]+s "
    r"rate=\d+ logs/s backpressure_sleeps=\d+ scale_ups=\d+ scale_downs=\d+ "
    r"sink_errors=\d+ peak_workers=\d+"
)


class MemorySink:
    """Keeps bytes(batch) of every write; refuses writes after close()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.chunks: list[bytes] = []
        self.closes = 0
        self.late_writes = 0

    def write_batch(self, batch) -> None:
        data = bytes(batch)
        with self._lock:
            if self.closes:
                self.late_writes += 1
            self.chunks.append(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closes += 1

    def seqs(self) -> list[int]:
        return [int(m) for m in SEQ.findall(b"".join(self.chunks))]

    def records(self) -> int:
        return sum(chunk.count(b"\n") for chunk in self.chunks)


class FlakySink(MemorySink):
    """Raises on every write during its first ``fail_for`` seconds (from the first write)."""

    def __init__(self, fail_for: float) -> None:
        super().__init__()
        self.fail_for = fail_for
        self.first: float | None = None
        self.failures = 0

    def write_batch(self, batch) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        if now - self.first < self.fail_for:
            self.failures += 1
            raise ConnectionError("sink unavailable")
        super().write_batch(batch)


def run(pipeline: Pipeline, *, stop_after: float | None = None) -> Report:
    """Run the pipeline (optionally with request_stop from another thread); check every thread ended."""
    stopper = None
    if stop_after is not None:
        stopper = threading.Timer(stop_after, pipeline.request_stop)
        stopper.start()
    report = pipeline.run()
    if stopper is not None:
        stopper.join(JOIN)
        assert not stopper.is_alive()
    assert not pipeline.scaler._thread.is_alive()
    assert not pipeline.reporter._thread.is_alive()
    assert pipeline.pool.join_all(0.0) == []  # every worker, retired ones too, has ended
    assert pipeline.ring.closed and len(pipeline.ring) == 0
    assert not [t.name for t in threading.enumerate() if t.name == "logpipe-source"]
    return report


def assert_exactly_once(sink: MemorySink, produced: int) -> None:
    seqs = sink.seqs()
    assert len(seqs) == sink.records() == produced, (len(seqs), produced)
    if sorted(seqs) != list(range(produced)):
        counts = Multiset(seqs)
        dupes = sorted(s for s, n in counts.items() if n > 1)[:10]
        missing = sorted(set(range(produced)) - set(counts))[:10]
        pytest.fail(f"duplicates {dupes}, missing {missing}, out of range {max(seqs)}")


def make(sink: MemorySink, **config) -> tuple[Pipeline, io.StringIO]:
    out = io.StringIO()
    return Pipeline(PipelineConfig(**config), sink, console=Console(out)), out


@pytest.mark.parametrize("channel_size, slot_size", [
    (1, 512), (1500, 512), (65536, 512), (130_000, 512), (131_072, 256), (258_000, 256), (262_144, 128),
    (10_000_000, 128),
])
def test_ring_slots_are_as_large_as_64_mib_allow(channel_size, slot_size) -> None:
    """The ring's slots are 512 bytes (lines up to 495 bytes inline), smaller
    when that would reserve over 64 MiB, and never below 128."""
    assert ring_slot_size(channel_size) == slot_size
    if slot_size > 128:
        assert channel_size * (slot_size + 4) <= RING_SLOTS_MAX_BYTES


def test_pipeline_ring_holds_production_sized_lines_inline() -> None:
    """At the spec's defaults the pipeline's ring has 512-byte slots, and
    lines of every size still pass through it intact."""
    pipeline, _ = make(MemorySink())
    assert pipeline.ring.slot_size == 512
    lines = [b"x" * n for n in (0, 111, 112, 495, 496, 497, 3000)]
    assert pipeline.ring.put_many(lines) == len(lines)
    assert list(pipeline.ring.get_batch(len(lines), 0)) == lines
    pipeline.ring.close()


def test_count_delivers_every_seq_exactly_once() -> None:
    """count=50,000 at rate 0: the sink holds seq 0..49,999 once each, lost == 0, 'Program finished'."""
    sink = MemorySink()
    pipeline, out = make(sink, rate=0, count=50_000)
    report = run(pipeline)
    assert report.produced == 50_000 and report.processed == 50_000
    assert report.lost == 0 and report.dropped == 0 and report.ok
    assert report.reason == "source finished"
    assert_exactly_once(sink, 50_000)
    first = orjson.loads(sink.chunks[0].split(b"\n")[0])
    assert set(first) == {"msg", "level", "ts", "seq"} and first["msg"] == "hello from producer"
    assert sink.closes == 1 and sink.late_writes == 0
    lines = out.getvalue().splitlines()
    assert "Program finished" in lines
    report_line = lines[lines.index("Program finished") + 1]
    assert REPORT.fullmatch(report_line)
    assert report_line == report.line()
    assert "produced=50000 processed=50000 dropped=0 invalid=0 lost=0" in report_line
    assert "ERROR" not in out.getvalue()


def test_request_stop_at_random_moments_loses_nothing() -> None:
    """10 runs at full speed stopped at random moments: seqs 0..produced-1 each exactly once, lost == 0."""
    rng = random.Random(20240611)
    for attempt in range(10):
        delay = rng.uniform(0.0, 0.15)
        sink = MemorySink()
        pipeline, out = make(sink, rate=0, duration=None, count=None)
        report = run(pipeline, stop_after=delay)
        context = f"run {attempt}, stop after {delay:.3f}s"
        assert report.reason == "signal", context
        assert report.lost == 0 and report.produced == report.processed, context
        assert_exactly_once(sink, report.produced)
        lines = out.getvalue().splitlines()
        assert "Shutdown signal received!" in lines, context
        assert lines.index("Shutdown signal received!") < lines.index("Program finished"), context


def test_request_stop_before_run_shuts_down_cleanly() -> None:
    """A stop requested before run() still runs the whole shutdown, and loses nothing."""
    sink = MemorySink()
    pipeline, out = make(sink, rate=0)
    pipeline.request_stop()
    report = run(pipeline)
    assert report.reason == "signal" and report.lost == 0
    assert_exactly_once(sink, report.produced)
    assert "Shutdown signal received!" in out.getvalue()


def test_duration_ends_the_run_by_itself() -> None:
    """duration=0.5 s: the run ends on its own with reason 'duration', nothing lost."""
    sink = MemorySink()
    pipeline, out = make(sink, rate=0.001, duration=0.5, metrics_interval=0.1)
    report = run(pipeline)
    assert report.reason == "duration"
    assert report.elapsed >= 0.5
    assert report.produced > 0 and report.lost == 0
    assert_exactly_once(sink, report.produced)
    text = out.getvalue()
    assert "Shutdown: --duration 500ms elapsed" in text
    assert "Shutdown signal received!" not in text
    assert re.search(r"^\[METRICS\] Produced=\d+/s \| Processed=\d+/s \| Queue=\d+/1500 \| Workers=1$", text, re.M)


def test_shutdown_prints_the_final_flush_between_signal_and_finish() -> None:
    """Records held in a worker's partial batch are flushed at shutdown, printed in the spec's order."""
    sink = MemorySink()
    pipeline, out = make(sink, rate=0.001, batch_size=100_000, batch_timeout=60.0, channel_size=100_000)
    report = run(pipeline, stop_after=0.3)
    assert report.lost == 0 and report.produced > 0
    assert_exactly_once(sink, report.produced)
    lines = out.getvalue().splitlines()
    flushes = [line for line in lines if line.startswith("Worker ")]
    assert flushes == [f"Worker 1 flushed batch of {report.produced} logs"]
    order = [line for line in lines if not line.startswith("[METRICS]")]
    assert order[:3] == ["Shutdown signal received!", flushes[0], "Program finished"]
    assert REPORT.fullmatch(order[3])


def test_failing_sink_for_a_while_loses_nothing(monkeypatch) -> None:
    """A sink failing for its first 0.3 s: writes are retried, sink_errors > 0, every seq once, lost == 0."""
    monkeypatch.setattr(worker_module, "RETRY_FIRST", 0.01)
    sink = FlakySink(fail_for=0.3)
    pipeline, _ = make(sink, rate=0, count=20_000)
    report = run(pipeline)
    assert sink.failures > 0
    assert report.sink_errors == sink.failures
    assert report.lost == 0 and report.produced == 20_000
    assert_exactly_once(sink, 20_000)


def test_io_latency_slows_the_producer_and_scales_the_pool_up() -> None:
    """io_latency 20 ms, rate 50 µs, 2 s: the producer is slowed (sleeps > 0) and the pool grows."""
    sink = MemorySink()
    pipeline, out = make(
        sink, rate=50e-6, io_latency=0.02, max_workers=4, scale_interval=0.1, duration=2.0
    )
    report = run(pipeline)
    assert report.backpressure_sleeps > 0
    assert report.scale_ups >= 1 and report.peak_workers >= 2
    assert "Scaler: scaling UP, workers = 2" in out.getvalue().splitlines()
    assert report.lost == 0
    assert_exactly_once(sink, report.produced)


class ScriptedSource:
    """A Source that is not the generator: puts ``count`` JSON records, then returns."""

    name = "scripted"

    def __init__(self, count: int) -> None:
        self.count = count

    def run(self, ring, stop) -> None:
        for seq in range(self.count):
            if stop.is_set():
                return
            ring.put(orjson.dumps({"msg": "scripted", "seq": seq}))


def test_a_custom_source_is_counted_as_produced() -> None:
    """With a non-generator Source, the report counts what it put: produced == 1000, lost == 0."""
    sink = MemorySink()
    out = io.StringIO()
    pipeline = Pipeline(PipelineConfig(), sink, source=ScriptedSource(1000), console=Console(out))
    report = run(pipeline)
    assert_exactly_once(sink, 1000)
    assert report.processed == 1000
    assert report.produced == 1000, f"report says produced={report.produced}"
    assert report.lost == 0 and "ERROR" not in out.getvalue()


class SlowToStopSource:
    """A Source that, once told to stop, finishes its in-flight work: 50 ms, then 10 more records."""

    name = "slow-to-stop"

    def __init__(self) -> None:
        self.put = 0
        self.error: BaseException | None = None

    def run(self, ring, stop) -> None:
        try:
            while not stop.is_set():
                ring.put(orjson.dumps({"seq": self.put}))
                self.put += 1
                time.sleep(0.001)
            time.sleep(0.05)
            for _ in range(10):
                ring.put(orjson.dumps({"seq": self.put}))
                self.put += 1
        except BaseException as exc:  # noqa: BLE001
            self.error = exc


def test_the_ring_closes_only_after_the_source_has_returned() -> None:
    """Shutdown waits for the source to finish before closing the ring: its last records reach the sink."""
    sink, source = MemorySink(), SlowToStopSource()
    pipeline = Pipeline(PipelineConfig(), sink, source=source, console=Console(io.StringIO()))
    run(pipeline, stop_after=0.05)
    assert source.error is None, repr(source.error)
    assert_exactly_once(sink, source.put)


def test_a_source_with_upstream_pressure_drives_the_autoscaler():
    """A source's upstream_pressure() becomes the autoscaler's external pressure when none is passed."""
    class LaggingSource:
        def upstream_pressure(self) -> bool:
            return True

        def run(self, ring, stop) -> None:  # never started in this test
            raise AssertionError("not run")

    source = LaggingSource()
    pipeline = Pipeline(PipelineConfig(), MemorySink(), source=source)
    assert pipeline.scaler._external_pressure == source.upstream_pressure
    chosen = Pipeline(PipelineConfig(), MemorySink(), source=source, external_pressure=lambda: False)
    assert chosen.scaler._external_pressure() is False


class CommittingSource(ScriptedSource):
    """A ScriptedSource that takes commits, or says it keeps no checkpoints (a file without --state-dir)."""

    def __init__(self, count: int, keeps_checkpoints: bool) -> None:
        super().__init__(count)
        self.keeps_checkpoints = keeps_checkpoints
        self.commits: list[int] = []

    def commit(self, watermark: int) -> None:
        self.commits.append(watermark)


@pytest.mark.parametrize("keeps_checkpoints", [True, False])
def test_only_a_source_that_keeps_checkpoints_gets_the_flush_watermark(keeps_checkpoints: bool) -> None:
    """The tracker, the workers' reports to it and the commits exist only for a source that keeps
    checkpoints; then its last commit covers every record written."""
    sink, source = MemorySink(), CommittingSource(3000, keeps_checkpoints)
    config = PipelineConfig(batch_size=7, max_workers=3)
    pipeline = Pipeline(config, sink, source=source, console=Console(io.StringIO()))
    workers_trackers: list[object] = []
    make_worker = pipeline._make_worker

    def recording_make_worker(worker_id: int):
        worker = make_worker(worker_id)
        workers_trackers.append(worker._tracker)
        return worker

    pipeline.pool._make_worker = recording_make_worker
    report = run(pipeline)
    assert_exactly_once(sink, 3000)
    assert report.lost == 0
    assert workers_trackers, "no worker was made"
    if keeps_checkpoints:
        assert pipeline.tracker is not None
        assert all(tracker is pipeline.tracker for tracker in workers_trackers)
        assert source.commits and source.commits[-1] == 3000
    else:
        assert pipeline.tracker is None
        assert workers_trackers == [None] * len(workers_trackers)
        assert source.commits == []
