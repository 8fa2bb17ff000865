"""The NATS source's consumer setup: a JetStream request that times out is tried again, then given up.

A cluster whose server was just restarted can leave JetStream API requests
unanswered while it elects its leaders; a logpipe started then waits that
out (SETUP_PATIENCE connect timeouts) instead of exiting at the first
timeout. The server here is a stand-in speaking just enough of the NATS
protocol to accept the connection and never answer a JetStream request,
which no real nats-server can be made to do on demand; the other startup
errors are tested against a real one (test_source_nats.py).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from logpipe.application.metrics import Metrics
from logpipe.domain.config import PipelineConfig
from logpipe.exceptions import SourceError
from logpipe.infrastructure.sources import nats as nats_source
from logpipe.infrastructure.sources.context import SourceContext
from logpipe.infrastructure.sources.nats import NatsSource


class SilentJetStream:
    """A TCP server on 127.0.0.1 that greets NATS clients and answers PING, and nothing else.

    Attributes:
        api_requests: the ``$JS.API`` subjects clients published to, in order.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.api_requests: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        info = b'INFO {"server_id":"silent","version":"2.10.0","proto":1,"headers":true,"max_payload":1048576}\r\n'
        pending = b""
        with conn:
            try:
                conn.sendall(info)
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    pending += chunk
                    while b"\r\n" in pending:
                        line, pending = pending.split(b"\r\n", 1)
                        words = line.split()
                        if not words:
                            continue
                        verb = words[0].upper()
                        if verb == b"PING":
                            conn.sendall(b"PONG\r\n")
                        elif verb in (b"PUB", b"HPUB"):
                            size = int(words[-1])
                            while len(pending) < size + 2:
                                more = conn.recv(65536)
                                if not more:
                                    return
                                pending += more
                            pending = pending[size + 2:]
                            if words[1].startswith(b"$JS.API."):
                                with self._lock:
                                    self.api_requests.append(words[1].decode())
            except OSError:
                return

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def silent() -> SilentJetStream:
    server = SilentJetStream()
    yield server
    server.close()


def test_a_setup_that_times_out_is_tried_again_then_given_up_in_one_line(silent: SilentJetStream,
                                                                        tmp_path: Path) -> None:
    context = SourceContext.for_run(PipelineConfig(dead_letter=str(tmp_path / "dl.ndjson")), Metrics())
    timeout = 0.3
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        NatsSource("127.0.0.1", silent.port, "logs", "group", context=context, stream="LOGS",
                   connect_timeout=timeout)  # fmt: skip
    elapsed = time.monotonic() - started
    message = str(caught.value)
    name = f"nats://127.0.0.1:{silent.port}/logs?stream=LOGS&durable=group"
    assert message.startswith(f"{name}: cannot set up the consumer (")
    assert "timeout" in message.lower() and "\n" not in message
    # Asked again (the stream's info, each time) for the whole patience, then stopped.
    assert len(silent.api_requests) >= 2, silent.api_requests
    assert all(subject == "$JS.API.STREAM.INFO.LOGS" for subject in silent.api_requests)
    # It stops short of its patience by at most one pause (no attempt that could not finish in it).
    patience = nats_source.SETUP_PATIENCE * timeout - nats_source.SETUP_RETRY_PAUSE
    assert patience <= elapsed < (nats_source.SETUP_PATIENCE + 5) * timeout + 5
