"""CPU instructions per record of the ring's and the line framer's one-thread paths, counted by callgrind.

    python bench/ring_cost.py [--python OTHER_PYTHON ...] [--records 500000]

On a shared 2-CPU machine whose speed drifts by 2x from one minute to the
next, timings of two builds only compare within one minute. Instruction
counts do not drift: ``valgrind --tool=callgrind`` counts what the CPU is
asked to do, the same for the same build and input whatever else runs.
The two ``framer`` paths feed bench_file.py's ~88-byte JSON lines to a
LineFramer (64 KiB a call) and drain the ring with ``get_batch``: raw is
the framing and the ring, json adds the validator, so their difference is
what validation costs a line.

They are not time (a cache miss costs no instruction), so they measure the
work a path does, not what the cross-core traffic costs: read them next to
the two-thread timings of test_bench_queues.py.

Each path runs in a fresh interpreter, with 70-byte records, on a ring of
1500, in a loop of a function's locals (no global lookups): the count of a
short run is subtracted from that of a long one, so start-up and imports
cancel out and what is left is the per-record cost of the loop, the Python
calls included. ``--python`` adds interpreters (other venvs, another build)
to the same table, so a before/after is one command:

    python bench/ring_cost.py --python /tmp/venv-before/bin/python

Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

LOOP = r"""
import sys
from logpipe import RingBuffer

def main(path, count):
    records = [b"%069d" % i for i in range(100)]
    ring = RingBuffer(1500)
    put, get, put_many, get_many, get_batch = ring.put, ring.get, ring.put_many, ring.get_many, ring.get_batch
    if path == "put_many+get_batch":
        for _ in range(count // 100):
            put_many(records)
            get_batch(100, 0)
    elif path == "put_many+get_many":
        for _ in range(count // 100):
            put_many(records)
            get_many(100)
    elif path == "put+get":
        for _ in range(count // 100):
            for record in records:
                put(record)
                get()
    elif path.startswith("framer"):
        # bench_file.py's uniform lines (~88 bytes), fed 64 KiB at a time as a
        # file source reads them, drained in batches of 1024.
        from logpipe._framing import LineFramer
        lines = b"".join(
            b'{"msg": "hello from producer", "level": "INFO", "ts": 1712345678123456, "seq": %d}\n' % i
            for i in range(744)
        )
        framer = LineFramer(ring, max_line=ring.max_record_size, validate_json=path.endswith("json"))
        feed = framer.feed
        for _ in range(count // 744):
            feed(lines)
            while len(ring):
                get_batch(1024, 0)
        assert framer.records == count // 744 * 744 and framer.invalid == 0
        return
    assert len(ring) == 0 and ring.popped == count // 100 * 100

main(sys.argv[1], int(sys.argv[2]))
"""

PATHS = ("put_many+get_batch", "put_many+get_many", "put+get", "framer raw", "framer json")


def instructions(python: str, script: str, path: str, count: int) -> int:
    """Instructions callgrind counts for one run of the loop."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
             python, script, path, str(count)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts every run
        )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def per_record(python: str, script: str, path: str, records: int) -> float:
    short = records // 5
    return (instructions(python, script, path, records) - instructions(python, script, path, short)) / (
        records - short
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", default=[], help="another interpreter to compare")
    parser.add_argument("--records", type=int, default=500_000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("ring_cost.py needs valgrind (apt-get install valgrind)")
    pythons = [sys.executable, *args.python]
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "loop.py")
        with open(script, "w") as f:
            f.write(LOOP)
        print(f"instructions per record (70-byte records, ring of 1500, {args.records:,} records)")
        print(f"{'path':<20}" + "".join(f"{p[-40:]:>42}" for p in pythons))
        for path in PATHS:
            cells = [per_record(python, script, path, args.records) for python in pythons]
            print(f"{path:<20}" + "".join(f"{c:>42.0f}" for c in cells))


if __name__ == "__main__":
    main()
