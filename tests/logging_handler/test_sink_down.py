"""LogpipeHandler with a sink that goes down: a real nats-server, stopped and started again."""

from __future__ import annotations

import threading

import orjson

from logpipe.logging import LogpipeHandler

from _support import wait_until

STREAM = "APPLOGS"
JOIN_TIMEOUT = 60.0


def test_sink_down_blocks_retries_and_loses_nothing(nats_server, make_logger, capfd) -> None:
    """While the NATS server is down the worker retries (saying so on stderr), the ring fills and
    the caller waits (block mode drops nothing); when the server is back every record is stored
    exactly once (retried batches keep their message ids, so JetStream drops the copies)."""
    handler = LogpipeHandler(
        f"nats://127.0.0.1:{nats_server.port}/app.logs", nats_stream=STREAM,
        capacity=64, batch_size=32, batch_timeout=0.02, sigterm=False,
    )
    logger = make_logger(handler)
    for seq in range(100):
        logger.info("before the outage %d", seq, extra={"seq": seq})
    assert handler.flush(timeout=JOIN_TIMEOUT)
    nats_server.stop()
    done = threading.Event()

    def log() -> None:
        for seq in range(100, 600):
            logger.info("during the outage %d %s", seq, "o" * (seq % 300), extra={"seq": seq})
        done.set()

    caller = threading.Thread(target=log)
    caller.start()
    try:
        assert wait_until(lambda: len(handler.ring) == 64, timeout=JOIN_TIMEOUT), "the ring never filled"
        assert wait_until(lambda: handler.metrics.sink_errors.value >= 2, timeout=JOIN_TIMEOUT)
        assert not done.is_set() and handler.dropped == 0
    finally:
        nats_server.start()
    assert done.wait(JOIN_TIMEOUT), "the caller was not released after the server came back"
    caller.join(JOIN_TIMEOUT)
    handler.close()
    seqs = sorted(orjson.loads(payload)["extra"]["seq"] for _, _, payload in nats_server.read_stream(STREAM))
    assert seqs == list(range(600))
    assert "logpipe.logging: Worker 1: sink write failed" in capfd.readouterr().err
