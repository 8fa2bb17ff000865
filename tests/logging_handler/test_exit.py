"""What reaches the file when a program using LogpipeHandler ends: normally, by an uncaught
exception, by logging.shutdown(), and by SIGTERM (each a real child interpreter)."""

from __future__ import annotations

import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from logging_handler.conftest import read_lines

from _support import finish_within, wait_until

CHILD_TIMEOUT = 60.0

# The child logs COUNT tagged records of mixed sizes through a small ring (so
# the ring is often full and the caller waits in put), then does ENDING.
CHILD = """
import logging, mmap, os, signal, struct, sys
from logpipe.logging import LogpipeHandler

out, counter, count, ending = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if ending == "own-sigterm":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(7))
handler = LogpipeHandler("file:" + out, capacity=32, batch_size=16, batch_timeout="20ms")
logger = logging.getLogger("child")
logger.setLevel(logging.INFO)
logger.addHandler(handler)
with open(counter, "r+b") as f:
    done = mmap.mmap(f.fileno(), 8)
seq = 0
while count < 0 or seq < count:
    logger.info("record %d", seq, extra={"seq": seq, "pad": "p" * (seq * 37 % 2000)})
    seq += 1
    struct.pack_into("q", done, 0, seq)  # every call up to here has returned
if ending == "shutdown":
    logging.shutdown()
    print("closed" if handler.closed and handler.written == count else "NOT CLOSED", flush=True)
elif ending == "raise":
    raise RuntimeError("the program crashed")
"""


