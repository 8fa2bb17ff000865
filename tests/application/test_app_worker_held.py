"""The worker with a sink that ``takes_held_batches``: batches written straight from the ring.

A real ring, a real worker thread and a real file sink (a thin subclass that
notes, at each ``write_batch``, whether the batch it got was held). The
worker asks for held batches when the sink takes them and there is no
simulated I/O latency, releases each as soon as it is written, and copies
one out before pausing to retry it. What must hold whatever path a batch
took: every record in the file once, in order, and every slot and byte of
the ring given back.
"""

from __future__ import annotations

import io
import threading

import pytest

from _corpus import make_corpus
from _support import wait_until
from logpipe import RingBuffer
from logpipe.application import worker as worker_module
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.worker import Worker
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks.file import FileSink

JOIN = 5.0  # generous: a worker that should be leaving gets this long
BATCH = 64


class NotingFileSink(FileSink):
    """A FileSink that notes (batch id, held, records) at each write_batch; ``fail_first`` calls raise first."""

    def __init__(self, path, *, fail_first: int = 0) -> None:
        super().__init__(path, fsync=False)
        self.calls: list[tuple[int, bool, int]] = []
        self._fail_first = fail_first

    def write_batch(self, batch) -> None:
        self.calls.append((id(batch), batch.held, len(batch)))
        if len(self.calls) <= self._fail_first:
            raise SinkError(f"{self.name}: disk hiccup (call {len(self.calls)})", retryable=True)
        super().write_batch(batch)

    @property
    def held_flags(self) -> list[bool]:
        return [held for _, held, _ in self.calls]


def production_records(seed: int = 1) -> list[bytes]:
    """A production-like mix (tests/_corpus.py): lengths around the inline limit, stack
    traces, tens of KiB, invalid UTF-8, bursts of short records after a long one; plus a
    few records with real newlines in them."""
    records = make_corpus(seed, lines=400, max_record_size=1 << 16).records
    trace = b'boom="IllegalStateException"' + b"".join(b"\n\tat com.example.H.run(H.java:%d)" % i for i in range(60))
    for at in (3, len(records) // 2, len(records) - 2):
        records.insert(at, trace)
    return records


def framed(records: list[bytes]) -> bytes:
    return b"".join(r + b"\n" for r in records)


def make_worker(ring: RingBuffer, sink, *, io_latency: float = 0.0, batch_timeout: float = 0.05,
                metrics: Metrics | None = None) -> Worker:  # fmt: skip
    return Worker(
        1,
        ring,
        sink,
        batch_size=BATCH,
        batch_timeout=batch_timeout,
        io_latency=io_latency,
        metrics=metrics if metrics is not None else Metrics(),
        console=Console(io.StringIO()),
    )


@pytest.fixture
def started():
    """Workers (with their rings) started by a test: closed out at the end, and they must end."""
    running: list[tuple[Worker, RingBuffer]] = []
    yield running
    for worker, ring in running:
        worker.stop()
        ring.close()
        assert worker.join(JOIN), f"worker {worker.worker_id} still running after {JOIN}s"


def start(started: list, worker: Worker, ring: RingBuffer) -> Worker:
    started.append((worker, ring))
    worker.start()
    return worker


def assert_ring_all_free(ring: RingBuffer) -> None:
    """Nothing left in the ring, nothing held: a full ring's worth goes in without waiting."""
    assert len(ring) == 0
    assert ring.nbytes == 0, f"{ring.nbytes} bytes still counted: a held batch was never released"
    assert ring.put_many([b"x"] * ring.capacity, block=False) == ring.capacity


# --- 6: held batches when the sink takes them ------------------------------------------


def test_worker_writes_held_batches_and_gives_every_slot_back(tmp_path, started) -> None:
    """Records ready in bulk: every batch is held, the partial last one too (it waited for its
    batch before it took any record, then took what was there at its timeout), the file is every
    record once, in order, and every slot comes back."""
    records = production_records()
    ring = RingBuffer(len(records) + 8)
    assert ring.put_many(records, block=False) == len(records)  # all ready before the worker starts
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path)
    assert sink.takes_held_batches
    worker = start(started, make_worker(ring, sink), ring)
    assert wait_until(lambda: sink.records == len(records), timeout=10), (sink.records, len(records))
    worker.stop()
    assert worker.join(JOIN) and not worker.alive
    assert any(sink.held_flags), "the worker never asked for a held batch"
    # docs/ringbuffer.md: a held batch that is not all there waits before it takes any record.
    assert [(held, n) for _, held, n in sink.calls] == [(True, n) for _, _, n in sink.calls]
    assert sink.calls[-1][2] < BATCH  # the partial one is there, and held
    assert sum(n for _, _, n in sink.calls) == len(records)
    sink.close()
    assert path.read_bytes() == framed(records)
    assert_ring_all_free(ring)


