"""logpipe.logging.LogpipeHandler in one process: delivery, the JSON line, drop mode, close, bad input."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from logpipe.exceptions import ConfigError
from logpipe.infrastructure.sinks import FileSink
from logpipe.logging import LogpipeHandler

from logging_handler.conftest import read_lines

from _support import wait_until

JOIN_TIMEOUT = 30.0


def log_tagged(logger: logging.Logger, thread: int, count: int, rng: random.Random) -> None:
    """Log ``count`` records tagged (thread, seq), of mixed sizes: empty padding to several KiB."""
    for seq in range(count):
        pad = "x" * rng.choice((0, 1, 90, 500, 3000, 9000))
        logger.info("thread %d seq %d %s", thread, seq, pad, extra={"t": thread, "seq": seq})


def run_threads(target, count: int) -> None:
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a logging thread did not finish"


def test_every_record_from_many_threads_arrives_once_in_order(tmp_path: Path, make_logger) -> None:
    """8 threads log 1500 tagged records each through a small ring (the callers block while it is
    full): the file holds every (thread, seq) exactly once, each thread's records in order."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", capacity=64, batch_size=50, batch_timeout=0.02, sigterm=False)
    logger = make_logger(handler)
    run_threads(lambda n: log_tagged(logger, n, 1500, random.Random(n)), 8)
    handler.close()
    records = read_lines(out)
    tags = [(r["extra"]["t"], r["extra"]["seq"]) for r in records]
    assert len(tags) == len(set(tags)) == 8 * 1500
    for thread in range(8):  # one worker: each thread's records in the order logged
        assert [seq for t, seq in tags if t == thread] == list(range(1500))
    assert handler.written == 8 * 1500 and handler.dropped == 0 and handler.pending == 0


def test_many_workers_and_rotation_lose_nothing(tmp_path: Path, make_logger) -> None:
    """With an autoscaled pool (1 to 4 workers) and a file rotated every 64 KiB, the rotated files
    and the current one together hold every tagged record exactly once."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(
        f"file:{out}", capacity=128, batch_size=64, batch_timeout=0.02, workers=1, max_workers=4,
        scale_interval=0.05, rotate_bytes=64 * 1024, rotate_keep=10_000, sigterm=False,
    )
    logger = make_logger(handler)
    run_threads(lambda n: log_tagged(logger, n, 800, random.Random(100 + n)), 6)
    handler.close()
    files = sorted(tmp_path.glob("app.ndjson*"))
    assert len(files) > 10, "the file was not rotated"
    tags = [(r["extra"]["t"], r["extra"]["seq"]) for r in read_lines(*files)]
    assert sorted(tags) == [(t, s) for t in range(6) for s in range(800)]


def test_json_fields(tmp_path: Path, make_logger) -> None:
    """A line has ts (Unix microseconds), level, logger, the formatted msg and the thread name;
    exc and stack only when given; every non-standard attribute under extra, in order."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", sigterm=False)
    logger = make_logger(handler)
    before = time.time()
    logger.warning("disk %s at %d%%", "/var", 93, extra={"level": "shadow", "ts": 1, "user": {"id": 7}})
    try:
        {}["missing"]
    except KeyError:
        logger.exception("lookup failed")
    logger.debug("here", stack_info=True)
    handler.close()
    warning, error, debug = read_lines(out)
    assert before * 1e6 - 1 <= warning["ts"] <= time.time() * 1e6 and isinstance(warning["ts"], int)
    assert warning == {
        "ts": warning["ts"], "level": "WARNING", "logger": logger.name, "msg": "disk /var at 93%",
        "thread": "MainThread", "extra": {"level": "shadow", "ts": 1, "user": {"id": 7}},
    }
    assert error["level"] == "ERROR" and error["msg"] == "lookup failed"
    assert error["exc"].startswith("Traceback (most recent call last):")
    assert error["exc"].endswith("KeyError: 'missing'") and "extra" not in error and "stack" not in error
    assert debug["stack"].startswith("Stack (most recent call last):") and "exc" not in debug