def start_child(tmp_path: Path, count: int, ending: str) -> tuple[subprocess.Popen[bytes], Path, mmap.mmap]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    counter = tmp_path / "counter"
    counter.write_bytes(b"\0" * 8)
    out = tmp_path / "out.ndjson"
    with open(counter, "r+b") as f:
        done = mmap.mmap(f.fileno(), 8)
    process = subprocess.Popen(
        [sys.executable, str(script), str(out), str(counter), str(count), ending],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    return process, out, done


def returned(done: mmap.mmap) -> int:
    return struct.unpack_from("q", done, 0)[0]


def seqs_in(out: Path) -> list[int]:
    return [record["extra"]["seq"] for record in read_lines(out)]


def sigterm_child(
    tmp_path: Path, ending: str, once_returned: int, settle: float = 0.0
) -> tuple[int, str, Path, mmap.mmap]:
    """Start a child logging forever, SIGTERM it once more than ``once_returned`` logger calls
    have returned (and ``settle`` seconds more); return its exit code, stderr, output file and
    returned-calls counter."""
    process, out, done = start_child(tmp_path, -1, ending)
    try:
        assert wait_until(lambda: returned(done) > once_returned or process.poll() is not None,
                          timeout=CHILD_TIMEOUT)
        time.sleep(settle)
        process.send_signal(signal.SIGTERM)
        code, _out, err = finish_within(process, CHILD_TIMEOUT, "child")
    finally:
        if process.poll() is None:
            process.kill()
    return code, err, out, done


def test_normal_exit_flushes_everything(tmp_path: Path) -> None:
    """A program that just ends (no close, no shutdown call) has every record in the file."""
    process, out, _ = start_child(tmp_path, 3000, "end")
    code, _out, err = finish_within(process, CHILD_TIMEOUT, "child")
    assert (code, err) == (0, "")
    assert seqs_in(out) == list(range(3000))


def test_uncaught_exception_flushes_everything(tmp_path: Path) -> None:
    """A program that dies of an uncaught exception still runs atexit: nothing is lost."""
    process, out, _ = start_child(tmp_path, 3000, "raise")
    code, _out, err = finish_within(process, CHILD_TIMEOUT, "child")
    assert code == 1 and "RuntimeError: the program crashed" in err
    assert seqs_in(out) == list(range(3000))


def test_logging_shutdown_closes_and_flushes(tmp_path: Path) -> None:
    """logging.shutdown() flushes and closes the handler: all written before it returns."""
    process, out, _ = start_child(tmp_path, 3000, "shutdown")
    code, stdout, err = finish_within(process, CHILD_TIMEOUT, "child")
    assert (code, stdout, err) == (0, "closed\n", "")
    assert seqs_in(out) == list(range(3000))


def test_sigterm_loses_nothing(tmp_path: Path) -> None:
    """SIGTERM to a program logging in a loop (its ring full, the caller often waiting in put):
    it exits 143 and the file holds every record whose logger call returned, each once, in order
    (and at most the one record whose call the signal interrupted)."""
    code, err, out, done = sigterm_child(tmp_path, "forever", once_returned=2000)
    assert code == 143, err
    logged = returned(done)
    seqs = seqs_in(out)
    assert seqs == list(range(len(seqs))) and len(seqs) in (logged, logged + 1), (logged, len(seqs))


def test_program_with_its_own_sigterm_handler_keeps_it(tmp_path: Path) -> None:
    """A program that handles SIGTERM itself keeps its handler (here: sys.exit(7)), and since
    it exits through Python, atexit still flushes every record."""
    code, err, out, done = sigterm_child(tmp_path, "own-sigterm", once_returned=500, settle=0.05)
    assert code == 7, err
    seqs = seqs_in(out)
    assert seqs == list(range(len(seqs))) and len(seqs) >= returned(done)


STALLED_CHILD = """
import logging, os, sys
from logpipe.infrastructure.sinks import FileSink
from logpipe.logging import LogpipeHandler

fifo = sys.argv[1]
reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads: the sink stalls
handler = LogpipeHandler(FileSink(fifo, fsync=False), capacity=16, batch_size=8)
logger = logging.getLogger("child")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
print("logging", flush=True)
seq = 0
while True:
    logger.info("record %d %s", seq, "s" * 1000)
    seq += 1
"""


def test_second_sigterm_abandons_a_stuck_exit_flush(tmp_path: Path) -> None:
    """With the sink stalled, a SIGTERM starts the exit flush, which waits (block mode does not
    give records up by itself); a second SIGTERM abandons it: the process exits 143 and says on
    stderr how many records were not written."""
    script = tmp_path / "stalled.py"
    script.write_text(textwrap.dedent(STALLED_CHILD))
    fifo = tmp_path / "stalled.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen([sys.executable, str(script), str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline() == b"logging\n"
        time.sleep(0.3)  # the ring fills at once; the main thread then waits in put
        process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.poll() is None, "the exit flush did not wait for the stalled sink"
        process.send_signal(signal.SIGTERM)
        code, _out, err = finish_within(process, CHILD_TIMEOUT, "child")
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 143
    assert "logpipe.logging: exit flush abandoned: " in err and " log records not written" in err


FORKING_CHILD = """
import logging, os, sys
from logpipe.logging import LogpipeHandler

handler = LogpipeHandler("file:" + sys.argv[1], capacity=16)
logger = logging.getLogger("child")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
logger.info("parent before fork")
pid = os.fork()
if pid == 0:
    for seq in range(100):  # more than the ring holds: a copy without workers would hang here
        logger.info("forked child %d", seq)
    sys.exit(0)  # through atexit and logging.shutdown, as a normal exit
_, status = os.waitpid(pid, 0)
logger.info("parent after fork")
print(os.waitstatus_to_exitcode(status), flush=True)
"""


def test_a_forked_child_sends_its_records_to_stderr(tmp_path: Path) -> None:
    """A child forked after the handler was made has no workers: its records go to stderr as
    JSON lines (after one notice) instead of filling a ring nobody drains; it exits normally,
    and the parent's handler goes on writing the file."""
    script = tmp_path / "forking.py"
    script.write_text(textwrap.dedent(FORKING_CHILD))
    out = tmp_path / "out.ndjson"
    # -W: from 3.12 fork() in a process with threads warns (DeprecationWarning) on stderr.
    process = subprocess.Popen(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(script), str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    code, stdout, err = finish_within(process, CHILD_TIMEOUT, "forking child")
    assert (code, stdout) == (0, "0\n"), err
    assert [r["msg"] for r in read_lines(out)] == ["parent before fork", "parent after fork"]
    lines = err.splitlines()
    assert "was forked from the one that created the handler" in lines[0]
    assert [json.loads(line)["msg"] for line in lines[1:]] == [f"forked child {seq}" for seq in range(100)]
