"""LogpipeHandler against QueueHandler + QueueListener(FileHandler) and a plain FileHandler.

    .venv/bin/python bench/bench_logging.py [--calls 20000] [--records 200000] [--stall-records 100000]

Three measurements, every handler in the same run, each writing to a real
file (under /dev/shm when there is one, so the disk's speed is not what is
measured):

1. Added caller time: the thread CPU time (``time.thread_time``) of one
   ``logger.info("request %d served in %.1f ms", i, 3.2)`` in the calling
   thread, minus the same for a handler whose ``emit`` does nothing (the
   logging module's own cost: the floor). The best of ``--repeats`` rounds
   of ``--calls`` calls. Work the handlers do in their own threads (the
   workers, the listener) is not counted: that is the point of them.
2. Logs/s end to end, with 1 and 8 application threads: ``--records``
   records logged in all, timed from the first call until the handler is
   closed (the listener stopped), i.e. until every line is in the file; the
   line count is checked.
3. Memory while the sink is stalled: in a fresh interpreter per case, the
   file is a FIFO whose reader opens it and never reads. A thread logs up
   to ``--stall-records`` records for at most ``--stall-seconds``; the
   handler's fixed RSS (built, one record logged), the RSS growth while
   logging, and the records the logger call returned for are printed.
   QueueHandler's queue takes every LogRecord and grows; LogpipeHandler
   holds at most its ring (drop mode drops and counts the rest, block mode
   blocks the caller); FileHandler blocks the caller in write().

4. A trickle: the application logs ``--trickle-rate`` records a second
   for ``--trickle-seconds`` (paced by sleeps, as a server's requests
   come), and the CPU time of every thread but the caller's is printed:
   what keeping up with the trickle costs in the background (LogpipeHandler's
   workers, QueueListener's thread). For LogpipeHandler also its ring's
   wake-ups of parked workers. FileHandler has no thread of its own.

Ratios are printed at the end with the targets of issue 11: >= 4x less
added time than QueueHandler, >= 3x its logs/s with 8 threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.handlers
import os
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

from logpipe.logging import LogpipeHandler

MESSAGE = "request %d served in %.1f ms"


class NullHandler(logging.Handler):
    """The floor: a Handler whose emit does nothing (Handler.handle still runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def logger_with(handler: logging.Handler) -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"bench.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger
    finally:
        logger.handlers.clear()


# Each kind: build(path) -> (handler to attach, finish() that flushes and closes everything).
Kind = Callable[[str], tuple[logging.Handler, Callable[[], None]]]


def null_kind(path: str) -> tuple[logging.Handler, Callable[[], None]]:
    handler = NullHandler()
    return handler, handler.close


def logpipe_kind(when_full: str = "block") -> Kind:
    def build(path: str) -> tuple[logging.Handler, Callable[[], None]]:
        handler = LogpipeHandler(f"file:{path}", when_full=when_full, sigterm=False)
        return handler, handler.close

    return build


def queue_kind(path: str) -> tuple[logging.Handler, Callable[[], None]]:
    target = logging.FileHandler(path)
    q: queue.Queue[logging.LogRecord] = queue.Queue()  # unbounded, as the logging cookbook has it
    handler = logging.handlers.QueueHandler(q)
    listener = logging.handlers.QueueListener(q, target)
    listener.start()

    def finish() -> None:
        listener.stop()  # drains the queue first
        target.close()
        handler.close()

    return handler, finish


def file_kind(path: str) -> tuple[logging.Handler, Callable[[], None]]:
    handler = logging.FileHandler(path)
    return handler, handler.close


KINDS: dict[str, Kind] = {
    "null (floor)": null_kind,
    "LogpipeHandler": logpipe_kind(),
    "QueueHandler": queue_kind,
    "FileHandler": file_kind,
}


def caller_round(kind: Kind, path: str, calls: int) -> float:
    """Thread CPU seconds per logger.info call, one round of ``calls`` calls."""
    handler, finish = kind(path)
    with logger_with(handler) as logger:
        info = logger.info
        for i in range(200):  # warm-up
            info(MESSAGE, i, 3.2)
        started = time.thread_time()
        for i in range(calls):
            info(MESSAGE, i, 3.2)
        elapsed = time.thread_time() - started
    finish()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return elapsed / calls


def caller_times(directory: str, calls: int, repeats: int) -> dict[str, float]:
    """The best per-call time of each kind; rounds interleaved, so a busy moment hits them all."""
    best = dict.fromkeys(KINDS, float("inf"))
    for _ in range(repeats):
        for name, kind in KINDS.items():
            best[name] = min(best[name], caller_round(kind, os.path.join(directory, "caller.log"), calls))
    return best


def count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def throughput(kind: Kind, directory: str, records: int, threads: int) -> float:
    """Records per second from the first call until all are in the file."""
    path = os.path.join(directory, f"throughput-{threads}.log")
    handler, finish = kind(path)
    per_thread = records // threads
    start_line = threading.Barrier(threads + 1)
    with logger_with(handler) as logger:

        def log() -> None:
            info = logger.info
            start_line.wait()
            for i in range(per_thread):
                info(MESSAGE, i, 3.2)

        workers = [threading.Thread(target=log) for _ in range(threads)]
        for worker in workers:
            worker.start()
        start_line.wait()
        started = time.perf_counter()
        for worker in workers:
            worker.join()
        finish()
        elapsed = time.perf_counter() - started
    lines = count_lines(path)
    os.unlink(path)
    if lines != per_thread * threads:
        raise SystemExit(f"{kind}: {lines} lines in the file for {per_thread * threads} logged")
    return per_thread * threads / elapsed


def trickle(kind: Kind, directory: str, rate: float, seconds: float) -> tuple[float, int | None]:
    """CPU seconds the handler's own threads use while the caller logs ``rate`` records a second
    (every thread but the caller's), and the ring's wake-ups of parked workers (LogpipeHandler)."""
    path = os.path.join(directory, "trickle.log")
    handler, finish = kind(path)
    count = int(rate * seconds)
    with logger_with(handler) as logger:
        info = logger.info
        info(MESSAGE, -1, 3.2)
        time.sleep(0.2)  # the threads started and settled
        ring = getattr(handler, "ring", None)
        wakes_before = ring.get_wakes if ring is not None else 0
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        caller_before = time.thread_time()
        due = time.monotonic()
        for i in range(count):
            info(MESSAGE, i, 3.2)
            due += 1.0 / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        caller = time.thread_time() - caller_before
        usage = resource.getrusage(resource.RUSAGE_SELF)
        wakes = ring.get_wakes - wakes_before if ring is not None else None
    finish()
    lines = count_lines(path)
    os.unlink(path)
    if lines != count + 1:
        raise SystemExit(f"{kind}: {lines} lines in the file for {count + 1} logged")
    process = (usage.ru_utime + usage.ru_stime) - (usage_before.ru_utime + usage_before.ru_stime)
    return max(0.0, process - caller), wakes


# --- memory while the sink is stalled (one child interpreter per case) --------------

STALL_CASES = ("LogpipeHandler drop", "LogpipeHandler block", "QueueHandler", "FileHandler")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def stall_child(case: str, fifo: str, records: int, seconds: float) -> None:
    """Runs in the child: log into a stalled FIFO, print a JSON result, exit at once."""
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    kinds: dict[str, Kind] = {
        "LogpipeHandler drop": logpipe_kind("drop"),
        "LogpipeHandler block": logpipe_kind("block"),
        "QueueHandler": queue_kind,
        "FileHandler": file_kind,
    }
    before = rss_bytes()
    handler, _finish = kinds[case](fifo)
    with logger_with(handler) as logger:
        logger.info("first")  # the handler's fixed cost: its ring, threads, first-use imports
    time.sleep(0.2)
    built = rss_bytes()
    logged = [0]

    def log() -> None:
        with logger_with(handler) as logger:
            for i in range(records):
                logger.info(MESSAGE, i, 3.2)
                logged[0] = i + 1

    thread = threading.Thread(target=log, daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(seconds)
    elapsed = time.perf_counter() - started
    time.sleep(0.2)  # let the listener or the workers take what they will take
    result = {
        "fixed": built - before,
        "rss_growth": rss_bytes() - built,
        "returned": logged[0],
        "seconds": elapsed,
        "blocked": thread.is_alive(),
        "dropped": getattr(handler, "dropped", 0),
    }
    print(json.dumps(result), flush=True)
    os.close(reader)
    os._exit(0)  # the sink is stalled on purpose: no orderly shutdown


def stalled_memory(directory: str, records: int, seconds: float) -> dict[str, dict[str, float]]:
    results = {}
    for n, case in enumerate(STALL_CASES):
        fifo = os.path.join(directory, f"stall-{n}.fifo")
        os.mkfifo(fifo)
        out = subprocess.run(
            [sys.executable, __file__, "--stall-child", case, "--fifo", fifo,
             "--stall-records", str(records), "--stall-seconds", str(seconds)],
            check=True, capture_output=True, text=True, timeout=seconds + 60,
        )
        results[case] = json.loads(out.stdout.strip().splitlines()[-1])
        os.unlink(fifo)
    return results


# --- the report --------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="logger.info calls per caller-time round")
    parser.add_argument("--repeats", type=int, default=7, help="caller-time rounds (the best is kept)")
    parser.add_argument("--records", type=int, default=200_000, help="records per throughput run")
    parser.add_argument("--stall-records", type=int, default=100_000, help="most records logged into the stalled sink")
    parser.add_argument("--stall-seconds", type=float, default=10.0, help="longest the stalled-sink logging runs")
    parser.add_argument("--trickle-rate", type=float, default=3000.0, help="records a second in the trickle")
    parser.add_argument("--trickle-seconds", type=float, default=3.0, help="how long the trickle runs")
    parser.add_argument("--stall-child", help=argparse.SUPPRESS)
    parser.add_argument("--fifo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stall_child:
        stall_child(args.stall_child, args.fifo, args.stall_records, args.stall_seconds)
        return

    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    directory = tempfile.mkdtemp(prefix="logpipe-bench-logging-", dir=shm)
    try:
        print(f"Python {sys.version.split()[0]}, files in {directory}")
        print(f"\n1. caller thread CPU time per logger.info (best of {args.repeats} x {args.calls} calls)")
        per_call = caller_times(directory, args.calls, args.repeats)
        floor = per_call["null (floor)"]
        added = {name: per_call[name] - floor for name in KINDS if name != "null (floor)"}
        print(f"   {'handler':16} {'per call':>10} {'added':>10}")
        print(f"   {'null (floor)':16} {floor * 1e6:8.2f}us {'':>10}")
        for name, value in added.items():
            print(f"   {name:16} {per_call[name] * 1e6:8.2f}us {value * 1e6:8.2f}us")

        print(f"\n2. logs/s end to end ({args.records} records, until all are in the file)")
        rates: dict[tuple[str, int], float] = {}
        print(f"   {'handler':16} {'1 thread':>12} {'8 threads':>12}")
        for name, kind in KINDS.items():
            if name == "null (floor)":
                continue
            for threads in (1, 8):
                rates[name, threads] = throughput(kind, directory, args.records, threads)
            print(f"   {name:16} {rates[name, 1]:12,.0f} {rates[name, 8]:12,.0f}")

        print(f"\n3. memory while the sink is stalled (a FIFO nobody reads; up to {args.stall_records} "
              f"records or {args.stall_seconds:g} s)")
        stalled = stalled_memory(directory, args.stall_records, args.stall_seconds)
        print(f"   {'case':22} {'fixed':>8} {'growth':>9} {'calls returned':>15} {'dropped':>9}  caller")
        for case, result in stalled.items():
            state = "blocked" if result["blocked"] else f"done in {result['seconds']:.1f}s"
            print(f"   {case:22} {result['fixed'] / 2**20:6.1f}MB {result['rss_growth'] / 2**20:7.1f}MB "
                  f"{result['returned']:15,} {result['dropped']:9,}  {state}")
        print("   (fixed: RSS the handler costs once it has logged one record; growth: RSS added while logging)")

        print(f"\n4. a trickle: {args.trickle_rate:g} records/s for {args.trickle_seconds:g} s, "
              "CPU time of the handler's own threads")
        background: dict[str, float] = {}
        print(f"   {'handler':16} {'CPU':>10} {'per record':>11} {'wake-ups':>9}")
        for name in ("LogpipeHandler", "QueueHandler"):
            cpu, wakes = trickle(KINDS[name], directory, args.trickle_rate, args.trickle_seconds)
            background[name] = cpu
            per_record = cpu / (args.trickle_rate * args.trickle_seconds)
            shown = "" if wakes is None else f"{wakes:9,}"
            print(f"   {name:16} {cpu * 1e3:8.1f}ms {per_record * 1e6:9.2f}us {shown}")

        print("\nRatios (issue 11 targets in brackets)")
        ours, theirs = added["LogpipeHandler"], added["QueueHandler"]
        print(f"   added caller time, QueueHandler / LogpipeHandler: {theirs / ours:5.2f}x  [>= 4x]")
        print(f"   added caller time, FileHandler / LogpipeHandler:  {added['FileHandler'] / ours:5.2f}x")
        for threads in (1, 8):
            ratio = rates["LogpipeHandler", threads] / rates["QueueHandler", threads]
            target = "  [>= 3x]" if threads == 8 else ""
            print(f"   logs/s with {threads} thread{'s' if threads > 1 else ' '}, LogpipeHandler / QueueHandler: "
                  f"{ratio:5.2f}x{target}")
        ours_mb = stalled["LogpipeHandler drop"]["rss_growth"] / 2**20
        theirs_mb = stalled["QueueHandler"]["rss_growth"] / 2**20
        print(f"   background CPU in the trickle, QueueHandler / LogpipeHandler: "
              f"{background['QueueHandler'] / max(background['LogpipeHandler'], 1e-9):5.2f}x")
        print(f"   RSS growth with the sink stalled: QueueHandler {theirs_mb:.1f} MB, "
              f"LogpipeHandler drop {ours_mb:.1f} MB, for {args.stall_records} records")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
