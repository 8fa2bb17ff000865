"""End to end: generator -> null, file and stdout, logpipe vs a naive pipeline.

    python bench/bench_pipeline.py [--count 3000000] [--batch-size 1024] [--channel-size 16384]
                                   [--workers N] [--writes both] [--sinks null,file,stdout]

Both sides produce the same JSON logs ({"msg", "level", "ts", "seq"}) as fast
as they can (--rate 0) and deliver every one; the naive side is what one
writes first in pure Python: a producer thread serialising dicts with orjson
into a bounded queue.Queue, worker threads batching and writing. Both run in
the same process, one after the other, in the same run: read the ratios.
Every run checks its output count, so a fast wrong answer cannot win.
Like the ``logpipe`` command, it asks numpy for one BLAS thread
(``logpipe._blas``) unless the environment says otherwise.

The stdout row writes to a regular file opened as the shell opens one for
``logpipe run --sink stdout > OUT``. ``--workers N`` fixes the pool at N
workers (min = max = N) instead of letting the autoscaler choose up to 4.
``--writes both`` adds a row for the file sink with every write through
``os.write`` (the GIL let go around each one, as before the sink kept it
for small writes) and one for the stdout sink with every batch through the
stream's write and flush (as before it wrote to a regular file's
descriptor), so each pair is compared in the same run. ``--sinks`` picks
the rows.
"""

from __future__ import annotations

import argparse
import io
import os
import queue
import tempfile
import threading
import time

import orjson

from logpipe._blas import limit_blas_threads
from logpipe.application.console import Console
from logpipe.application.pipeline import Pipeline
from logpipe.domain.config import PipelineConfig
from logpipe.infrastructure.sinks.file import FileSink
from logpipe.infrastructure.sinks.null import NullSink
from logpipe.infrastructure.sinks.stdout import StdoutSink


def naive(count: int, batch_size: int, capacity: int, workers: int, path: str | None) -> float:
    """queue.Queue + threads + orjson: the baseline."""
    q: queue.Queue[bytes | None] = queue.Queue(capacity)
    out = open(path, "ab") if path else None  # noqa: SIM115 - closed below
    lock = threading.Lock()
    delivered = [0]

    def produce() -> None:
        for seq in range(count):
            log = {"msg": "hello from producer", "level": "INFO", "ts": time.time_ns() // 1000, "seq": seq}
            q.put(orjson.dumps(log))
        for _ in range(workers):
            q.put(None)

    def work() -> None:
        batch: list[bytes] = []
        while True:
            item = q.get()
            if item is not None:
                batch.append(item)
            if len(batch) >= batch_size or (item is None and batch):
                data = b"\n".join(batch) + b"\n"
                with lock:
                    if out is not None:
                        out.write(data)
                    delivered[0] += len(batch)
                batch = []
            if item is None:
                return

    start = time.perf_counter()
    threads = [threading.Thread(target=produce)] + [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if out is not None:
        out.close()
    elapsed = time.perf_counter() - start
    assert delivered[0] == count, (delivered[0], count)
    return count / elapsed


def make_sink(kind: str, path: str | None):
    """The sink of a row: null, file, stdout (to a regular file, as ``> OUT``), or a ``/`` variant."""
    if kind == "null":
        return NullSink(), None
    if kind.startswith("file"):
        sink = FileSink(path)
        if kind == "file/os.write":
            sink._writes.regular = False  # every write through os.write
        return sink, None
    stream = open(path, "wb")  # what the shell gives `logpipe run --sink stdout > OUT`
    sink = StdoutSink(stream)
    if kind == "stdout/stream":
        sink._file_fd = -1  # every batch through the stream's write and flush, as before
    return sink, stream


def logpipe_run(count: int, batch_size: int, capacity: int, path: str | None, workers: int | None,
                kind: str) -> float:  # fmt: skip
    pool = {"min_workers": workers, "max_workers": workers} if workers else {"max_workers": 4}
    config = PipelineConfig(rate=0, count=count, batch_size=batch_size, channel_size=capacity, **pool)
    sink, stream = make_sink(kind, path)
    pipeline = Pipeline(config, sink, console=Console(io.StringIO()))
    report = pipeline.run()
    if stream is not None:
        stream.close()
    assert report.processed == count and report.lost == 0, report
    return count / report.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--channel-size", type=int, default=16384)
    parser.add_argument("--naive-count", type=int, default=300_000, help="the baseline is ~50x slower")
    parser.add_argument("--workers", type=int, default=None, help="fixed pool size (default: autoscaled, up to 4)")
    parser.add_argument("--writes", choices=("auto", "both"), default="auto",
                        help="both: also the file sink with every write through os.write, and the "
                             "stdout sink with every batch through the stream")
    parser.add_argument("--sinks", default="null,file,stdout",
                        help="comma-separated rows: null, file, stdout (to a regular file)")
    args = parser.parse_args()
    limit_blas_threads()  # as the logpipe command does, before the generator imports numpy
    rows = []
    sinks = args.sinks.split(",")
    if args.writes == "both":
        sinks += [f"{kind}/{way}" for kind, way in (("file", "os.write"), ("stdout", "stream")) if kind in sinks]
    with tempfile.TemporaryDirectory() as tmp:
        for sink in sinks:
            to_file = sink != "null"
            paths = [os.path.join(tmp, f"{side}-{sink.replace('/', '-')}.ndjson") if to_file else None for side in ("a", "b")]
            ours = logpipe_run(args.count, args.batch_size, args.channel_size, paths[0], args.workers, sink)
            theirs = naive(args.naive_count, args.batch_size, args.channel_size, 2, paths[1])
            if paths[0]:
                with open(paths[0], "rb") as f:
                    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
                assert lines == args.count, (lines, args.count)
            rows.append((sink, ours, theirs))
    print(f"{'sink':<14} {'logpipe logs/s':>16} {'naive logs/s':>14} {'ratio':>7}")
    for sink, ours, theirs in rows:
        print(f"{sink:<14} {ours:>16,.0f} {theirs:>14,.0f} {ours / theirs:>6.1f}x")
    pool = f"--min-workers {args.workers} --max-workers {args.workers}" if args.workers else "--max-workers 4"
    print(f"(logpipe: --rate 0 --count {args.count} --batch-size {args.batch_size} "
          f"--channel-size {args.channel_size} {pool})")


if __name__ == "__main__":
    main()
