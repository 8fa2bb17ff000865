"""Tests for logpipe.infrastructure.sinks.nats: NatsSink and NatsSinkConfig, against a real nats-server."""

from __future__ import annotations

import sys
import threading
import time

import orjson
import pytest
from sinks_nats.conftest import add_stream

from logpipe import RingBuffer
from logpipe.domain.config import PipelineConfig
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks.nats import NatsSink, NatsSinkConfig, check_subject

STREAM = "LOGS"
SUBJECT = "logs"


def record(seq: int) -> bytes:
    return orjson.dumps({"msg": "hello from producer", "level": "INFO", "ts": 1712345678123456, "seq": seq})


def open_sink(server, subject: str = SUBJECT, **kwargs) -> NatsSink:
    kwargs.setdefault("stream", STREAM)
    return NatsSink("127.0.0.1", server.port, subject, **kwargs)


def nats_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "logpipe-nats"]


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message
    return message


# -- publishing ---------------------------------------------------------------


def test_ten_thousand_records_from_four_threads_are_stored_once_each(nats_server):
    """10,000 records written by 4 worker threads arrive in the stream once each, ids from ring positions."""
    total = 10_000
    ring = RingBuffer(total)
    assert ring.put_many([record(i) for i in range(total)]) == total
    ring.close()
    sink = open_sink(nats_server)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                try:
                    batch = ring.get_batch(317, timeout=1)
                except Exception:  # noqa: BLE001 - Closed: drained
                    return
                sink.write_batch(batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    sink.flush()
    sink.close()
    assert errors == []
    assert sink.records == total
    assert sink.duplicates == 0
    assert sink.batches == -(-total // 317)

    count, window = nats_server.stream_info(STREAM)
    assert count == total
    assert window == 120.0
    messages = nats_server.read_stream(STREAM)
    assert [seq for seq, _, _ in messages] == list(range(1, total + 1))
    by_seq = {}
    for _, headers, data in messages:
        rec = orjson.loads(data)
        by_seq[rec["seq"]] = (headers, data)
    assert sorted(by_seq) == list(range(total))
    for seq in (0, 1, 4_999, 9_998, 9_999):  # a sample of contents and ids
        headers, data = by_seq[seq]
        assert data == record(seq)
        # The ring position of record seq is seq: the id is position based.
        assert headers == {"Nats-Msg-Id": f"{sink.run_id}-{seq}"}


def test_a_retried_batch_is_dropped_by_the_duplicate_window(nats_server, make_batch):
    """Writing the same batch again (a worker's retry) stores nothing new; the acks say duplicate."""
    sink = open_sink(nats_server)
    batch = make_batch([record(i) for i in range(100)])
    sink.write_batch(batch)
    sink.write_batch(batch)
    sink.close()
    assert nats_server.stream_info(STREAM)[0] == 100
    assert sink.duplicates == 100
    assert sink.records == 200  # every record acked twice: once stored, once a duplicate


def test_two_sinks_have_different_run_ids_so_both_runs_are_kept(nats_server, make_batch):
    """Ids are per sink: a second run's records at the same ring positions are stored too."""
    first = open_sink(nats_server)
    second = open_sink(nats_server)
    assert first.run_id != second.run_id
    first.write_batch(make_batch([record(i) for i in range(10)]))
    second.write_batch(make_batch([record(i) for i in range(10)]))
    first.close()
    second.close()
    assert nats_server.stream_info(STREAM)[0] == 20


def test_an_empty_batch_publishes_nothing(nats_server, make_batch):
    """A batch of 0 records succeeds without a message."""
    sink = open_sink(nats_server)
    sink.write_batch(make_batch([]))
    sink.close()
    assert sink.batches == 1
    assert nats_server.stream_info(STREAM)[0] == 0


def test_a_record_jetstream_refuses_fails_the_batch_with_the_reason(nats_server, make_batch):
    """An error ack (a record over the stream's max_msg_size) raises a one-line, non-retryable SinkError naming it."""
    add_stream(nats_server, "SMALL", ["small"], max_msg_size=64)
    sink = open_sink(nats_server, "small", stream=None)
    with pytest.raises(SinkError) as info:
        sink.write_batch(make_batch([b"ok", b"x" * 200, b"ok too"]))
    sink.close()
    message = one_line(info.value)
    assert "nats://127.0.0.1" in message
    assert "JetStream error 400: message size exceeds maximum allowed" in message
    assert info.value.retryable is False  # resending cannot help


def test_a_batch_without_positions_is_refused(nats_server):
    """write_batch needs a logpipe.Batch: plain bytes have no positions to make ids from."""
    sink = open_sink(nats_server)
    try:
        with pytest.raises(TypeError, match="logpipe.Batch"):
            sink.write_batch(b"a\nb\n")  # type: ignore[arg-type]
    finally:
        sink.close()


# -- the stream ---------------------------------------------------------------


def test_nats_stream_creates_the_stream_once(nats_server):
    """With a stream name the first sink creates it; the next finds it and creates nothing."""
    first = open_sink(nats_server)
    second = open_sink(nats_server)
    try:
        assert (first.stream, first.created_stream) == (STREAM, True)
        assert (second.stream, second.created_stream) == (STREAM, False)
    finally:
        first.close()
        second.close()


def test_without_nats_stream_an_existing_stream_is_used(nats_server, make_batch):
    """No stream name: the stream that takes the subject is found and used."""
    add_stream(nats_server, "EXISTING", ["app.>"])
    sink = open_sink(nats_server, "app.logs", stream=None)
    sink.write_batch(make_batch([record(1)]))
    sink.close()
    assert sink.stream == "EXISTING"
    assert sink.created_stream is False
    assert nats_server.stream_info("EXISTING")[0] == 1


def test_no_stream_for_the_subject_is_a_one_line_error(nats_server):
    """No stream name and no stream for the subject: a clear error that suggests --nats-stream."""
    with pytest.raises(SinkError) as info:
        open_sink(nats_server, "nowhere", stream=None)
    message = one_line(info.value)
    assert "no JetStream stream takes subject 'nowhere'" in message
    assert "--nats-stream" in message
    assert nats_threads() == []


def test_a_stream_that_does_not_take_the_subject_is_a_one_line_error(nats_server):
    """The named stream exists for other subjects: the error names its subjects."""
    add_stream(nats_server, STREAM, ["other"])
    with pytest.raises(SinkError) as info:
        open_sink(nats_server, "logs")
    message = one_line(info.value)
    assert "stream 'LOGS' exists but does not take subject 'logs'" in message
    assert "other" in message


def test_a_server_without_jetstream_is_a_one_line_error(plain_nats_server):
    """A nats-server started without -js: the error says to enable JetStream."""
    with pytest.raises(SinkError) as info:
        open_sink(plain_nats_server)
    assert "has no JetStream (start nats-server with -js)" in one_line(info.value)
    assert nats_threads() == []


def test_an_unreachable_server_at_startup_is_a_one_line_error(nats_server):
    """Nothing listening on the port: build fails at once with the reason, and leaves no thread behind."""
    nats_server.kill()
    before = len(threading.enumerate())
    with pytest.raises(SinkError) as info:
        open_sink(nats_server)
    message = one_line(info.value)
    assert f"nats://127.0.0.1:{nats_server.port}/logs: cannot connect to the NATS server" in message
    assert "nats-server running" in message
    assert info.value.retryable is False
    assert nats_threads() == []
    assert len(threading.enumerate()) == before


# -- outages --------------------------------------------------------------------


def test_writes_fail_while_the_server_is_down_and_succeed_once_it_is_back(nats_server, make_batch):
    """Server stopped: write_batch raises (no hang); restarted: the retried batch is stored once."""
    sink = open_sink(nats_server, ack_timeout=1.0, reconnect_wait=0.05)
    ring = RingBuffer(1000)
    first = make_batch([record(i) for i in range(50)], ring)
    sink.write_batch(first)
    nats_server.stop()
    second = make_batch([record(i) for i in range(50, 100)], ring)
    with pytest.raises(SinkError) as info:
        sink.write_batch(second)
    assert "nats://127.0.0.1" in one_line(info.value)
    assert not sink.connected
    nats_server.start()
    deadline = time.monotonic() + 20
    while True:  # the worker's retry loop, in short
        try:
            sink.write_batch(second)
            break
        except SinkError:
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.1)
    sink.close()
    assert sink.disconnects >= 1
    assert sink.reconnects >= 1
    assert nats_server.stream_info(STREAM)[0] == 100
    seqs = sorted(orjson.loads(data)["seq"] for _, _, data in nats_server.read_stream(STREAM))
    assert seqs == list(range(100))


def test_close_while_the_server_is_down_returns(nats_server, make_batch):
    """close() with the server gone still ends (the loop thread stops) instead of waiting for it."""
    sink = open_sink(nats_server, ack_timeout=0.5)
    sink.write_batch(make_batch([record(1)]))
    nats_server.kill()
    sink.close()
    assert sink.closed
    assert nats_threads() == []


# -- lifecycle ------------------------------------------------------------------


def test_close_is_idempotent_and_later_writes_fail(nats_server, make_batch):
    """close() twice is fine; a write after it raises a non-retryable SinkError; the thread is gone."""
    sink = open_sink(nats_server)
    assert len(nats_threads()) == 1
    sink.flush()
    sink.close()
    sink.close()
    assert nats_threads() == []
    with pytest.raises(SinkError, match="write after close") as info:
        sink.write_batch(make_batch([b"x"]))
    assert info.value.retryable is False
    sink.flush()  # nothing to do, no error


def test_missing_nats_py_is_a_one_line_error(monkeypatch):
    """Without nats-py installed, building the sink says which package to install."""
    monkeypatch.setitem(sys.modules, "nats", None)  # makes `import nats` fail
    with pytest.raises(SinkError) as info:
        NatsSinkConfig.from_target("127.0.0.1:4222/logs").build()
    message = one_line(info.value)
    assert "nats-py" in message
    assert "pip install 'logpipe[nats]'" in message


# -- the config -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "port", "subject"),
    [
        ("127.0.0.1:4223/logs", "127.0.0.1", 4223, "logs"),
        ("localhost/logs", "localhost", 4222, "logs"),
        ("nats.example:1/app.logs.web", "nats.example", 1, "app.logs.web"),
        ("[::1]:5000/logs", "::1", 5000, "logs"),
    ],
)
def test_config_parses_host_port_and_subject(target, host, port, subject):
    """from_target reads HOST, PORT (default 4222) and SUBJECT."""
    config = NatsSinkConfig.from_target(target)
    assert (config.host, config.port, config.subject, config.stream) == (host, port, subject, None)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("127.0.0.1:4222", "has no SUBJECT"),
        ("127.0.0.1:4222/", "has no SUBJECT"),
        (":4222/logs", "has no HOST"),
        ("host:0/logs", "bad PORT '0'"),
        ("host:70000/logs", "bad PORT '70000'"),
        ("host:http/logs", "bad PORT 'http'"),
        ("host:/logs", "empty PORT"),
        ("::1:4222/logs", "IPv6"),
        ("user:pw@host/logs", "credentials"),
        ("host/logs.*", "wildcard"),
        ("host/logs.>", "wildcard"),
        ("host/logs..web", "empty token"),
        ("host/.logs", "empty token"),
        ("host/logs web", "whitespace"),
    ],
)
def test_config_refuses_malformed_targets(target, reason):
    """A malformed target is a ValueError with a short reason (the registry adds the spec and usage)."""
    with pytest.raises(ValueError, match=reason.replace(".", r"\.").replace("*", r"\*")):
        NatsSinkConfig.from_target(target)


