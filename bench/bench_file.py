"""File -> file throughput: `logpipe run --source file:IN --once` against a naive pipeline.

    python bench/bench_file.py [--lines 2000000] [--channel-size 65536] [--batch-size 4096]
                               [--formats raw,json] [--skip-naive] [--skip-rsyslog] [--dir DIR]
                               [--source file|stdin|pipe] [--no-precompile]

One ~85-byte-per-line JSON file of --lines lines is made once (``--mix
production``: lines of production-like lengths instead); then, in the
same run, each side copies it to a new file, raw and with JSON validation
(median of --repeat runs each, and on a second row, "best", the fastest
run of each; noise here only ever adds time, so the best runs compare what
each side can do, the medians what it usually does):

* cat: ``cat IN > OUT``, the issue's reference (coreutils 9, Debian 12's,
  copies in the kernel with ``copy_file_range``: no read or write in the
  process at all). The issue's goals are logpipe >= 0.7x cat raw and
  >= 0.35x cat with JSON.
* dd: ``dd if=IN of=OUT bs=128K``, one ``read(2)`` and one ``write(2)`` per
  128 KiB: the issue's "physical reference" as it describes it (one read,
  one write), which cat no longer is where it copies in the kernel.
* cat+fsync: the same as cat, then ``fsync(OUT)`` before the clock stops. This is
  the reference with logpipe's promise: its file sink fsyncs the file when
  it closes, so a run that ended is on disk (docs/sinks.md), and on this
  machine that sync of a few hundred MB costs more than cat's whole copy.
* logpipe: the real command, ``logpipe run --source file:IN --once --rate 0
  --sink file:OUT [--format json] --max-workers N`` (default 1), timed from
  start to exit (process start-up and the final fsync included), its output
  checked byte for byte against the input (with N > 1, batches may reach
  the file in another order: then line for line, in any order). With
  ``--source stdin`` it reads the file on its standard input instead
  (``logpipe run --source stdin ... < IN``: the stdin source, which stops
  at end of input); with ``--source pipe`` through a pipe from a ``cat IN``
  process started with it (``cat IN | logpipe run --source stdin ...``,
  the way a producer feeds it).
* rsyslog (when ``rsyslogd`` is installed: Debian's package, 8.2302
  here): the C engine the issue names, run unprivileged as
  ``rsyslogd -n -f CONF -i PIDFILE`` with imfile reading IN from its
  start and omfile appending each message as it came (``%rawmsg%``);
  with ``--format json`` each message also goes through mmjsonparse
  (``cookie=""``: plain JSON). Timed from spawn until OUT holds every
  byte (rsyslog has no "stop at end of file"), then stopped; no fsync.
  Its output is checked line for line in any order: with mmjsonparse in
  the ruleset, its queue's worker threads write batches out of order.
* naive: a reader thread (``for line in f``, ``orjson.loads`` in json mode)
  -> ``queue.Queue`` of the same capacity -> a writer thread with a buffered
  file, fsynced at the end like logpipe's; output checked the same way.

Where the files live (``--dir``): by default a temporary directory on the
system's temp file system (a disk here), where every copy pays for the
kernel's writeback and cat+fsync is the reference with logpipe's
durability. ``--dir /dev/shm`` puts the input and every output in memory
(tmpfs): no disk, no writeback, an fsync that costs nothing, so each side
is measured at memory speed alone, which is what the issue's "move bytes
at memory speed" asks about. The input is written there once per run and
removed at the end.

Two things of these machines tilt the comparison:

* Bytecode. The machines set PYTHONDONTWRITEBYTECODE=1, so a logpipe run
  from an editable install compiles every module it imports, every time
  (~50-100 ms a run here; ``pip install`` writes the bytecode once, so
  users never pay it). The bench compiles logpipe's package once
  (``compileall``) before timing; ``--no-precompile`` leaves it as it is.
* Cold pages. The machines are VMs whose guest hands free memory back to
  the host a few seconds after it is freed (free page reporting), and the
  first write into such a page costs a fault in the host: a copy of 879 MB
  into tmpfs that gets those pages takes up to 2-3x as long. When every
  output was kept until the end of a round, each copy wrote into memory
  the copies before it had not taken, colder for each one; logpipe came
  fourth, after cat, cat+fsync and dd, and paid it in every round
  (docs/benchmarks.md, "issue 9, eighth round"). So each output is now
  checked and deleted as soon as its copy is done, and every copy writes
  into the memory the one before it has just freed.

Reference figures for C engines on this machine class, from the issue:
rsyslog 1.25M lines/s file->file, 0.59M/s with JSON parsing.
"""

from __future__ import annotations

import argparse
import statistics
import filecmp
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time

import orjson
from _rsyslog import AVAILABLE as rsyslog_available
from _rsyslog import Rsyslog


def production_line(seq: int, rng: random.Random) -> bytes:
    """A JSON log line of a production-like length: mostly 60-300 bytes, 1% 2-8 KiB."""
    size = rng.randint(2048, 8192) if rng.random() < 0.01 else rng.randint(60, 300)
    head = b'{"msg": "request handled", "level": "INFO", "seq": %d, "text": "' % seq
    return head + b"x" * max(size - len(head) - 2, 0) + b'"}\n'


