"""Tests for logpipe.application.worker: the batch worker's flush rules, stop signal and retries.

Every worker runs a real thread on a real RingBuffer; sinks are in-memory
recorders. Each test joins every worker it starts and asserts it is dead.
"""

from __future__ import annotations

import io
import threading
import time

import orjson
import pytest

from logpipe import RingBuffer
from logpipe.application import worker as worker_module
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.worker import Worker
from _support import wait_until

JOIN = 5.0  # generous: a worker that should be leaving gets this long
PROMPT = 1.0  # "promptly": far above the microseconds it needs, far below any batch timeout used
LONG = 30.0  # a batch timeout that no test waits for


class RecordingSink:
    """Stores every batch written: its record count and its framed bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lens: list[int] = []
        self.data: list[bytes] = []

    def write_batch(self, batch) -> None:
        payload = bytes(batch)
        with self._lock:
            self.lens.append(len(batch))
            self.data.append(payload)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def records(self) -> list[bytes]:
        with self._lock:
            return [line for chunk in self.data for line in chunk.split(b"\n") if line]


class FailingSink(RecordingSink):
    """Raises for its first ``failures`` calls, then records like RecordingSink."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def write_batch(self, batch) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(f"disk on fire (call {self.calls})")
        super().write_batch(batch)


def record(seq: int) -> bytes:
    return orjson.dumps({"msg": "m", "level": "INFO", "ts": 0, "seq": seq})


def fill(ring: RingBuffer, start: int, count: int) -> None:
    for seq in range(start, start + count):
        ring.put(record(seq))


def make_worker(
    ring: RingBuffer,
    sink,
    *,
    worker_id: int = 1,
    batch_size: int = 50,
    batch_timeout: float = LONG,
    verbose: bool = False,
    metrics: Metrics | None = None,
    stream: io.StringIO | None = None,
) -> Worker:
    return Worker(
        worker_id,
        ring,
        sink,
        batch_size=batch_size,
        batch_timeout=batch_timeout,
        metrics=metrics if metrics is not None else Metrics(),
        console=Console(stream if stream is not None else io.StringIO(), verbose=verbose),
    )


@pytest.fixture
def workers():
    """Workers started by a test; any still running at the end are closed out and must die."""
    started: list[tuple[Worker, RingBuffer]] = []
    yield started
    for worker, ring in started:
        ring.close()
        assert worker.join(JOIN), f"worker {worker.worker_id} still running after {JOIN}s"


def start(workers: list, worker: Worker, ring: RingBuffer) -> Worker:
    workers.append((worker, ring))
    worker.start()
    return worker


# --- flush rules -------------------------------------------------------------


def test_flushes_when_batch_size_is_reached(workers) -> None:
    """With a batch timeout far away, 100 records go out as two full batches of 50."""
    ring, sink = RingBuffer(1000), RecordingSink()
    fill(ring, 0, 100)
    start(workers, make_worker(ring, sink, batch_size=50, batch_timeout=LONG), ring)
    assert wait_until(lambda: sum(sink.lens) == 100), sink.lens
    assert sink.lens == [50, 50]


def test_flushes_a_partial_batch_when_the_timeout_expires(workers) -> None:
    """Seven records, batch size 50: they are flushed as one batch of 7 once batch_timeout passes."""
    ring, sink, metrics = RingBuffer(1000), RecordingSink(), Metrics()
    fill(ring, 0, 7)
    worker = start(workers, make_worker(ring, sink, batch_timeout=0.3, metrics=metrics), ring)
    time.sleep(0.05)
    assert sink.lens == []  # neither full nor timed out yet: still held
    assert wait_until(lambda: sink.lens == [7]), sink.lens
    assert worker.alive  # a timeout flush does not end the worker
    assert metrics.processed.value == 7 and metrics.batches_flushed.value == 1
    assert worker.processed == 7 and worker.holding == 0


def test_own_stop_signal_flushes_what_it_holds_and_exits_promptly(workers) -> None:
    """stop() wakes a worker out of a long wait: it flushes its partial batch and ends within 1 s."""
    ring, sink, out = RingBuffer(1000), RecordingSink(), io.StringIO()
    fill(ring, 0, 7)
    worker = start(workers, make_worker(ring, sink, batch_timeout=LONG, stream=out), ring)
    time.sleep(0.05)  # let it sit in get_batch, waiting for 43 more records
    assert sink.lens == []
    stopped = time.monotonic()
    worker.stop()
    assert worker.join(PROMPT), "worker did not leave promptly on its stop signal"
    assert time.monotonic() - stopped < PROMPT
    assert sink.lens == [7]
    assert [orjson.loads(r)["seq"] for r in sink.records()] == list(range(7))
    assert not ring.closed  # the ring is untouched: only this worker stopped
    assert "Worker 1 flushed batch of 7 logs" in out.getvalue()


def test_stopped_worker_with_nothing_held_exits_without_writing(workers) -> None:
    """A worker stopped while the ring is empty leaves at once and writes no empty batch."""
    ring, sink = RingBuffer(100), RecordingSink()
    worker = start(workers, make_worker(ring, sink), ring)
    time.sleep(0.02)
    worker.stop()
    assert worker.join(PROMPT)
    assert sink.lens == []


