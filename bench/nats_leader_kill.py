"""Duplicates when the server leading a JetStream consumer dies, by ack wait.

    python bench/nats_leader_kill.py [--ack-wait 30s] [--records 15000]

Starts the 3-node loopback cluster of tests/nats_cluster (an R3 stream),
two logpipe consumers sharing one durable (``--channel-size 1000``, so
``max_ack_pending`` 1000; one worker, 40 ms a batch: slower than the
agents, so messages are always in flight), and two agents publishing
``--records`` records each. Once 2,000 records are written it finds the
consumer's leader, kills it with SIGKILL, restarts it a second later, lets
everything arrive, waits one more ack wait for late redeliveries, and
prints how many records were written more than once (and how many are
missing, which must be 0). A measurement, not a test: the result depends
on how long the new leader takes to be elected.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _support import wait_until  # noqa: E402
from nats_cluster.conftest import Cluster  # noqa: E402
from nats_cluster.test_scale_out import duplicates_in, lines_in, records_of, start  # noqa: E402

from logpipe.domain.durations import parse_duration  # noqa: E402


async def consumer_leader(url: str) -> str:
    import nats  # noqa: PLC0415

    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info("LOGS", "indexers")
        return info.cluster.leader
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ack-wait", default="30s")
    parser.add_argument("--records", type=int, default=15_000, help="per agent")
    args = parser.parse_args()
    ack_wait = parse_duration(args.ack_wait, name="--ack-wait")
    total = 2 * args.records
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cluster = Cluster(root)
        procs = []
        try:
            cluster.start_all()
            cluster.add_stream("LOGS", "logs")
            files = [root / "c1.ndjson", root / "c2.ndjson"]
            for i, node in enumerate((cluster.nodes[1], cluster.nodes[2])):
                spec = f"nats://127.0.0.1:{node.port}/logs?stream=LOGS&durable=indexers&ack_wait={args.ack_wait}"
                procs.append(start(
                    ["--source", spec, "--sink", f"file:{files[i]}", "--channel-size", "1000",
                     "--batch-size", "50", "--io-latency", "40ms", "--max-workers", "1"],
                    root / f"c{i}.log",
                ))
            agents = [
                start(["--count", str(args.records), "--rate", "100us", "--message", f"agent-{i}",
                       "--sink", f"nats://127.0.0.1:{cluster.nodes[0].port}/logs"], root / f"a{i}.log")
                for i in range(2)
            ]
            procs += agents
            assert wait_until(lambda: lines_in(*files) >= 2000, timeout=30), "the consumers never got going"
            leader = asyncio.run(consumer_leader(cluster.nodes[0].url))
            index = [node.name for node in cluster.nodes].index(leader)
            cluster.kill(index)
            time.sleep(1.0)
            cluster.start(index)
            for agent in agents:
                agent.wait(60)
            assert wait_until(lambda: lines_in(*files) >= total, timeout=120), "records missing"
            time.sleep(ack_wait + 3)
            seen = records_of(*files)
            print(
                f"ack_wait {args.ack_wait}: killed the consumer's leader {leader}; {len(seen)} of {total} "
                f"records, {total - len(seen)} missing, {duplicates_in(seen)} duplicates (max_ack_pending 1000)"
            )
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(20)
                except Exception:  # noqa: BLE001
                    proc.kill()
            cluster.kill_all()


if __name__ == "__main__":
    main()
