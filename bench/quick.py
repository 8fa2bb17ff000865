"""Quick side-by-side throughput: RingBuffer vs queue.Queue, 1 producer -> 1 consumer.

    python bench/quick.py [--records 1000000] [--batch 100]

Both queues move the same 70-byte records between two threads in the same
run; the ratio is what to read (absolute numbers depend on the machine).
"""

from __future__ import annotations

import argparse
import queue
import threading
import time

from logpipe import Closed, RingBuffer

RECORD = b'{"msg":"hello from producer","level":"INFO","ts":1712345678123456}\n'[:70].ljust(70)


def ring_batched(records: int, batch: int) -> float:
    ring = RingBuffer(4096)
    chunk = [RECORD] * batch

    def produce() -> None:
        for _ in range(records // batch):
            ring.put_many(chunk)
        ring.close()

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    taken = 0
    while True:
        try:
            taken += len(ring.get_batch(batch))
        except Closed:
            break
    producer.join()
    assert taken == records // batch * batch
    return taken / (time.perf_counter() - start)


def queue_batched(records: int, batch: int) -> float:
    # The fair pure-Python equivalent: lists of `batch` records through a
    # bounded queue.Queue, consumer joins each list for one write.
    q: queue.Queue[list[bytes] | None] = queue.Queue(4096 // batch)
    chunk = [RECORD] * batch

    def produce() -> None:
        for _ in range(records // batch):
            q.put(list(chunk))
        q.put(None)

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    taken = 0
    while (items := q.get()) is not None:
        b"\n".join(items)
        taken += len(items)
    producer.join()
    return taken / (time.perf_counter() - start)


def queue_per_item(records: int) -> float:
    q: queue.Queue[bytes | None] = queue.Queue(4096)

    def produce() -> None:
        for _ in range(records):
            q.put(RECORD)
        q.put(None)

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    taken = 0
    while q.get() is not None:
        taken += 1
    producer.join()
    return taken / (time.perf_counter() - start)


def ring_per_item(records: int) -> float:
    ring = RingBuffer(4096)

    def produce() -> None:
        for _ in range(records):
            ring.put(RECORD)
        ring.close()

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    taken = 0
    try:
        while True:
            ring.get()
            taken += 1
    except Closed:
        pass
    producer.join()
    return taken / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    per_item = max(args.records // 5, 1000)
    rows = [
        ("per item", "RingBuffer put/get", ring_per_item(per_item)),
        ("per item", "queue.Queue put/get", queue_per_item(per_item)),
        (f"batch {args.batch}", "RingBuffer put_many/get_batch", ring_batched(args.records, args.batch)),
        (f"batch {args.batch}", "queue.Queue of lists", queue_batched(args.records, args.batch)),
    ]
    print(f"{'mode':<10} {'queue':<32} {'records/s':>14}")
    for mode, name, rate in rows:
        print(f"{mode:<10} {name:<32} {rate:>14,.0f}")
    print(f"ratio per item: {rows[0][2] / rows[1][2]:.1f}x   "
          f"ratio batched: {rows[2][2] / rows[3][2]:.1f}x  (RingBuffer / queue.Queue)")


if __name__ == "__main__":
    main()