def test_text_that_json_cannot_take_is_kept_readable(tmp_path: Path, make_logger) -> None:
    """Non-ASCII text arrives as it is; lone surrogates (surrogateescape'd bytes) arrive as
    \\udcxx escapes in valid UTF-8, as do unknown types (their str()), huge ints and int keys."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", sigterm=False)
    logger = make_logger(handler)
    name = b"caf\xc3\xa9-\xff\xfe.txt".decode("utf-8", "surrogateescape")
    logger.info("Grüße, 日本語, emoji \U0001f600")
    logger.info("opened %s", name, extra={"path": name, "\udce9key": 1})
    logger.info("odd extras", extra={"when": object, "big": 2**80, "by_id": {1: "a"}, "ok": [1.5, None]})
    handler.close()
    data = out.read_bytes()
    data.decode("utf-8")  # valid UTF-8 throughout
    plain, opened, odd = read_lines(out)
    assert plain["msg"] == "Grüße, 日本語, emoji \U0001f600"
    assert opened["msg"] == "opened café-\\udcff\\udcfe.txt"
    assert opened["extra"] == {"path": "café-\\udcff\\udcfe.txt", "\\udce9key": 1}
    assert odd["extra"] == {"when": "<class 'object'>", "big": str(2**80), "by_id": {"1": "a"}, "ok": [1.5, None]}


def test_a_formatter_makes_the_msg(tmp_path: Path, make_logger) -> None:
    """With a Formatter set, msg is its output (the traceback included), and there is no exc field;
    basicConfig's default formatter counts as none (it would repeat level and logger in msg)."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", sigterm=False)
    handler.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    assert handler.formatter is None
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = make_logger(handler)
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed %d", 3)
    handler.close()
    (line,) = read_lines(out)
    assert line["msg"].startswith(f"ERROR {logger.name}: failed 3\nTraceback (most recent call last):")
    assert line["msg"].endswith("ValueError: bad") and "exc" not in line


