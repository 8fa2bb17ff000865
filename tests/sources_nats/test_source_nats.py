"""The nats:// source against a real nats-server: delivery, acks, crashes, backpressure, bad input."""

from __future__ import annotations

import collections
import io
import re
import subprocess
import threading
from pathlib import Path

import orjson
import pytest
from rich.console import Console as RichConsole
from _support import logpipe_command, wait_until
from sources_nats.conftest import (
    STREAM,
    SUBJECT,
    consumer_state,
    line_count,
    output_records,
    publish_raw,
    publish_records,
    record_id,
    spec,
    start_run,
    tagged_records,
)

from logpipe.domain.ports import FramedBatch
from logpipe.exceptions import ConfigError
from logpipe.infrastructure.exporters.prometheus import MetricsCollector
from logpipe.infrastructure.registry import open_sink, parse_source
from logpipe.infrastructure.sources.nats import NatsSourceConfig
from logpipe.infrastructure.ui.live import LiveView

BATCH_HEADERS = {"Logpipe-Framing": "ndjson"}


def batch_message(records: list[bytes], msg_id: str) -> tuple[bytes, dict[str, str]]:
    """A message as the sink's batch mode writes it: newline-ended records, count, framing, id."""
    body = b"".join(record + b"\n" for record in records)
    return body, {**BATCH_HEADERS, "Logpipe-Records": str(len(records)), "Nats-Msg-Id": msg_id}


class GatedSink:
    """A real file sink whose writes wait until ``gate`` is set (a stalled downstream)."""

    def __init__(self, path: Path, gate: threading.Event) -> None:
        self._sink = open_sink(f"file:{path}")
        self._gate = gate

    def write_batch(self, batch: FramedBatch) -> None:
        self._gate.wait()
        self._sink.write_batch(batch)

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        self._gate.set()
        self._sink.close()


# -- the spec --------------------------------------------------------------------


def test_spec_parts_and_defaults():
    """The spec names server, subject, stream and durable; ack_wait and max_ack_pending are optional."""
    config = parse_source("nats://10.0.0.5:4333/logs.>?stream=LOGS&durable=indexers&ack_wait=10s&max_ack_pending=500")
    assert isinstance(config, NatsSourceConfig)
    assert (config.host, config.port, config.subject) == ("10.0.0.5", 4333, "logs.>")
    assert (config.stream, config.durable, config.ack_wait, config.max_ack_pending) == ("LOGS", "indexers", 10.0, 500)
    config = parse_source("nats://nats.internal/logs?durable=g")
    assert (config.port, config.stream, config.ack_wait, config.max_ack_pending) == (4222, None, 30.0, None)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("nats://127.0.0.1:4222/logs", "has no durable=NAME"),
        ("nats://127.0.0.1:4222/logs?durable=a.b", "bad durable name 'a.b'"),
        ("nats://127.0.0.1:4222/logs?durable=g&stream=", "empty stream="),
        ("nats://127.0.0.1:4222/logs?durable=g&group=x", "unknown parameter 'group'"),
        ("nats://127.0.0.1:4222/logs?durable=g&durable=h", "durable= twice"),
        ("nats://127.0.0.1:4222/logs?durable=g&ack_wait=soon", "ack_wait: 'soon' is not a duration"),
        ("nats://127.0.0.1:4222/logs?durable=g&ack_wait=0", "ack_wait=0"),
        ("nats://127.0.0.1:4222/logs?durable=g&max_ack_pending=0", "bad max_ack_pending '0'"),
        ("nats://127.0.0.1:99999/logs?durable=g", "port must be 1-65535"),
        ("nats://127.0.0.1:4222?durable=g", "has no SUBJECT"),
        ("nats://127.0.0.1:4222/logs..app?durable=g", "empty token"),
        ("nats://127.0.0.1:4222/logs.>.x?durable=g", "'>' before the end"),
        ("nats://user:pw@127.0.0.1/logs?durable=g", "credentials"),
    ],
)
def test_a_malformed_spec_is_one_line_naming_the_rule(text, reason):
    """Every malformed spec is a ConfigError of one line naming --source, the spec and what is wrong."""
    with pytest.raises(ConfigError) as caught:
        parse_source(text)
    message = str(caught.value)
    assert message.startswith(f"--source: {text!r} ") and reason in message
    assert "\n" not in message


