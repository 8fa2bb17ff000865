"""CPU instructions per record of the ring's and the line framer's one-thread paths, counted by callgrind.

    python bench/ring_cost.py [--python OTHER_PYTHON ...] [--records 500000]

On a shared 2-CPU machine whose speed drifts by 2x from one minute to the
next, timings of two builds only compare within one minute. Instruction
counts do not drift: ``valgrind --tool=callgrind`` counts what the CPU is
asked to do, the same for the same build and input whatever else runs.
The two ``framer`` paths feed bench_file.py's ~88-byte JSON lines to a
LineFramer (64 KiB a call) and drain the ring with ``get_batch``: raw is
the framing and the ring, json adds the validator, so their difference is
what validation costs a line. ``framer json mix`` feeds production-like
lines instead (``mix_lines``: a fixed, seeded mix of 2,000 lines, about
88% flat objects of 100-300 bytes with string, number and bool fields, 8%
of them with escaped quotes; 4% nested objects and arrays; 2% stack traces
of 1-8 KiB with \\n and \\t escapes; 2% with non-ASCII UTF-8 text; 1%
invalid), whole lines up to 64 KiB a call, rejections taken after each.
Each line of the mix costs what its bytes cost, so compare the mix with
itself across builds, not with the uniform lines. ``SimpleQueue put+get``
is put+get's loop on ``queue.SimpleQueue`` (unbounded, it copies nothing):
the reference S2's per-item group compares the ring with.

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

MIX = r"""
import json
import random


def mix_lines(count=2000, seed=20240405):
    # A fixed mix of production-like JSON log lines (bytes, no newlines): the same for every interpreter.
    rnd = random.Random(seed)
    words = ["request", "handled", "user", "session", "cache", "miss", "hit", "upstream", "timeout", "retry",
             "connection", "pool", "db", "query", "took", "ms", "status", "GET", "POST", "/api/v1/orders",
             "/healthz", "worker", "shard", "commit", "offset"]
    levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]

    def text(lo, hi):
        return " ".join(rnd.choice(words) for _ in range(rnd.randint(lo, hi)))

    def flat(i, size):
        record = {"ts": 1712345678123456 + i * 1371, "level": rnd.choice(levels), "logger": "app." + rnd.choice(words),
                  "msg": text(3, 9)}
        extras = [("request_id", lambda: "%016x" % rnd.getrandbits(64)), ("status", lambda: rnd.choice([200, 201, 404, 500])),
                  ("latency_ms", lambda: round(rnd.uniform(0.1, 900.0), 2)), ("ok", lambda: rnd.random() < 0.9),
                  ("user", lambda: rnd.choice([None, "u%06d" % rnd.randint(0, 999999)])), ("bytes", lambda: rnd.randint(0, 10**7)),
                  ("path", lambda: rnd.choice(words[-6:])), ("shard", lambda: rnd.randint(0, 63)), ("attempt", lambda: rnd.randint(1, 5)),
                  ("region", lambda: rnd.choice(["eu-west-1", "us-east-2", "ap-south-1"])), ("seq", lambda: i)]
        rnd.shuffle(extras)
        for key, value in extras:
            if len(json.dumps(record)) >= size:
                break
            record[key] = value()
        return record

    def stack(size):
        frames = []
        while sum(map(len, frames)) < size:
            if rnd.random() < 0.5:
                frames.append('  File "/srv/app/%s.py", line %d, in %s\n    %s = self.%s(request)\n'
                              % (rnd.choice(words[:8]), rnd.randint(1, 900), rnd.choice(words), rnd.choice(words[:5]), rnd.choice(words[:5])))
            else:
                frames.append("\tat com.example.%s.%s(%s.java:%d)\n" % (rnd.choice(words[:8]).title(), rnd.choice(words[:8]),
                                                                      rnd.choice(words[:8]).title(), rnd.randint(1, 900)))
        return "Traceback (most recent call last):\n" + "".join(frames) + 'ValueError: bad "input"'

    out = []
    for i in range(count):
        r = rnd.random()
        spaced = rnd.random() < 0.5
        dumps = (lambda o, **kw: json.dumps(o, **kw)) if spaced else (lambda o, **kw: json.dumps(o, separators=(",", ":"), **kw))
        if r < 0.01:        # invalid: cut short, a trailing comma, a bare word, single quotes, a raw tab in a string
            line = dumps(flat(i, rnd.randint(100, 300))).encode()
            line = rnd.choice([line[: rnd.randint(1, len(line) - 1)], line[:-1] + b",}", line.replace(b'"ok"', b"ok", 1) + b" x",
                               line.replace(b'"', b"'"), line.replace(b" ", b"\t", 1).replace(b'"msg": "', b'"msg": "\t', 1)])
        elif r < 0.03:      # non-ASCII text, as raw UTF-8
            record = flat(i, rnd.randint(100, 300))
            record["msg"] = rnd.choice(["caf\u00e9 cr\u00e8me", "\u00fcber gr\u00f6\u00dfe", "\u4e2d\u6587\u65e5\u5fd7",
                                        "\u26a0 warn \U0001f600"]) + " " + record["msg"]
            line = dumps(record, ensure_ascii=False).encode()
        elif r < 0.05:      # a stack trace of 1-8 KiB
            record = flat(i, 120)
            record["level"] = "ERROR"
            record["exc_info"] = stack(rnd.randint(1024, 8192))
            line = dumps(record).encode()
        elif r < 0.09:      # nested objects and arrays
            record = flat(i, rnd.randint(60, 150))
            record["http"] = {"method": rnd.choice(["GET", "POST"]), "path": rnd.choice(words[-6:]), "status": 200,
                              "headers": {"user-agent": "curl/8.5.0", "accept": "*/*"}}
            record["tags"] = [rnd.choice(words) for _ in range(rnd.randint(0, 4))]
            record["timings"] = [round(rnd.uniform(0, 50), 3) for _ in range(rnd.randint(1, 5))]
            line = dumps(record).encode()
        else:               # flat, 100-300 bytes; some with escaped quotes
            record = flat(i, rnd.randint(100, 300))
            if rnd.random() < 0.09:
                record["msg"] = 'query "%s" took %d ms' % (text(1, 3), rnd.randint(1, 999))
            line = dumps(record).encode()
        out.append(line)
    return out
