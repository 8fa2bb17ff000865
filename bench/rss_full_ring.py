"""Memory of a full RingBuffer against a full queue.Queue, and the byte limit at work.

Usage (from the repository root, with the project installed in .venv):

    .venv/bin/python bench/rss_full_ring.py [--count 1000000]

Each case runs in a fresh interpreter (so one case's heap cannot hide
another's) and reports:

- RSS: VmRSS from /proc/self/status before the queue exists, after it is
  constructed, and once it is full; "held" is full minus before;
- blocks: sys.getallocatedblocks() growth while filling, i.e. the Python
  objects (and other pymalloc blocks) kept alive by the full queue. A record
  as a bytes object is one block; gc.get_objects() is also shown, but bytes
  are not tracked by the cyclic GC, so it cannot see them (for either queue).

Every record is created fresh for its put (as a real producer does), so the
queue.Queue keeps one bytes object per record alive, while the ring copies
the bytes in and the object is freed at once.

Cases:
- ring: RingBuffer(count, max_bytes=count * 70), default slot_size (128),
  70-byte records (max_bytes counts inline bytes too, and its 64 MiB default
  is below a million 70-byte records);
- ring-slot88: the same with slot_size=88, the smallest slot holding a
  70-byte record inline (70 + 16 bytes of header, rounded up to 8);
- queue.Queue: queue.Queue(count), the same 70-byte records;
- ring-max_bytes: RingBuffer(100_000, max_bytes=16 MiB) fed 4 KiB records
  until Full: the byte limit, not the count, must stop it; then drained and
  refilled 5 times, to show the out-of-line memory is reused, not grown.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import queue
import subprocess
import sys
from typing import Any

MiB = 1 << 20
RECORD = 70
BIG = 4096
BYTE_LIMIT = 16 * MiB


def rss() -> int:
    """Resident set size of this process, in bytes (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def snapshot() -> dict[str, int]:
    gc.collect()
    return {"rss": rss(), "blocks": sys.getallocatedblocks(), "gc": len(gc.get_objects())}


def fill(put: Any, count: int, size: int) -> None:
    fmt = b"%0" + str(size).encode() + b"d"
    for i in range(count):
        put(fmt % i)  # a fresh bytes object per record


def case_ring(count: int, slot_size: int | None) -> dict[str, Any]:
    from logpipe import RingBuffer

    before = snapshot()
    # max_bytes counts inline payload too: its default (64 MiB) would stop a
    # million 70-byte records at 958,698, so the byte bound is set to fit.
    kwargs: dict[str, int] = {"max_bytes": max(count * RECORD, 1 << 20)}
    if slot_size is not None:
        kwargs["slot_size"] = slot_size
    rb = RingBuffer(count, **kwargs)
    built = snapshot()
    fill(rb.put_nowait, count, RECORD)
    full = snapshot()
    assert len(rb) == count, (len(rb), count)
    return {"held": len(rb), "payload": rb.nbytes, "slot_size": rb.slot_size,
            "before": before, "built": built, "full": full}


def case_queue(count: int) -> dict[str, Any]:
    before = snapshot()
    q: queue.Queue[bytes] = queue.Queue(count)
    built = snapshot()
    fill(q.put_nowait, count, RECORD)
    full = snapshot()
    return {"held": q.qsize(), "payload": count * RECORD, "slot_size": None,
            "before": before, "built": built, "full": full}


def case_max_bytes() -> dict[str, Any]:
    from logpipe import Full, RingBuffer

    before = snapshot()
    rb = RingBuffer(100_000, max_bytes=BYTE_LIMIT)
    built = snapshot()
    record = b"x" * BIG
    fills = []
    full: dict[str, int] = {}
    for _ in range(6):  # the first fill, then 5 drain-and-refill cycles
        n = 0
        try:
            while True:
                rb.put_nowait(record)
                n += 1
        except Full:
            pass
        full = snapshot()
        fills.append({"held": len(rb), "nbytes": rb.nbytes, "rss": full["rss"]})
        assert rb.nbytes <= rb.max_bytes, (rb.nbytes, rb.max_bytes)
        assert len(rb) < rb.capacity  # the byte limit stopped it, not the count
        while len(rb):
            rb.get_many(1000, block=False)
    return {"held": fills[0]["held"], "payload": fills[0]["nbytes"], "slot_size": rb.slot_size,
            "max_bytes": rb.max_bytes, "capacity": rb.capacity, "fills": fills,
            "before": before, "built": built, "full": full}


def run_case(name: str, count: int) -> dict[str, Any]:
    """Run one case in a fresh interpreter; return its JSON report."""
    done = subprocess.run([sys.executable, __file__, "--case", name, "--count", str(count)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"case {name} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=1_000_000, help="records for the 70-byte cases")
    p.add_argument("--case", choices=["ring", "ring-slot88", "queue.Queue", "ring-max_bytes"],
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.case:
        result = {
            "ring": lambda: case_ring(args.count, None),
            "ring-slot88": lambda: case_ring(args.count, 88),
            "queue.Queue": lambda: case_queue(args.count),
            "ring-max_bytes": case_max_bytes,
        }[args.case]()
        print(json.dumps(result))
        return 0

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from baselines import ringbuf_build

    build = ringbuf_build()
    print(f"ring buffer build: sha256 {build['sha256']}, built {build['built']}")
    names = ["ring", "ring-slot88", "queue.Queue", "ring-max_bytes"]
    results = {name: run_case(name, args.count) for name in names}
    print(f"Records are created fresh for each put; RSS in MiB; {args.count:,} records of {RECORD} bytes "
          f"(ring-max_bytes: {BIG}-byte records, max_bytes = {mib(BYTE_LIMIT)} MiB)\n")
    print("| case | records held | payload MiB | RSS before | + construct | + fill | held total "
          "| bytes/record held | pymalloc blocks + fill | gc objects + fill |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        b, c, f = r["before"], r["built"], r["full"]
        held = f["rss"] - b["rss"]
        label = name if r["slot_size"] is None else f"{name} (slot_size={r['slot_size']})"
        print(f"| {label} | {r['held']:,} | {mib(r['payload'])} | {mib(b['rss'])} | {mib(c['rss'] - b['rss'])} "
              f"| {mib(f['rss'] - c['rss'])} | {mib(held)} | {held / r['held']:.0f} "
              f"| {f['blocks'] - c['blocks']:+,} | {f['gc'] - c['gc']:+,} |")

    mb = results["ring-max_bytes"]
    print(f"\nring-max_bytes: capacity {mb['capacity']:,} records, max_bytes {mb['max_bytes']:,}; "
          f"put_nowait raised Full at:")
    print("\n| fill | records held | nbytes | nbytes <= max_bytes | RSS MiB |")
    print("|---:|---:|---:|---|---:|")
    for i, fl in enumerate(mb["fills"], 1):
        print(f"| {i} | {fl['held']:,} | {fl['nbytes']:,} | {fl['nbytes'] <= mb['max_bytes']} | {mib(fl['rss'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
