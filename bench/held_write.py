"""A batch written from the ring's memory (held) against one copied out first.

    python bench/held_write.py [--records 3000000] [--batch 4096] [--capacity 65536]
                               [--slot-size 512] [--mix uniform|production] [--repeat 5]
                               [--dir /dev/shm]

One producer thread puts the records with ``put_many`` (chunks of 256);
one consumer thread takes batches of --batch and appends each to a file in
--dir (tmpfs by default, so the page cache is the whole cost):

- copied: ``batch = get_batch(n)``, ``os.write(fd, batch)``: the worker's
  path before held batches (get_batch copies the records into the batch's
  own buffer, the write copies them into the file);
- held: ``batch = get_batch(n, hold=True)``, ``batch.write_to(fd)``,
  ``batch.release()``: the file sink's path now (the write copies them
  from the ring into the file; nothing else does).

Both sides run --repeat times, interleaved, each time into a new file
(truncated and unlinked after its size is checked); the table shows the
medians and the held side's time as a ratio to the copied side's. The
producer is the same for both, so the ratio understates the consumer's own
saving whenever the producer sets the pace.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_file import production_line

from logpipe import Closed, RingBuffer

CHUNK = 256


def make_records(count: int, mix: str) -> list[bytes]:
    rng = random.Random(11)
    if mix == "production":
        return [production_line(seq, rng).rstrip(b"\n") for seq in range(count)]
    return [b'{"msg": "hello from producer", "level": "INFO", "seq": %d}' % seq for seq in range(count)]


def run_once(records: list[bytes], batch: int, capacity: int, slot_size: int, held: bool,
             directory: str | None) -> float:
    ring = RingBuffer(capacity, slot_size=slot_size, max_bytes=1 << 30)
    chunks = [records[i : i + CHUNK] for i in range(0, len(records), CHUNK)]
    expected = sum(map(len, records)) + len(records)

    def produce() -> None:
        for chunk in chunks:
            ring.put_many(chunk)
        ring.close()

    fd, path = tempfile.mkstemp(dir=directory)
    try:
        producer = threading.Thread(target=produce)
        start = time.perf_counter()
        producer.start()
        get_batch = ring.get_batch
        try:
            while True:
                taken = get_batch(batch, hold=held)
                if held:
                    taken.write_to(fd)
                    taken.release()
                else:
                    os.write(fd, taken)  # one write: a regular file in tmpfs takes it whole
        except Closed:  # drained
            pass
        elapsed = time.perf_counter() - start
        producer.join(60)
        size = os.fstat(fd).st_size
        if size != expected:
            raise SystemExit(f"{'held' if held else 'copied'}: wrote {size} bytes, expected {expected}")
        return elapsed
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3_000_000)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--capacity", type=int, default=65536)
    parser.add_argument("--slot-size", type=int, default=512,
                        help="the ring's slot size (512: the pipeline's at these capacities); records over "
                             "slot size - 17 bytes are stored out of line, two pieces each for writev")
    parser.add_argument("--mix", choices=("uniform", "production"), default="uniform")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()

    records = make_records(args.records, args.mix)
    nbytes = sum(map(len, records)) + len(records)
    times: dict[str, list[float]] = {"copied": [], "held": []}
    for _ in range(args.repeat):
        for name in times:
            times[name].append(run_once(records, args.batch, args.capacity, args.slot_size, name == "held",
                                          args.dir))

    print(f"python {sys.version.split()[0]}, {args.records:,} records ({args.mix}, {nbytes / 1e6:.0f} MB), "
          f"batches of {args.batch}, capacity {args.capacity}, slot size {args.slot_size}, "
          f"medians of {args.repeat}")
    base = statistics.median(times["copied"])
    print(f"{'path':<8} {'M records/s':>12} {'GB/s':>6} {'time vs copied':>15}")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"{name:<8} {args.records / median / 1e6:12.2f} {nbytes / median / 1e9:6.2f} {median / base:14.2f}x")


if __name__ == "__main__":
    main()
