"""Tests for logpipe.infrastructure.sinks.nats: batch mode, the in-flight window, and choosing the mode.

Against a real nats-server (see conftest.py). Records are tagged with their
seq, which is also their ring position (each ring starts at 0), so every
message id and every record can be checked against what was written.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from sinks_nats.conftest import add_stream

from logpipe import RingBuffer
from logpipe.domain.config import PipelineConfig
from logpipe.exceptions import ConfigError, SinkError
from logpipe.infrastructure.registry import SINKS
from logpipe.infrastructure.sinks.nats import NatsSink, NatsSinkConfig, batch_msg_id

STREAM = "LOGS"
SUBJECT = "logs"


def record(seq: int) -> bytes:
    """Production-like and varied: mostly ~85-byte JSON, every 7th a few KiB, every 11th invalid UTF-8."""
    if seq % 11 == 5:
        return b'{"seq": %d, "msg": "caf\xe9 \xff\xfe latin-1 and junk"}' % seq
    pad = b"x" * (1024 + 512 * (seq % 5)) if seq % 7 == 3 else b"hello from producer"
    return b'{"msg": "%s", "level": "INFO", "ts": 1712345678123456, "seq": %d}' % (pad, seq)


def seq_of(data: bytes) -> int:
    return int(data.rpartition(b'"seq": ')[2].split(b",")[0].rstrip(b"}"))


def open_sink(server, subject: str = SUBJECT, **kwargs) -> NatsSink:
    kwargs.setdefault("stream", STREAM)
    kwargs.setdefault("mode", "batch")
    return NatsSink("127.0.0.1", server.port, subject, **kwargs)


def split_messages(sink: NatsSink, messages) -> list[bytes]:
    """Check every batch-mode message's framing and headers; return its records in stream order."""
    records: list[bytes] = []
    for _, headers, body in messages:
        assert set(headers) == {"Nats-Msg-Id", "Logpipe-Records", "Logpipe-Framing"}, headers
        assert headers["Logpipe-Framing"] == "ndjson"
        assert body.endswith(b"\n")
        lines = body.split(b"\n")[:-1]
        assert headers["Logpipe-Records"] == str(len(lines))
        # seq == ring position, so the id names the message's first record and its count.
        assert headers["Nats-Msg-Id"] == batch_msg_id(sink.run_id, seq_of(lines[0]), len(lines))
        records.extend(lines)
    return records