def test_startup_errors_name_the_problem(nats_server, tmp_path):
    """No server, no stream, a consumer that filters another subject, a limit above the ring: one line each."""
    from logpipe.infrastructure.registry import open_source  # noqa: PLC0415
    from logpipe.infrastructure.sources.context import SourceContext  # noqa: PLC0415
    from logpipe.application.metrics import Metrics  # noqa: PLC0415
    from logpipe.domain.config import PipelineConfig  # noqa: PLC0415
    from sinks_nats.conftest import free_port  # noqa: PLC0415

    context = SourceContext.for_run(PipelineConfig(dead_letter=str(tmp_path / "dl.ndjson")), Metrics())

    def error(text: str) -> str:
        with pytest.raises(ConfigError) as caught:
            open_source(text, settings=context)
        return str(caught.value)

    assert "cannot connect to the NATS server" in error(f"nats://127.0.0.1:{free_port()}/logs?durable=g")
    assert f"no JetStream stream {STREAM!r}" in error(spec(nats_server))
    publish_raw(nats_server, [(b"one", None)])
    assert "max_ack_pending 2000 must be 1 to the ring's capacity (1500" in error(spec(nats_server, max_ack_pending="2000"))
    open_source(spec(nats_server, "other"), settings=context).close()  # creates consumer 'other' on SUBJECT
    wrong = f"nats://127.0.0.1:{nats_server.port}/logs.other?stream={STREAM}&durable=other"
    assert f"filters {SUBJECT!r}, not 'logs.other'" in error(wrong)


# -- delivery --------------------------------------------------------------------


def test_every_message_is_written_once_and_acknowledged(nats_server, tmp_path):
    """Per-record messages (the sink's default, mixed sizes, invalid UTF-8) and batch messages
    (the sink's batch contract) are each written exactly once, and every message is acked."""
    singles = tagged_records(4000)
    publish_records(nats_server, singles)
    batched = tagged_records(600, start=4000, tag="b")
    publish_raw(nats_server, [batch_message(batched[i : i + 100], f"b-{i}") for i in range(0, 600, 100)])
    out = tmp_path / "out.ndjson"
    run, source = start_run(nats_server, tmp_path, out, batch_size=128)
    assert wait_until(lambda: line_count(out) >= 4600, timeout=30), f"{line_count(out)} of 4600 written"
    assert wait_until(lambda: consumer_state(nats_server, "group")[:2] == (0, 0), timeout=5)
    # The lag is read once a second: the metrics line catches up with the consumer.
    assert wait_until(lambda: "| Upstream pending=0 ack_pending=0" in run.output.getvalue(), timeout=5)
    report = run.stop()
    written = output_records(out)
    assert collections.Counter(written) == collections.Counter(singles + batched)  # each once
    assert report.ok and report.produced == 4600 and report.invalid == 0
    assert (source.messages, source.acked, source.redelivered, source.nacked) == (4006, 4006, 0, 0)