"""

LOOP = MIX + r"""
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
    elif path == "put_many+get_batch(hold)":
        for _ in range(count // 100):
            put_many(records)
            get_batch(100, 0, hold=True).release()
    elif path == "put_many+get_many":
        for _ in range(count // 100):
            put_many(records)
            get_many(100)
    elif path == "put+get":
        for _ in range(count // 100):
            for record in records:
                put(record)
                get()
    elif path == "SimpleQueue put+get":
        # The reference for put+get: the same loop on queue.SimpleQueue.
        import queue
        simple = queue.SimpleQueue()
        put, get = simple.put, simple.get
        for _ in range(count // 100):
            for record in records:
                put(record)
                get()
        assert simple.qsize() == 0
        return
    elif path == "framer json mix":
        # mix_lines() above, whole lines up to 64 KiB a call.
        from logpipe._framing import LineFramer
        lines = mix_lines()
        pieces, piece, size = [], [], 0
        for line in lines:
            if size + len(line) + 1 > 65536 and piece:
                pieces.append(b"".join(piece))
                piece, size = [], 0
            piece.append(line + b"\n")
            size += len(line) + 1
        pieces.append(b"".join(piece))
        framer = LineFramer(ring, max_line=ring.max_record_size, validate_json=True)
        feed, take_rejected = framer.feed, framer.take_rejected
        for _ in range(count // len(lines)):
            for data in pieces:
                feed(data)
                take_rejected()
                while len(ring):
                    get_batch(1024, 0)
        assert framer.records + framer.invalid == count // len(lines) * len(lines) and framer.invalid
        return
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

PATHS = ("put_many+get_batch", "put_many+get_batch(hold)", "put_many+get_many", "put+get", "SimpleQueue put+get",
         "framer raw", "framer json", "framer json mix")


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
        print(f"{'path':<26}" + "".join(f"{p[-40:]:>42}" for p in pythons))
        for path in PATHS:
            cells = [per_record(python, script, path, args.records) for python in pythons]
            print(f"{path:<26}" + "".join(f"{c:>42.0f}" for c in cells))


if __name__ == "__main__":
    main()