def test_one_worker_stops_while_another_keeps_consuming(workers) -> None:
    """Stopping worker 1 leaves worker 2 running: records put afterwards all reach worker 2's sink."""
    ring = RingBuffer(1000)
    sink1, sink2 = RecordingSink(), RecordingSink()
    first = start(workers, make_worker(ring, sink1, worker_id=1, batch_timeout=LONG), ring)
    second = start(workers, make_worker(ring, sink2, worker_id=2, batch_timeout=0.02), ring)
    time.sleep(0.02)
    first.stop()
    assert first.join(PROMPT)
    assert second.alive
    fill(ring, 0, 300)
    assert wait_until(lambda: sum(sink2.lens) == 300), sink2.lens
    assert sink1.lens == []
    assert sorted(orjson.loads(r)["seq"] for r in sink2.records()) == list(range(300))
    assert second.alive


def test_drains_the_ring_and_exits_when_it_is_closed(workers) -> None:
    """After close() a worker flushes everything left (50, 50, 30), then ends on Closed."""
    ring, sink, metrics = RingBuffer(1000), RecordingSink(), Metrics()
    fill(ring, 0, 130)
    ring.close()
    worker = start(workers, make_worker(ring, sink, batch_timeout=LONG, metrics=metrics), ring)
    assert worker.join(JOIN)
    assert sink.lens == [50, 50, 30]
    assert [orjson.loads(r)["seq"] for r in sink.records()] == list(range(130))
    assert metrics.processed.value == 130 and metrics.batches_flushed.value == 3
    assert worker.processed == 130


def test_close_wakes_a_waiting_worker_which_flushes_its_partial_batch(workers) -> None:
    """A worker waiting on a partial batch, when the ring closes, flushes it and ends promptly."""
    ring, sink = RingBuffer(1000), RecordingSink()
    fill(ring, 0, 7)
    worker = start(workers, make_worker(ring, sink, batch_timeout=LONG), ring)
    time.sleep(0.05)
    ring.close()
    assert worker.join(PROMPT)
    assert sink.lens == [7]


# --- sink failures ---------------------------------------------------------


def test_failing_sink_is_retried_and_the_batch_delivered_exactly_once(workers, monkeypatch) -> None:
    """A sink failing its first 3 writes: the batch is retried, written once, 3 sink errors counted."""
    monkeypatch.setattr(worker_module, "RETRY_FIRST", 0.001)
    ring, sink, metrics, out = RingBuffer(1000), FailingSink(failures=3), Metrics(), io.StringIO()
    fill(ring, 0, 20)
    worker = start(
        workers, make_worker(ring, sink, batch_size=20, metrics=metrics, stream=out), ring
    )
    assert wait_until(lambda: sink.lens == [20]), sink.lens
    time.sleep(0.05)  # room for a wrong second delivery to show up
    assert sink.calls == 4
    assert sink.lens == [20]
    assert [orjson.loads(r)["seq"] for r in sink.records()] == list(range(20))
    assert metrics.sink_errors.value == 3
    assert metrics.processed.value == 20 and metrics.batches_flushed.value == 1
    assert out.getvalue().count("sink write failed") == 3
    worker.stop()
    assert worker.join(JOIN)


def test_failing_sink_holds_the_batch_as_pending(workers, monkeypatch) -> None:
    """While a write keeps failing the worker reports the batch in ``holding``; nothing is counted processed."""
    monkeypatch.setattr(worker_module, "RETRY_FIRST", 0.001)
    monkeypatch.setattr(worker_module, "RETRY_MAX", 0.005)
    ring, sink, metrics = RingBuffer(1000), FailingSink(failures=10**9), Metrics()
    fill(ring, 0, 10)
    worker = start(workers, make_worker(ring, sink, batch_size=10, metrics=metrics), ring)
    assert wait_until(lambda: sink.calls >= 3)
    assert worker.holding == 10
    assert metrics.processed.value == 0
    sink.failures = 0  # the sink recovers
    assert wait_until(lambda: sink.lens == [10]), sink.lens
    assert wait_until(lambda: worker.holding == 0)
    assert metrics.processed.value == 10


# --- the "Worker N flushed batch of K logs" line ----------------------------


@pytest.mark.parametrize("verbose", [False, True])
def test_flush_line_printed_after_close_and_only_verbose_before(workers, verbose: bool) -> None:
    """Running flushes print only with verbose; flushes after close always print the spec's line."""
    ring, sink, out = RingBuffer(1000), RecordingSink(), io.StringIO()
    fill(ring, 0, 50)
    worker = start(workers, make_worker(ring, sink, worker_id=3, verbose=verbose, stream=out), ring)
    assert wait_until(lambda: sink.lens == [50])
    running = out.getvalue()
    if verbose:
        assert running == "Worker 3 flushed batch of 50 logs\n"
    else:
        assert running == ""
    fill(ring, 50, 7)
    ring.close()
    assert worker.join(JOIN)
    assert sink.lens == [50, 7]
    assert out.getvalue() == running + "Worker 3 flushed batch of 7 logs\n"