def test_check_subject_accepts_concrete_subjects():
    """Dotted tokens without wildcards or whitespace are publishable."""
    assert check_subject("logs") is None
    assert check_subject("app.web-1.logs_v2") is None
    assert check_subject("") == "has no SUBJECT"


def test_config_takes_the_stream_from_the_pipeline_config(nats_server):
    """nats_stream in the settings (from_target) or options (build) names the stream to create."""
    options = PipelineConfig(nats_stream="FROM_OPTIONS")
    config = NatsSinkConfig.from_target(f"127.0.0.1:{nats_server.port}/logs", PipelineConfig(nats_stream="X"))
    assert config.stream == "X"
    sink = config.build(options)
    try:
        assert (sink.stream, sink.created_stream) == ("FROM_OPTIONS", True)
    finally:
        sink.close()


def test_a_bad_stream_name_is_a_one_line_error(nats_server):
    """A stream name JetStream cannot take (a dot, a space) is refused before connecting."""
    config = NatsSinkConfig.from_target(f"127.0.0.1:{nats_server.port}/logs")
    with pytest.raises(SinkError, match="stream name 'BAD.NAME' is not valid") as info:
        config.build(PipelineConfig(nats_stream="BAD.NAME"))
    one_line(info.value)
    assert nats_threads() == []