def test_a_consumer_killed_mid_run_loses_nothing(nats_server, tmp_path):
    """kill -9 of a consumer mid-run: what it had not acked is redelivered after ack_wait to the
    next member of the group; every record arrives, and the duplicates are counted (redelivered
    messages) and no more than the killed consumer's in-flight limit."""
    records = tagged_records(6000)
    publish_records(nats_server, records)
    first = tmp_path / "first.ndjson"
    limit = 400
    killed = subprocess.Popen(
        [*logpipe_command(), "run", "--source", spec(nats_server, ack_wait="1s"), "--sink", f"file:{first}",
         "--channel-size", str(limit), "--batch-size", "40", "--io-latency", "5ms", "--max-workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: line_count(first) >= 1200, timeout=30), killed.stderr and killed.poll()
        killed.kill()
        killed.wait(10)
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait(10)
    assert line_count(first) < 6000, "the first consumer finished before the kill: nothing was tested"
    unacked = consumer_state(nats_server, "group")[1]
    assert 0 < unacked <= limit  # it died holding messages, no more than its limit
    second = tmp_path / "second.ndjson"
    run, source = start_run(nats_server, tmp_path, second, params={"ack_wait": "1s"})
    expected = {record_id(r) for r in records}
    assert wait_until(lambda: {record_id(r) for r in output_records(first, second)} >= expected, timeout=30)
    assert wait_until(lambda: consumer_state(nats_server, "group")[:2] == (0, 0), timeout=5)
    report = run.stop()
    counts = collections.Counter(output_records(first, second))
    assert set(counts) == set(records)  # nothing missing, nothing foreign
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= limit
    assert duplicates <= source.redelivered_records  # every copy came in a redelivered message
    assert source.redelivered >= 1 and report.ok


def test_a_stop_acks_what_was_written_and_gives_back_the_rest(nats_server, tmp_path):
    """A stop mid-stream (slow sink): the run ends, every record written is acked and every
    message received but not written is given back at once (nak, not after the 30 s ack
    wait), so a second run delivers exactly the rest: each record once in all."""
    records = tagged_records(5000)
    publish_records(nats_server, records)
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    run, source = start_run(nats_server, tmp_path, first, batch_size=20, io_latency=0.005, channel_size=300)
    assert wait_until(lambda: line_count(first) >= 500, timeout=30)
    report = run.stop()
    assert report.ok and 500 <= report.processed < 5000
    assert source.acked == report.processed  # one record per message
    # Fetched, never pushed: given back (JetStream counts them ack-pending until redelivered).
    assert source.nacked == consumer_state(nats_server, "group")[1]
    run, _ = start_run(nats_server, tmp_path, second, batch_size=256)
    assert wait_until(lambda: line_count(first) + line_count(second) >= 5000, timeout=10)
    run.stop()
    assert collections.Counter(output_records(first, second)) == collections.Counter(records)


class HoldFirstBatch(GatedSink):
    """A real file sink that holds the batch containing ``record`` until ``gate`` is set;
    every other batch is written at once (workers write out of order)."""

    def __init__(self, path: Path, record: bytes, gate: threading.Event) -> None:
        super().__init__(path, gate)
        self._record = record

    def write_batch(self, batch: FramedBatch) -> None:
        if self._record in list(batch):  # type: ignore[call-overload]
            self._gate.wait()
        self._sink.write_batch(batch)


def test_no_message_is_acked_before_every_earlier_record_is_written(nats_server, tmp_path):
    """Acks follow the flush watermark, not the writes: while the batch holding the first
    record is stuck in one worker, the batches other workers write after it are not acked
    (a crash now must redeliver the first record); once it is written everything is acked."""
    records = tagged_records(600)
    publish_records(nats_server, records)
    gate = threading.Event()
    out = tmp_path / "out.ndjson"
    run, source = start_run(
        nats_server, tmp_path, out, sink=HoldFirstBatch(out, records[0], gate),
        min_workers=3, max_workers=3, batch_size=10,
    )
    try:
        assert wait_until(lambda: line_count(out) >= 200, timeout=15)
        wait_until(lambda: False, timeout=0.3)  # several commit intervals pass
        assert records[0] not in output_records(out)
        assert source.acked == 0
        assert consumer_state(nats_server, "group")[1] >= 200
    finally:
        gate.set()
    assert wait_until(lambda: line_count(out) >= 600, timeout=15)
    assert wait_until(lambda: source.acked == 600, timeout=5)
    run.stop()
    assert consumer_state(nats_server, "group")[:2] == (0, 0)
    assert collections.Counter(output_records(out)) == collections.Counter(records)


@pytest.mark.parametrize("framing", ["per-record", "batch"])
def test_a_stalled_sink_stops_fetching_and_the_stream_keeps_the_backlog(nats_server, tmp_path, framing):
    """With the sink stalled and a 64-record ring the source holds at most 64 unacknowledged
    messages (max_ack_pending = ring capacity) and no more records than the ring and the
    workers' batches take, fetches nothing more, the backlog stays in the
    stream (num_pending), the lag shows on the metrics line, in --ui and in Prometheus, and
    upstream_pressure() is True; once the sink resumes every record arrives once."""
    if framing == "per-record":
        records = tagged_records(3000)
        publish_records(nats_server, records)
        messages = 3000
    else:
        records = tagged_records(3000, tag="b")
        publish_raw(nats_server, [batch_message(records[i : i + 20], f"b-{i}") for i in range(0, 3000, 20)])
        messages = 150
    gate = threading.Event()
    out = tmp_path / "out.ndjson"
    run, source = start_run(
        nats_server, tmp_path, out, sink=GatedSink(out, gate), channel_size=64, batch_size=16, max_workers=2
    )
    try:
        assert wait_until(lambda: (source.lag() or source).pending > messages - 64 - 1 and source.messages > 0, timeout=5)
        assert wait_until(lambda: "Upstream pending=" in run.output.getvalue(), timeout=5)
        held = source.messages
        wait_until(lambda: False, timeout=0.5)  # the sink stays stalled a while
        pending, ack_pending, _ = consumer_state(nats_server, "group")
        assert source.messages == held  # nothing more was taken while stalled
        assert ack_pending <= 64 and source.max_outstanding <= 64
        assert pending + ack_pending == messages  # the rest waits in the stream
        assert source.upstream_pressure()
        # In memory at most: the ring, the workers' batches, and the one message being pushed.
        assert source.records <= 64 + 2 * 16
        frame = io.StringIO()
        RichConsole(file=frame, width=120, height=40).print(LiveView(run.pipeline, io.StringIO()).frame())
        assert re.search(r"Upstream\s+pending [\d,]+\s+ack pending [\d,]+\s+redelivered 0", frame.getvalue())
        exported = {s.name: s.value for m in MetricsCollector(run.pipeline.metrics).collect() for s in m.samples}
        assert exported["logpipe_upstream_pending"] > messages - 65
        assert exported["logpipe_upstream_ack_pending"] <= 64
    finally:
        gate.set()
    assert wait_until(lambda: line_count(out) >= 3000, timeout=30)
    assert wait_until(lambda: not source.upstream_pressure(), timeout=5)
    run.stop()
    assert collections.Counter(output_records(out)) == collections.Counter(records)


def test_bad_batch_messages_go_to_the_dead_letter(nats_server, tmp_path):
    """Batch messages that break the contract (count mismatch, a partial last record, unknown
    framing, a count that is not a number) are written to the dead letter, counted once each
    and acked; a record that is not JSON under --format json is rejected alone; every good
    record around them is delivered, and nothing is redelivered."""
    good = [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    messages = [
        batch_message(good, "ok-1"),
        (b'{"n": 4}\n{"n": 5}\n', {**BATCH_HEADERS, "Logpipe-Records": "3"}),
        (b'{"n": 6}\n{"n": 7}', {**BATCH_HEADERS, "Logpipe-Records": "2"}),
        (b'{"n": 8}\n', {"Logpipe-Framing": "protobuf", "Logpipe-Records": "1"}),
        (b'{"n": 9}\n', {**BATCH_HEADERS, "Logpipe-Records": "many"}),
        (b'{"n": 10}', None),
        batch_message([b'{"n": 11}', b"not json \xff", b'{"n": 12}'], "ok-2"),
    ]
    publish_raw(nats_server, messages)
    out = tmp_path / "out.ndjson"
    run, source = start_run(nats_server, tmp_path, out, format="json")
    assert wait_until(lambda: line_count(out) >= 6, timeout=15)
    assert wait_until(lambda: consumer_state(nats_server, "group")[:2] == (0, 0), timeout=5)
    report = run.stop()
    assert output_records(out) == [*good, b'{"n": 10}', b'{"n": 11}', b'{"n": 12}']
    dead = [orjson.loads(line) for line in (tmp_path / "dead-letter.ndjson").read_bytes().splitlines()]
    reasons = [entry["reason"] for entry in dead]
    assert reasons[:4] == [
        "batch message: Logpipe-Records says 3 records, the body holds 2",
        "batch message: Logpipe-Records says 2 records, the body holds 1 and a partial one",
        "batch message: unknown Logpipe-Framing 'protobuf' (only 'ndjson')",
        "batch message: Logpipe-Records 'many' is not a count",
    ]
    assert reasons[4].startswith("not JSON") and len(dead) == 5
    assert dead[0]["line"] == '{"n": 4}\n{"n": 5}\n' and dead[0]["source"] == source.name
    assert report.invalid == 5 and source.bad_messages == 4 and report.ok
    assert source.redelivered == 0 and source.acked == len(messages)


def test_a_stop_with_the_sink_stalled_gives_back_what_could_not_enter_the_ring(nats_server, tmp_path):
    """A stop while the sink is stalled and the ring full: the source leaves within its
    0.5 s stop budget, the group of messages it could not push whole is given back (nak)
    with the ones still waiting, and a second run delivers them: no record is missing, and
    the only duplicates are records of that one cut-short group."""
    records = tagged_records(2000, tag="b")
    publish_raw(nats_server, [batch_message(records[i : i + 50], f"b-{i}") for i in range(0, 2000, 50)])
    gate = threading.Event()
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    run, source = start_run(
        nats_server, tmp_path, first, sink=GatedSink(first, gate), channel_size=64, batch_size=16, max_workers=2
    )
    assert wait_until(lambda: source.messages > 0 and source.lines_waiting(), timeout=10)
    run.pipeline.request_stop()
    wait_until(lambda: False, timeout=1.0)  # longer than the stop budget: the group is cut short
    gate.set()
    report = run.stop()
    assert report.ok and source.nacked >= 1
    run, _ = start_run(nats_server, tmp_path, second)
    expected = set(records)
    assert wait_until(lambda: set(output_records(first, second)) >= expected, timeout=15)
    run.stop()
    counts = collections.Counter(output_records(first, second))
    assert set(counts) == expected
    assert sum(n - 1 for n in counts.values()) <= 64  # a group fits the ring's room: at most 64 records


def test_a_server_killed_and_restarted_mid_run_loses_nothing(nats_server, tmp_path):
    """kill -9 of the (only) nats-server mid-run and a restart on the same store: the source
    reconnects and goes on, sends its recent acks again once the server is back, every
    record arrives, and in the end no message is left unacknowledged. (A lone server loses
    the consumer state it had not stored, so some messages come again as first deliveries:
    duplicates that no delivery count shows, which is why production runs R3; see
    docs/scale-out.md.)"""
    records = tagged_records(4000)
    publish_records(nats_server, records)
    out = tmp_path / "out.ndjson"
    run, source = start_run(
        nats_server, tmp_path, out, params={"ack_wait": "3s"}, batch_size=50, io_latency=0.01, max_workers=1
    )
    try:
        assert wait_until(lambda: line_count(out) >= 800, timeout=15)
        nats_server.kill()
        nats_server.start()
        assert wait_until(lambda: set(output_records(out)) >= set(records), timeout=30)
        # Messages the dead server had sent but we never received come again after ack_wait.
        assert wait_until(lambda: consumer_state(nats_server, "group")[:2] == (0, 0), timeout=15), (
            consumer_state(nats_server, "group")
        )
    finally:
        report = run.stop()
    assert report.ok and source.reacks >= 1
    assert set(output_records(out)) == set(records)
