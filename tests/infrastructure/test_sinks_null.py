"""Tests for logpipe.infrastructure.sinks.null: NullSink and NullSinkConfig."""

from __future__ import annotations

import threading

import pytest

from logpipe.domain.ports import Sink
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks.null import NullSink, NullSinkConfig


def test_counts_records_batches_and_bytes(make_batch):
    """write_batch adds len(batch) records and the framed byte count."""
    sink = NullSink()
    sink.write_batch(make_batch([b"abc", b"de"]))
    sink.write_batch(make_batch([b"f"]))
    assert (sink.records, sink.batches, sink.nbytes) == (3, 2, len(b"abc\nde\nf\n"))


def test_counts_are_exact_under_concurrent_writes(make_batch):
    """8 threads writing 500 batches each: no count is lost."""
    sink = NullSink()
    batch = make_batch([b"x" * 10] * 7)

    def work() -> None:
        for _ in range(500):
            sink.write_batch(batch)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sink.batches == 8 * 500
    assert sink.records == 8 * 500 * 7
    assert sink.nbytes == 8 * 500 * 7 * 11


def test_is_a_sink_and_closes_once():
    """NullSink satisfies the Sink Protocol; close is idempotent; a write after it raises."""
    sink = NullSink()
    assert isinstance(sink, Sink)
    sink.flush()
    sink.close()
    sink.close()
    with pytest.raises(SinkError, match="null: write after close"):
        sink.write_batch(b"x\n")
    assert sink.records == 0


def test_config_builds_a_null_sink():
    """NullSinkConfig.from_target(None).build() is a fresh NullSink."""
    sink = NullSinkConfig.from_target(None).build()
    assert isinstance(sink, NullSink)
    assert repr(sink) == "<NullSink null open records=0>"