def run_workers(ring: RingBuffer, sink: NatsSink, batch_size: int, workers: int, deadline: float) -> list[BaseException]:
    """Worker threads that drain ``ring`` into ``sink``, retrying failed batches as logpipe's workers do."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                try:
                    batch = ring.get_batch(batch_size, timeout=1)
                except Exception:  # noqa: BLE001 - Closed: drained
                    return
                while True:
                    try:
                        sink.write_batch(batch)
                        break
                    except SinkError as exc:
                        if not exc.retryable or time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, name=f"test-worker-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(1.0, deadline - time.monotonic()))
        assert not thread.is_alive(), "a worker did not finish"
    return errors


# -- batch mode ---------------------------------------------------------------------


def test_batch_mode_stores_each_batch_as_one_message_and_every_record_once(nats_server):
    """5,000 mixed records (KiB lines, invalid UTF-8) from 4 threads: one message per batch, headers right, each record once."""
    total = 5_000
    ring = RingBuffer(total)
    assert ring.put_many([record(i) for i in range(total)]) == total
    ring.close()
    sink = open_sink(nats_server)
    errors = run_workers(ring, sink, batch_size=317, workers=4, deadline=time.monotonic() + 60)
    sink.flush()
    sink.close()
    assert errors == []
    assert sink.records == total
    assert sink.duplicates == 0

    messages = nats_server.read_stream(STREAM)
    assert len(messages) == sink.batches == -(-total // 317)
    records = split_messages(sink, messages)
    assert sorted(records, key=seq_of) == [record(i) for i in range(total)]
    assert sink.nbytes == sum(len(r) + 1 for r in records)


def test_a_retried_batch_is_stored_once_in_batch_mode(nats_server, make_batch):
    """The same batch written twice (a worker's retry) is one message: the second ack says duplicate."""
    sink = open_sink(nats_server)
    batch = make_batch([record(i) for i in range(100)])
    sink.write_batch(batch)
    sink.write_batch(batch)
    sink.close()
    messages = nats_server.read_stream(STREAM)
    assert len(messages) == 1
    assert split_messages(sink, messages) == [record(i) for i in range(100)]
    assert sink.duplicates == 100  # counted in records, not messages
    assert sink.records == 200


def test_a_batch_over_the_stream_limit_is_split_at_record_boundaries(nats_server, make_batch):
    """A stream with max_msg_size 4 KiB: a 25 KB batch becomes several messages that fit, each named by its own records."""
    add_stream(nats_server, "SMALL", ["small"], max_msg_size=4096, duplicate_window=120.0)
    sink = open_sink(nats_server, "small", stream=None)
    records = [b'{"seq": %d, "pad": "%s"}' % (i, b"y" * (i % 200)) for i in range(250)]
    batch = make_batch(records)
    sink.write_batch(batch)
    sink.write_batch(batch)  # a retry: every part is a duplicate
    sink.close()
    messages = nats_server.read_stream("SMALL")
    assert len(messages) >= 6
    for _, headers, body in messages:
        assert len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12 <= 4096
    assert split_messages(sink, messages) == records
    assert sink.duplicates == 250


class TwoRunBatch:
    """A batch whose records sat in two separate runs of ring positions (as when workers' claims interleave)."""

    def __init__(self, records: list[bytes], positions: list[tuple[int, int]]) -> None:
        self.records = records
        self.positions = positions

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __bytes__(self) -> bytes:
        return b"".join(r + b"\n" for r in self.records)


def test_message_ids_follow_the_positions_of_each_part_across_position_runs(nats_server):
    """Positions 100-139 and 500-539, split by a 2 KiB stream limit: each part is named by its own first position and count."""
    add_stream(nats_server, "SMALL", ["small"], max_msg_size=2048, duplicate_window=120.0)
    sink = open_sink(nats_server, "small", stream=None)
    positions = [(100, 40), (500, 40)]
    wanted = [p for first, n in positions for p in range(first, first + n)]
    records = [b'{"pos": %d, "pad": "%s"}' % (p, b"q" * (p % 60)) for p in wanted]
    sink.write_batch(TwoRunBatch(records, positions))
    sink.close()
    messages = nats_server.read_stream("SMALL")
    assert len(messages) > 2
    stored: list[bytes] = []
    firsts = []
    for _, headers, body in messages:
        lines = body.split(b"\n")[:-1]
        firsts.append(wanted[len(stored)])  # the position of this part's first record
        assert headers["Nats-Msg-Id"] == batch_msg_id(sink.run_id, firsts[-1], len(lines))
        assert headers["Logpipe-Records"] == str(len(lines))
        stored.extend(lines)
    assert stored == records
    assert firsts[0] == 100 and max(firsts) > 500  # a part is named by a position of the second run


def test_a_record_over_the_stream_limit_fails_the_batch_for_good(nats_server, make_batch):
    """A record alone larger than max_msg_size cannot be stored however it is split: non-retryable, one line."""
    add_stream(nats_server, "SMALL", ["small"], max_msg_size=4096)
    sink = open_sink(nats_server, "small", stream=None)
    with pytest.raises(SinkError) as info:
        sink.write_batch(make_batch([b"ok", b"z" * 5000, b"ok too"]))
    sink.close()
    message = str(info.value)
    assert "\n" not in message
    assert "JetStream error 400: message size exceeds maximum allowed" in message
    assert info.value.retryable is False


def test_a_record_holding_a_newline_is_refused_in_batch_mode(nats_server, make_batch):
    """NDJSON framing cannot carry a record with b"\\n" in it: the batch fails for good, nothing is stored."""
    sink = open_sink(nats_server)
    with pytest.raises(SinkError, match="a record holds a newline") as info:
        sink.write_batch(make_batch([b"one", b"two\nlines", b"three"]))
    sink.close()
    assert info.value.retryable is False
    assert nats_server.stream_info(STREAM)[0] == 0


# -- the window (per-record mode) ------------------------------------------------------


def test_per_record_mode_keeps_its_window_and_stores_every_record_once_through_an_outage(nats_server):
    """A 64-message window, 4 workers, the server killed and restarted mid-run: never over 64 unacked, each record once."""
    total = 30_000
    kill_at = 2_000  # early, so that most of the run is still to come when the server goes
    ring = RingBuffer(total)
    assert ring.put_many([record(i) for i in range(total)]) == total
    ring.close()
    sink = open_sink(nats_server, mode="record", max_inflight=64, ack_timeout=1.0, reconnect_wait=0.05)
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.0005):
            peak[0] = max(peak[0], sink.pending_acks)

    sampler = threading.Thread(target=sample, name="test-sampler")
    sampler.start()
    outage_done = threading.Event()
    killed_at: list[int] = []

    def chaos() -> None:
        try:
            deadline = time.monotonic() + 30
            while sink.records < kill_at and time.monotonic() < deadline:
                time.sleep(0.005)
            killed_at.append(sink.records)
            nats_server.kill()
            time.sleep(0.5)
        finally:
            nats_server.start()
            outage_done.set()

    outage = threading.Thread(target=chaos, name="test-chaos")
    outage.start()
    errors = run_workers(ring, sink, batch_size=500, workers=4, deadline=time.monotonic() + 90)
    outage.join(30)
    sampling.set()
    sampler.join(5)
    assert not outage.is_alive() and not sampler.is_alive()
    assert outage_done.is_set()
    assert kill_at <= killed_at[0] < total  # the outage came mid-run
    sink.close()
    assert errors == []
    assert 0 < peak[0] <= 64
    assert sink.pending_acks == 0  # every slot given back, acked or given up on
    assert sink.disconnects >= 1 and sink.reconnects >= 1

    messages = nats_server.read_stream(STREAM)
    stored = sorted((data for _, _, data in messages), key=seq_of)
    assert stored == [record(i) for i in range(total)]
    for _, headers, data in messages:
        assert headers == {"Nats-Msg-Id": f"{sink.run_id}-{seq_of(data)}"}