def test_worker_gives_the_slots_back_once_written_not_when_its_next_wait_ends(tmp_path, started) -> None:
    """A ring exactly one batch long: the worker's held batch takes every slot. Once it is
    written, the worker waits for more (a long batch timeout) with the ring all free: a full
    ring's worth goes in without waiting, and is written too."""
    records = production_records(6)[: 2 * BATCH]
    ring = RingBuffer(BATCH)
    assert ring.put_many(records[:BATCH], block=False) == BATCH
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path)
    worker = start(started, make_worker(ring, sink, batch_timeout=30.0), ring)
    assert wait_until(lambda: sink.records == BATCH), sink.records
    assert sink.held_flags == [True]
    # The worker is in its next get_batch now, and must not be holding the last batch there.
    assert wait_until(lambda: ring.nbytes == 0 and ring.fits(1), timeout=2), (
        f"{ring.nbytes} bytes and fits(1)={ring.fits(1)} while the worker waits: the written batch kept its slots"
    )
    assert worker.alive
    assert ring.put_many(records[BATCH:], block=False) == BATCH
    assert wait_until(lambda: sink.records == 2 * BATCH), sink.records
    assert sink.held_flags == [True, True]
    assert wait_until(lambda: ring.nbytes == 0 and ring.fits(1), timeout=2)
    worker.stop()
    assert worker.join(JOIN) and not worker.alive
    sink.close()
    assert path.read_bytes() == framed(records)
    assert_ring_all_free(ring)


def test_worker_draining_a_closed_ring_holds_every_batch(tmp_path, started) -> None:
    """Closed before the worker starts: no batch has to wait, so all are held, the last partial one too."""
    records = production_records(2)
    ring = RingBuffer(len(records))
    assert ring.put_many(records, block=False) == len(records)
    ring.close()
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path)
    metrics = Metrics()
    worker = start(started, make_worker(ring, sink, batch_timeout=30.0, metrics=metrics), ring)
    assert worker.join(JOIN) and not worker.alive
    assert sink.held_flags and all(sink.held_flags), sink.held_flags
    assert len(sink.calls) == -(-len(records) // BATCH)
    sink.close()
    assert path.read_bytes() == framed(records)
    assert sink.records == len(records) and metrics.processed.value == len(records)
    assert len(ring) == 0 and ring.nbytes == 0  # every held batch released


def test_a_producer_on_a_small_ring_never_waits_on_slots_a_written_batch_still_holds(tmp_path, started) -> None:
    """A ring far smaller than the input: the producer keeps blocking on it, and goes on only
    because the worker releases each batch once written. A batch kept held would stall it."""
    records = production_records(3) * 2
    ring = RingBuffer(3 * BATCH // 2, max_record_size=1 << 16)
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path)
    worker = start(started, make_worker(ring, sink), ring)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(0, len(records), 100):
                assert ring.put_many(records[i : i + 100], timeout=10) == len(records[i : i + 100])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    producer.join(20)
    assert not producer.is_alive(), "the producer is stuck: slots of written batches were not given back"
    assert errors == []
    assert wait_until(lambda: sink.records == len(records), timeout=10), (sink.records, len(records))
    worker.stop()
    assert worker.join(JOIN) and not worker.alive
    sink.close()
    assert path.read_bytes() == framed(records)
    assert any(sink.held_flags)
    assert_ring_all_free(ring)


def test_several_workers_share_one_file_sink_with_held_batches(tmp_path, started) -> None:
    """Three workers, one ring, one file, a producer faster than the ring is long: every
    record once, each line whole, and the ring all free at the end."""
    body = make_corpus(7, lines=400, max_record_size=1 << 16).records
    records = [b"%06d " % i + r for i, r in enumerate(body)]
    ring = RingBuffer(2 * BATCH, max_record_size=1 << 17)
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path)
    workers = [start(started, make_worker(ring, sink), ring) for _ in range(3)]
    for i in range(0, len(records), 50):
        assert ring.put_many(records[i : i + 50], timeout=10) == len(records[i : i + 50])
    assert wait_until(lambda: sink.records == len(records), timeout=10), (sink.records, len(records))
    for worker in workers:
        worker.stop()
    for worker in workers:
        assert worker.join(JOIN) and not worker.alive
    sink.close()
    data = path.read_bytes()
    assert len(data) == len(framed(records))
    lines = data.split(b"\n")
    assert lines.pop() == b""
    assert sorted(lines) == records  # the seq prefix sorts them back into input order
    assert any(sink.held_flags)
    assert_ring_all_free(ring)