def open_stalled_fifo(path: Path) -> int:
    """A FIFO with a reader that never reads: writes block once the pipe's buffer is full."""
    os.mkfifo(path)
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def fill_pipe(path: Path) -> None:
    """Fill the FIFO's pipe buffer with ``{}`` lines, so that the sink's first write blocks."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        while True:
            os.write(fd, b"{}\n")
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def drain(fd: int, into: bytearray) -> None:
    """Read the FIFO until its writer closes it (the sink moves again)."""
    os.set_blocking(fd, True)
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return  # the writer closed
        into += chunk


def test_drop_mode_never_blocks_and_counts(tmp_path: Path, make_logger, capfd) -> None:
    """With the sink stalled, drop mode returns from every call, counts what did not fit, and
    reports it on stderr (the counts of the warnings add up to handler.dropped); once the sink
    moves again every accepted record is written, so written + dropped = logged."""
    fifo = tmp_path / "stalled.fifo"
    reader = open_stalled_fifo(fifo)
    handler = LogpipeHandler(
        FileSink(fifo, fsync=False), when_full="drop", capacity=32, batch_size=16,
        batch_timeout=0.01, drop_report_interval=0.05, sigterm=False,
    )
    logger = make_logger(handler)
    total = 3000
    run_threads(lambda n: [logger.info("r %d %d %s", n, i, "y" * 300, extra={"t": n, "seq": i})
                           for i in range(total // 3)], 3)
    assert handler.dropped > 0
    time.sleep(0.15)  # at least one report interval with drops in it
    got = bytearray()
    reading = threading.Thread(target=drain, args=(reader, got))
    reading.start()
    handler.close()
    reading.join(JOIN_TIMEOUT)
    os.close(reader)
    lines = [orjson.loads(line) for line in bytes(got).splitlines()]
    assert len(lines) == handler.written == total - handler.dropped
    assert len({(r["extra"]["t"], r["extra"]["seq"]) for r in lines}) == len(lines)
    err = capfd.readouterr().err
    counts = [int(line.split()[2]) for line in err.splitlines() if line.startswith("logpipe.logging: dropped ")]
    assert sum(counts) == handler.dropped and len(counts) >= 1, err


def test_block_mode_waits_for_room(tmp_path: Path, make_logger) -> None:
    """With the sink stalled, block mode holds the caller once the ring is full (nothing dropped),
    and lets it go on when the sink moves: every record is written."""
    fifo = tmp_path / "stalled.fifo"
    reader = open_stalled_fifo(fifo)
    handler = LogpipeHandler(FileSink(fifo, fsync=False), capacity=16, batch_size=8, batch_timeout=0.01, sigterm=False)
    logger = make_logger(handler)
    done = threading.Event()

    def log() -> None:
        for i in range(2000):
            logger.info("r %d %s", i, "z" * 400, extra={"seq": i})
        done.set()

    caller = threading.Thread(target=log)
    got = bytearray()
    reading = threading.Thread(target=drain, args=(reader, got))
    try:
        caller.start()
        assert wait_until(lambda: len(handler.ring) == 16, timeout=JOIN_TIMEOUT), "the ring never filled"
        assert not done.wait(0.5), "the caller was not held while the sink was stalled"
        assert handler.dropped == 0 and len(handler.ring) == 16
    finally:
        reading.start()  # the sink moves again: nothing stays blocked, whatever failed
    assert done.wait(JOIN_TIMEOUT)
    caller.join(JOIN_TIMEOUT)
    handler.close()
    reading.join(JOIN_TIMEOUT)
    os.close(reader)
    assert [orjson.loads(line)["extra"]["seq"] for line in bytes(got).splitlines()] == list(range(2000))


def test_block_mode_never_holds_a_pipeline_thread(tmp_path: Path, make_logger) -> None:
    """A record logged by one of the pipeline's own threads (named logpipe-*: the NATS sink's event
    loop, where nats-py and asyncio log) is dropped and counted when the ring is full, instead of
    waiting for room that only that thread could make; application threads still wait."""
    fifo = tmp_path / "stalled.fifo"
    reader = open_stalled_fifo(fifo)
    fill_pipe(fifo)  # stalled from the first write: the ring, once full, stays full
    handler = LogpipeHandler(FileSink(fifo, fsync=False), capacity=4, batch_size=2, batch_timeout=0.01, sigterm=False)
    logger = make_logger(handler)
    app = threading.Thread(target=lambda: [logger.info("app %d %s", i, "a" * 2000) for i in range(200)])
    own = threading.Thread(target=lambda: [logger.warning("from the sink's loop %d", i) for i in range(10)],
                           name="logpipe-nats")
    got = bytearray()
    reading = threading.Thread(target=drain, args=(reader, got))
    try:
        app.start()
        # Stalled for good: the worker holds a batch (its write blocks on the full pipe) and the
        # ring is full. (A ring seen full before the worker took its first batch would make room
        # for some of the records below: a worker thread that starts late on a loaded machine.)
        assert wait_until(lambda: handler.metrics.ledger().in_batches > 0 and len(handler.ring) == 4, timeout=JOIN_TIMEOUT)
        own.start()
        own.join(JOIN_TIMEOUT)
        assert not own.is_alive(), "a logpipe thread was held by a full ring"
        assert app.is_alive()
        assert handler.metrics.dropped.by_reason() == {"logged_by_logpipe_thread": 10}
    finally:
        reading.start()  # the sink moves again: nothing stays blocked, whatever failed
        app.join(JOIN_TIMEOUT)
        handler.close()
        reading.join(JOIN_TIMEOUT)
        os.close(reader)
    assert not app.is_alive()
    assert len([line for line in bytes(got).splitlines() if line != b"{}"]) == 200


def test_flush_and_close(tmp_path: Path, make_logger) -> None:
    """flush() returns True once everything logged before it is in the file (the batches are
    far from full: the workers' batch timeout ends them); close() is idempotent."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", batch_size=10_000, batch_timeout=0.3, sigterm=False)
    logger = make_logger(handler)
    for i in range(100):
        logger.info("r %d", i)
    assert handler.flush(timeout=30)
    assert len(read_lines(out)) == 100
    handler.close()
    handler.close()
    assert handler.closed


def test_after_close_records_go_to_stderr(tmp_path: Path, make_logger, capfd) -> None:
    """A record logged after close() is written to stderr as its JSON line, with one notice."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", sigterm=False)
    logger = make_logger(handler)
    handler.close()
    logger.info("too late %d", 1)
    logger.info("too late %d", 2)
    err = capfd.readouterr().err.splitlines()
    assert err[0].startswith("logpipe.logging: a record was logged after the handler was closed")
    assert [orjson.loads(line)["msg"] for line in err[1:]] == ["too late 1", "too late 2"]
    assert out.read_bytes() == b""


def test_oversized_record_is_dropped_and_reported(tmp_path: Path, make_logger, capfd) -> None:
    """A line over max_record_size is dropped with one stderr line (even in block mode); the rest arrive."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", max_record_size=4096, sigterm=False)
    logger = make_logger(handler)
    logger.info("small")
    logger.info("big %s", "b" * 5000)
    logger.info("small again")
    handler.close()
    assert [r["msg"] for r in read_lines(out)] == ["small", "small again"]
    assert handler.dropped == 1
    assert "dropped a log record of 5" in capfd.readouterr().err