def test_per_record_mode_sends_records_larger_than_its_write_chunk_whole(nats_server, make_batch):
    """Records of 1 byte to 900 KiB mixed in one batch (frames above and below the 256 KiB write chunk): each stored once, intact."""
    sizes = [1, 300 << 10, 85, 900 << 10, 2, 256 << 10, 70, (256 << 10) - 60, 5000] * 3
    records = [b"%d:" % i + bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]
    ring = RingBuffer(len(records), max_record_size=1 << 20)
    sink = open_sink(nats_server, mode="record", max_inflight=5)
    sink.write_batch(make_batch(records, ring))
    sink.close()
    stored = [data for _, _, data in nats_server.read_stream(STREAM)]
    assert stored == records


@pytest.mark.timeout(30)
def test_refusals_that_fill_the_window_fail_the_batch_at_once_with_their_reason(nats_server, make_batch):
    """Per-record mode, a window of 4 and 40 records the stream refuses: the JetStream reason, without waiting for acks.

    The ack timeout is a minute: a refusal that did not free its slot would
    leave the batch waiting for room until then, and the test's timeout fails it.
    """
    add_stream(nats_server, "TINY", ["tiny"], max_msg_size=64)
    sink = open_sink(nats_server, "tiny", stream=None, mode="record", max_inflight=4, ack_timeout=60.0)
    with pytest.raises(SinkError) as info:
        sink.write_batch(make_batch([b"r" * 100] * 40))
    sink.close()
    assert "JetStream error 400: message size exceeds maximum allowed" in str(info.value)
    assert "not acknowledged" not in str(info.value)  # it did not wait out the ack timeout
    assert info.value.retryable is False
    assert sink.pending_acks == 0