def test_a_capacity_one_ring_copies_every_batch_and_loses_nothing(tmp_path, started) -> None:
    """Docs: a ring of capacity 1 never holds (a held record would let a second one past its
    bound). The worker asks for held batches anyway; it gets copies, and every record lands."""
    records = production_records(8)[:600]
    ring = RingBuffer(1, max_record_size=1 << 17)
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path)
    worker = start(started, make_worker(ring, sink, batch_timeout=0.01), ring)
    for record in records:
        ring.put(record, timeout=10)
        assert len(ring) <= 1
    assert wait_until(lambda: sink.records == len(records), timeout=10), (sink.records, len(records))
    worker.stop()
    assert worker.join(JOIN) and not worker.alive
    assert sink.calls and not any(sink.held_flags)
    sink.close()
    assert path.read_bytes() == framed(records)
    assert_ring_all_free(ring)


# --- 7: never held with a simulated latency ------------------------------------------------


def test_with_io_latency_the_sink_never_gets_a_held_batch(tmp_path, started) -> None:
    """--io-latency: a held batch would keep its slots through the sleep, so every batch is a copy."""
    records = production_records(4)[:1000]
    ring = RingBuffer(len(records))
    assert ring.put_many(records, block=False) == len(records)
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path)
    worker = start(started, make_worker(ring, sink, io_latency=0.001), ring)
    assert wait_until(lambda: sink.records == len(records), timeout=10), (sink.records, len(records))
    worker.stop()
    assert worker.join(JOIN) and not worker.alive
    assert len(sink.calls) >= len(records) // BATCH
    assert not any(sink.held_flags), sink.held_flags
    sink.close()
    assert path.read_bytes() == framed(records)
    assert_ring_all_free(ring)


# --- 8: a retry copies the batch out before it pauses ---------------------------------------


@pytest.mark.parametrize("failures", [1, 3])
def test_a_retried_batch_is_detached_before_the_pause_and_written_once(
    tmp_path, started, monkeypatch, failures
) -> None:
    """The sink refuses the first write(s) before writing: the worker copies the held batch out
    before its pause (it would keep its slots through it), then writes the copy, once."""
    monkeypatch.setattr(worker_module, "RETRY_FIRST", 0.005)
    records = production_records(5)
    ring = RingBuffer(len(records) + 1)
    assert ring.put_many(records, block=False) == len(records)
    path = tmp_path / "out.ndjson"
    sink = NotingFileSink(path, fail_first=failures)
    metrics = Metrics()
    worker = start(started, make_worker(ring, sink, metrics=metrics), ring)
    assert wait_until(lambda: sink.records == len(records), timeout=10), (sink.records, len(records))
    worker.stop()
    assert worker.join(JOIN) and not worker.alive
    first, *retries = sink.calls[: failures + 1]
    assert first[1] is True, "the first batch was not held: the test proves nothing"
    for retry in retries:
        assert retry[0] == first[0] and retry[2] == first[2], "the retry was not the same batch"
        assert retry[1] is False, "the batch was still held at its retry: it kept its slots through the pause"
    assert metrics.sink_errors.value == failures
    sink.close()
    assert path.read_bytes() == framed(records)
    assert sink.records == len(records)
    assert_ring_all_free(ring)