def test_filters_apply(tmp_path: Path, make_logger) -> None:
    """Handler filters still run (handle skips the lock, not the filters)."""
    out = tmp_path / "app.ndjson"
    handler = LogpipeHandler(f"file:{out}", sigterm=False)
    handler.addFilter(lambda record: "secret" not in record.getMessage())
    logger = make_logger(handler)
    logger.info("public")
    logger.info("secret stuff")
    handler.close()
    assert [r["msg"] for r in read_lines(out)] == ["public"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"when_full": "wait"}, "LogpipeHandler: when_full 'wait' is not one of 'block', 'drop'"),
        ({"capacity": 0}, "LogpipeHandler: capacity 0 must be an integer >= 1"),
        ({"batch_size": 1.5}, "LogpipeHandler: batch_size 1.5 must be an integer >= 1"),
        ({"batch_timeout": "10 parsecs"}, "LogpipeHandler: batch_timeout: '10 parsecs' is not a duration"),
        ({"batch_timeout": 0}, "LogpipeHandler: batch_timeout 0 must be more than 0 seconds"),
        ({"workers": 3, "max_workers": 2}, "LogpipeHandler: max_workers 2 is below workers 3"),
        ({"sink": "kafka://x"}, "LogpipeHandler sink: unknown sink 'kafka://x' (known: "),
        ({"sink": "file:/nonexistent-dir/x.log"}, "LogpipeHandler sink: cannot open file:/nonexistent-dir/x.log"),
        ({"sink": 42}, "LogpipeHandler: sink 42 is neither a sink spec nor a Sink"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, kwargs: dict, message: str) -> None:
    """Each bad argument is a ConfigError (a ValueError) of one line naming it."""
    kwargs = {"sink": f"file:{tmp_path / 'x.log'}", **kwargs}
    with pytest.raises(ConfigError) as caught:
        LogpipeHandler(sigterm=False, **kwargs)
    text = str(caught.value)
    assert text.startswith(message) and "\n" not in text


def test_stdout_sink_spec() -> None:
    """Any sink spec works: with "stdout" a program's log lines come out on its standard output."""
    code = (
        "import logging; from logpipe.logging import LogpipeHandler;"
        "logging.basicConfig(level=logging.INFO, handlers=[LogpipeHandler('stdout')]);"
        "[logging.getLogger('app').info('line %d', i) for i in range(500)]"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=JOIN_TIMEOUT)
    assert (done.returncode, done.stderr) == (0, b"")
    assert [orjson.loads(line)["msg"] for line in done.stdout.splitlines()] == [f"line {i}" for i in range(500)]


def test_a_trickle_wakes_a_worker_once_a_batch_and_an_idle_record_goes_at_once(tmp_path: Path, make_logger) -> None:
    """The worker gathers its batch parked in the ring (its need noted there), so a trickle of
    records costs a few wake-ups per batch, not one per record; after an idle spell the first
    record is written at once, not after the batch timeout (30 s here: waiting for it fails)."""
    out = tmp_path / "out.ndjson"
    handler = LogpipeHandler(f"file:{out}", capacity=1024, batch_size=50, batch_timeout=30.0, sigterm=False)
    logger = make_logger(handler)
    logger.info("first after idle")
    assert wait_until(lambda: len(read_lines(out)) == 1, timeout=5.0), "an idle worker held the first record back"
    wakes_before = handler.ring.get_wakes
    for i in range(400):
        logger.info("r %d", i)
        time.sleep(0.0003)
    handler.close()
    messages = [line["msg"] for line in read_lines(out)]
    assert messages == ["first after idle"] + [f"r {i}" for i in range(400)]
    wakes = handler.ring.get_wakes - wakes_before
    assert wakes <= 40, f"{wakes} wake-ups of the worker for 400 records in batches of 50"