# -- choosing the mode ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "settings", "mode"),
    [
        ("127.0.0.1:4222/logs", None, "record"),
        ("127.0.0.1:4222/logs?mode=batch", None, "batch"),
        ("127.0.0.1:4222/logs?mode=record", None, "record"),
        ("127.0.0.1:4222/logs", PipelineConfig(nats_mode="batch"), "batch"),
        ("127.0.0.1:4222/logs?mode=batch", PipelineConfig(nats_mode="batch"), "batch"),
        ("127.0.0.1:4222/logs?mode=batch", PipelineConfig(), "batch"),
    ],
)
def test_the_mode_comes_from_the_spec_or_the_flag(spec, settings, mode):
    """?mode= and --nats-mode both choose the mode; record is the default; the subject stops at '?'."""
    config = NatsSinkConfig.from_target(spec, settings)
    assert (config.subject, config.mode) == ("logs", mode)


@pytest.mark.parametrize(
    ("spec", "settings", "reason"),
    [
        ("nats://h/logs?mode=fast", None, "has mode='fast', which is not one of record, batch"),
        ("nats://h/logs?", None, "has an empty query after '?'"),
        ("nats://h/logs?stream=X", None, "has an unknown option 'stream=X' after '?' (known: mode=record, mode=batch)"),
        ("nats://h/logs?mode", None, "has an unknown option 'mode'"),
        ("nats://h/logs?mode=batch&mode=batch", None, "gives mode twice"),
        ("nats://h/logs?mode=batch", PipelineConfig(nats_mode="record"), "says mode=batch but --nats-mode is record"),
    ],
)
def test_a_bad_mode_is_a_one_line_error_naming_the_spec(spec, settings, reason):
    """A mode that is unknown, malformed or contradicts --nats-mode stops the run before connecting."""
    with pytest.raises(ConfigError) as info:
        SINKS.parse(spec, settings=settings)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"--sink: {spec!r} ")
    assert reason in message


def test_the_flag_replaces_the_mode_at_build_and_bad_values_are_refused(nats_server):
    """build(options) takes --nats-mode; a mode or window the sink cannot have is a ValueError before connecting."""
    config = NatsSinkConfig.from_target(f"127.0.0.1:{nats_server.port}/logs")
    sink = config.build(PipelineConfig(nats_stream=STREAM, nats_mode="batch"))
    try:
        assert sink.mode == "batch"
    finally:
        sink.close()
    with pytest.raises(ValueError, match="mode 'fast' is not one of record, batch"):
        NatsSink("127.0.0.1", nats_server.port, "logs", mode="fast")
    with pytest.raises(ValueError, match=r"max_inflight 0 is out of range \(must be >= 1\)"):
        NatsSink("127.0.0.1", nats_server.port, "logs", max_inflight=0)


def test_logpipe_run_with_nats_mode_batch_delivers_every_record_once(nats_server, tmp_path):
    """`logpipe run --nats-mode batch` end to end: exit 0, every seq once, in batch-mode messages."""
    count = 20_000
    done = subprocess.run(
        [
            sys.executable, "-m", "logpipe", "run", "--rate", "0", "--count", str(count),
            "--batch-size", "1000", "--channel-size", "8192",
            "--sink", f"nats://127.0.0.1:{nats_server.port}/{SUBJECT}",
            "--nats-stream", STREAM, "--nats-mode", "batch",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "lost=0" in done.stdout + done.stderr
    messages = nats_server.read_stream(STREAM)
    seqs = []
    for _, headers, body in messages:
        lines = body.split(b"\n")[:-1]
        assert headers["Logpipe-Records"] == str(len(lines))
        seqs.extend(seq_of(line) for line in lines)
    assert len(messages) < count // 100  # batches, not records
    assert sorted(seqs) == list(range(count))