def make_input(path: str, lines: int, mix: str = "uniform") -> None:
    rng = random.Random(7)
    with open(path, "wb") as f:
        chunk = []
        for seq in range(lines):
            if mix == "production":
                chunk.append(production_line(seq, rng))
                continue
            chunk.append(b'{"msg": "hello from producer", "level": "INFO", "ts": 1712345678123456, "seq": %d}\n' % seq)
            if len(chunk) == 100_000:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
        # On disk before any clock starts: otherwise the kernel writes the
        # new input back during the first timed copies, which then measure
        # the disk (cat 4-8 M lines/s instead of 30-40 M here).
        f.flush()
        os.fsync(f.fileno())


def logpipe_copy(src: str, dst: str, fmt: str, channel_size: int, batch_size: int, max_workers: int,
                 source: str = "file") -> float:
    source_args = ["--source", f"file:{src}", "--once"] if source == "file" else ["--source", "stdin"]
    command = [
        sys.executable, "-m", "logpipe", "run", *source_args, "--rate", "0",
        "--sink", f"file:{dst}", "--format", fmt, "--channel-size", str(channel_size),
        "--batch-size", str(batch_size), "--max-workers", str(max_workers),
    ]
    with open(src, "rb") as stdin:
        start = time.perf_counter()
        feeder = None
        if source == "pipe":  # the file comes from a cat process through a pipe, as from a producer
            feeder = subprocess.Popen(["cat", src], stdout=subprocess.PIPE)
            given = feeder.stdout
        else:
            given = stdin if source == "stdin" else subprocess.DEVNULL
        done = subprocess.run(command, check=True, stdin=given,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wall = time.perf_counter() - start
        if feeder is not None:
            feeder.stdout.close()
            if feeder.wait() != 0:
                raise SystemExit(f"cat {src} failed")
    return wall, float(done.stdout.rsplit("elapsed=", 1)[1].split("s", 1)[0])


def check_and_remove(src: str, out: str, reordered_ok: bool) -> None:
    """Fail unless ``out`` holds ``src``'s bytes (or, if ``reordered_ok``, its lines in any order); then delete it."""
    if not filecmp.cmp(src, out, shallow=False) and not (reordered_ok and same_lines(src, out)):
        raise SystemExit(f"{out} differs from the input")
    os.unlink(out)


def same_lines(src: str, out: str) -> bool:
    """Whether ``out`` holds the lines of ``src``, in any order (batches of several workers may swap)."""
    sort = "LC_ALL=C sort -S 25%"
    done = subprocess.run(f"cmp -s <({sort} '{src}') <({sort} '{out}')", shell=True, executable="/bin/bash")
    return done.returncode == 0


def precompile_logpipe() -> None:
    """Write the bytecode of logpipe's modules, which its runs then read, PYTHONDONTWRITEBYTECODE or not."""
    import compileall

    import logpipe

    compileall.compile_dir(os.path.dirname(logpipe.__file__), quiet=1)


def cat_copy(src: str, dst: str, sync: bool) -> float:
    start = time.perf_counter()
    with open(dst, "wb") as out:
        subprocess.run(["cat", src], check=True, stdout=out)
        if sync:
            os.fsync(out.fileno())
    return time.perf_counter() - start


def read_write_copy(src: str, dst: str) -> float:
    """``dd bs=128K``: one read(2) and one write(2) per 128 KiB, no copy in the kernel."""
    start = time.perf_counter()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=128K", "status=none"], check=True)
    return time.perf_counter() - start


def rsyslog_copy(src: str, dst: str, fmt: str) -> float:
    """rsyslogd (imfile -> [mmjsonparse] -> omfile) until ``dst`` is as long as ``src``."""
    size = os.path.getsize(src)
    params = f'File="{src}" Tag="in" freshStartTail="off" addMetadata="off"'
    start = time.perf_counter()
    with Rsyslog(os.path.dirname(dst), "imfile", params, dst, json=fmt == "json") as daemon:
        while not os.path.exists(dst) or os.path.getsize(dst) < size:
            daemon.check_running()
            if time.perf_counter() - start > 600:
                raise SystemExit(f"rsyslogd wrote {os.path.getsize(dst)} of {size} bytes in 600 s")
            time.sleep(0.002)
        return time.perf_counter() - start


def naive_copy(src: str, dst: str, fmt: str, channel_size: int) -> float:
    q: queue.Queue[bytes | None] = queue.Queue(channel_size)

    def read() -> None:
        with open(src, "rb") as f:
            for line in f:
                if fmt == "json":
                    orjson.loads(line)
                q.put(line)
        q.put(None)

    def write() -> None:
        with open(dst, "wb") as out:
            while (line := q.get()) is not None:
                out.write(line)
            out.flush()
            os.fsync(out.fileno())

    start = time.perf_counter()
    threads = [threading.Thread(target=read), threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def print_row(label: str, lines: int, took: dict[str, float]) -> None:
    """One table row: each side's lines/s from its time in ``took``, and logpipe's ratios to the others."""
    cat, cat_sync, dd, ours, inside = (took[k] for k in ("cat", "cat_sync", "dd", "ours", "ours_inside"))
    naive = (f"{lines / took['naive']:>14,.0f} {took['naive'] / ours:>8.1f}x"
             if "naive" in took else f"{'-':>14} {'-':>9}")
    rsyslog = (f"{lines / took['rsyslog']:>16,.0f} {took['rsyslog'] / ours:>10.1f}x"
               if "rsyslog" in took else f"{'-':>16} {'-':>11}")
    print(f"{label:<11} {lines / cat:>12,.0f} {lines / cat_sync:>12,.0f} {lines / dd:>12,.0f} "
          f"{lines / ours:>16,.0f} {cat / ours:>6.2f}x {cat_sync / ours:>12.2f}x {dd / ours:>5.2f}x "
          f"{lines / inside:>14,.0f} {naive} {rsyslog}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--channel-size", type=int, default=65536)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mix", choices=("uniform", "production"), default="uniform",
                        help="uniform: ~88-byte lines; production: mostly 60-300 bytes, 1%% of 2-8 KiB")
    parser.add_argument("--max-workers", type=int, default=1,
                        help="logpipe's --max-workers; 1 (the default) keeps the input's order, "
                             "so its output must be the input byte for byte")
    parser.add_argument("--formats", default="raw,json", help="comma-separated: raw, json")
    parser.add_argument("--skip-naive", action="store_true",
                        help="leave out the naive pipeline (~50x slower: for inputs of tens of millions of lines)")
    parser.add_argument("--skip-rsyslog", action="store_true", help="leave out rsyslog even where it is installed")
    parser.add_argument("--source", choices=("file", "stdin", "pipe"), default="file",
                        help="logpipe reads the input as file:IN --once (default), on its standard input (stdin: < IN), or from a pipe (pipe: cat IN |)")
    parser.add_argument("--no-precompile", action="store_true",
                        help="do not compile logpipe's modules first (each run may then compile them: see above)")
    parser.add_argument("--dir", default=None,
                        help="where the input and the copies are made (default: a temporary directory in "
                             "the system's temp dir; /dev/shm: in memory, no disk)")
    args = parser.parse_args()
    if not args.no_precompile:
        precompile_logpipe()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src = os.path.join(tmp, "in.ndjson")
        make_input(src, args.lines, args.mix)
        size = os.path.getsize(src)
        print(f"input: {args.lines:,} lines, {size / args.lines:.0f} bytes a line, {size / 1e6:.0f} MB, in {tmp}; "
              f"logpipe {'as installed' if args.no_precompile else 'precompiled'}")
        print(f"{'format':<11} {'cat lines/s':>12} {'cat+fsync':>12} {'dd lines/s':>12} {'logpipe lines/s':>16} "
              f"{'vs cat':>7} {'vs cat+fsync':>13} {'vs dd':>6} {'(no start-up)':>14} {'naive lines/s':>14} "
              f"{'vs naive':>9} {'rsyslog lines/s':>16} {'vs rsyslog':>11}")
        for fmt in args.formats.split(","):
            names = ("cat", "cat_sync", "dd", "ours") + (() if args.skip_naive else ("naive",)) + (
                ("rsyslog",) if rsyslog_available and not args.skip_rsyslog else ())
            runs: dict[str, list[float]] = {name: [] for name in (*names, "ours_inside")}
            for index in range(args.repeat):  # interleaved, so drift hits every side alike
                outs = {name: os.path.join(tmp, f"{name}-{fmt}-{index}") for name in names}
                copies = {
                    "cat": lambda out: cat_copy(src, out, sync=False),
                    "cat_sync": lambda out: cat_copy(src, out, sync=True),
                    "dd": lambda out: read_write_copy(src, out),
                    "ours": lambda out: logpipe_copy(src, out, fmt, args.channel_size, args.batch_size,
                                                     args.max_workers, args.source),
                    "naive": lambda out: naive_copy(src, out, fmt, args.channel_size),
                    "rsyslog": lambda out: rsyslog_copy(src, out, fmt),
                }
                for name in names:
                    # Each copy starts with nothing dirty in the page cache: the
                    # previous copy's output, written back meanwhile, would slow it.
                    os.sync()
                    took = copies[name](outs[name])
                    if name == "ours":
                        took, inside = took
                        runs["ours_inside"].append(inside)
                    runs[name].append(took)
                    # Deleted before the next copy, which then writes into the
                    # memory this one just freed (see "Cold pages" above).
                    check_and_remove(src, outs[name], (name == "ours" and args.max_workers > 1) or name == "rsyslog")
            for label, pick in ((fmt, statistics.median), (f"{fmt} best", min)):
                print_row(label, args.lines, {name: pick(times) for name, times in runs.items()})
        if not rsyslog_available and not args.skip_rsyslog:
            print("(rsyslogd not found: no C engine row; Debian: apt-get install rsyslog)")


if __name__ == "__main__":
    main()
