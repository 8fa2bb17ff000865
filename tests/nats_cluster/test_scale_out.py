"""The scale-out proof: agents -> R3 stream on a 3-node cluster -> a consumer group -> files.

Two ``logpipe run`` agents (the generator, each with its own ``--message``,
so every record is unique by (msg, seq)) publish through the nats sink to
different nodes; two ``logpipe run`` consumers share one durable consumer
and write a file each. During the run one server and then one consumer are
killed with SIGKILL and started again.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from _support import logpipe_command, wait_until

STREAM = "LOGS"
SUBJECT = "logs"
PER_AGENT = 15_000
AGENTS = ("agent-1", "agent-2")
IN_FLIGHT = 1000  # the consumers' --channel-size, so the group's max_ack_pending
ACK_WAIT = 5.0


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*logpipe_command(), "run", *args], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def records_of(*paths: Path) -> collections.Counter[tuple[str, int]]:
    """(msg, seq) of every complete line of the files, counted; a line that is
    not a generator record fails. A last line without its newline is left
    out: the consumer is still writing it (read mid-write, the file can end
    part-way through a line)."""
    seen: collections.Counter[tuple[str, int]] = collections.Counter()
    for path in paths:
        if not path.exists():
            continue
        data = path.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            record = orjson.loads(line)
            seen[(record["msg"], record["seq"])] += 1
    return seen


def duplicates_in(seen: collections.Counter[tuple[str, int]]) -> int:
    return sum(n - 1 for n in seen.values())


def lines_in(*paths: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in paths if path.exists())


def report(log: Path) -> dict[str, str]:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("Report: ")]
    assert lines, log.read_text(errors="replace")[-2000:]
    return dict(re.findall(r"(\w+)=(\S+)", lines[-1]))


@pytest.mark.slow
def test_agents_cluster_consumer_group_survive_a_server_and_a_consumer_kill(cluster, tmp_path):
    """Every record of both agents reaches the union of the consumers' files at least once
    and none is missing, while a server and then a consumer are each killed with SIGKILL and
    restarted; the duplicates each kill causes (acks lost with the server, the consumer's
    written but unacknowledged messages) number no more than the in-flight limit
    (max_ack_pending, which JetStream enforces for the whole group).

    The consumers are slower than the agents (one worker, 40 ms a batch), so the stream
    holds a backlog and both kills happen while the consumers are busy."""
    cluster.add_stream(STREAM, SUBJECT)
    nodes = cluster.nodes
    source = "nats://127.0.0.1:{port}/" + SUBJECT + f"?stream={STREAM}&durable=indexers&ack_wait={ACK_WAIT:g}s"
    consumer_args = [
        "--channel-size", str(IN_FLIGHT), "--batch-size", "50", "--batch-timeout", "50ms",
        "--io-latency", "40ms", "--max-workers", "1",
    ]
    files = [tmp_path / "consumer-1.ndjson", tmp_path / "consumer-2.ndjson"]
    logs = [tmp_path / "consumer-1.log", tmp_path / "consumer-2.log"]
    # Consumer 1 talks to node 2 (the one to be killed), consumer 2 to node 3.
    consumer_nodes = (nodes[1], nodes[2])
    procs: list[subprocess.Popen[bytes]] = []

    def start_consumer(i: int) -> subprocess.Popen[bytes]:
        args = ["--source", source.format(port=consumer_nodes[i].port), "--sink", f"file:{files[i]}"]
        proc = start([*args, *consumer_args], logs[i])
        procs.append(proc)
        return proc

    try:
        consumers = [start_consumer(0), start_consumer(1)]
        agents = []
        for name, node in zip(AGENTS, (nodes[0], nodes[1])):
            agents.append(start(
                ["--count", str(PER_AGENT), "--rate", "200us", "--message", name,
                 "--sink", f"nats://127.0.0.1:{node.port}/{SUBJECT}", "--nats-stream", STREAM],
                tmp_path / f"{name}.log",
            ))
        procs.extend(agents)
        total = PER_AGENT * len(AGENTS)

        # Mid-run: SIGKILL node 2 (an agent and a consumer are connected to it), restart it.
        assert wait_until(lambda: lines_in(*files) >= 1000, timeout=30), "consumers never got going"
        cluster.kill(1)
        time.sleep(1.0)
        cluster.start(1)
        # What the server kill redelivers comes within an ack wait: count it apart.
        time.sleep(ACK_WAIT + 1.5)
        after_server_kill = duplicates_in(records_of(*files))
        assert lines_in(*files) < total - 2 * IN_FLIGHT, "the consumers finished too early: nothing was tested"
        # Then SIGKILL consumer 1 while it holds unacknowledged messages, and restart it.
        consumers[0].send_signal(signal.SIGKILL)
        consumers[0].wait(10)
        consumers[0] = start_consumer(0)

        for name, agent in zip(AGENTS, agents):
            assert agent.wait(60) == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
            agent_report = report(tmp_path / f"{name}.log")
            assert agent_report["lost"] == "0" and agent_report["processed"] == str(PER_AGENT)
        expected = {(name, seq) for name in AGENTS for seq in range(PER_AGENT)}
        assert wait_until(lambda: set(records_of(*files)) >= expected, timeout=45), (
            f"{len(expected - set(records_of(*files)))} records missing"
        )
        for proc in consumers:
            proc.send_signal(signal.SIGTERM)
        for proc, log in zip(consumers, logs):
            assert proc.wait(20) == 0, log.read_text()[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    seen = records_of(*files)
    assert set(seen) == expected  # nothing missing, nothing foreign
    duplicates = duplicates_in(seen)
    print(
        f"scale-out: {total} records, {duplicates} duplicates "
        f"({after_server_kill} after the server kill, {duplicates - after_server_kill} after the consumer kill)"
    )
    assert after_server_kill <= IN_FLIGHT
    assert duplicates - after_server_kill <= IN_FLIGHT
