"""The ring's notifies without a full fence (membarrier(2)), and with one.

_lp_sync.h ("asymmetric barrier"): where the kernel offers membarrier, a put
or get that may have to wake someone issues only a compiler barrier, and a
thread about to park pays for both sides with membarrier. A mistake there
loses a wake-up: a thread sleeps through the record (or the room) it waits
for. Each test below parks threads hundreds of times on a ring of three
slots, in both modes and in a forked child (which the kernel does not
register again by itself), and fails on any record lost or duplicated,
and on any thread still waiting after its timeout. The C threads of
tests/test_ringbuf_nogil.py, which wait with no timeout at all, stress the
same protocol harder.

CI's portable step runs every core test with LOGPIPE_FULL_FENCES=1 as
well (.ci/run), so the fenced path stays tested too.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import logpipe._ringbuf as ringbuf

JOIN = 60.0  # seconds a child gets: its rings park ~100k times, well under a second here

# Two producers and two consumers on a ring of 3 slots: the threads park
# hundreds of times a run (the GIL keeps most waits short enough to spin),
# each park a wake-up to find or to miss. Blocking calls
# without a timeout: a lost wake-up hangs the child, and the parent's
# timeout turns that into a failure.
PING_PONG = r"""
import os, sys, threading
from logpipe import RingBuffer
import logpipe._ringbuf as ringbuf

def exchange(label):
    ring = RingBuffer(3)
    per_producer = 20000
    got = [[], []]
    def produce(p):
        for i in range(per_producer):
            ring.put(b"%d:%d" % (p, i))
    def consume(c):
        while True:
            item = ring.get()
            if item == b"end":
                return
            got[c].append(item)
    threads = [threading.Thread(target=produce, args=(p,)) for p in (0, 1)]
    threads += [threading.Thread(target=consume, args=(c,)) for c in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join()
    ring.put(b"end")
    ring.put(b"end")
    for thread in threads[2:]:
        thread.join()
    items = sorted(got[0] + got[1])
    expected = sorted(b"%d:%d" % (p, i) for p in (0, 1) for i in range(per_producer))
    assert items == expected, "lost or duplicated records"
    for mine in got:  # each producer's records arrive in order at each consumer
        for p in (b"0:", b"1:"):
            seq = [int(x.split(b":")[1]) for x in mine if x.startswith(p)]
            assert seq == sorted(seq)
    print(label, ringbuf.LIGHT_NOTIFY, ring.put_waits + ring.get_waits > 100, flush=True)

exchange("parent")
if sys.argv[1] == "fork":
    pid = os.fork()
    if pid == 0:
        try:
            exchange("child")
        except BaseException as exc:
            print("child failed:", exc, flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
"""


def run_child(mode: str, full_fences: bool) -> list[str]:
    env = dict(os.environ, LOGPIPE_FULL_FENCES="1" if full_fences else "0")
    done = subprocess.run([sys.executable, "-c", PING_PONG, mode], capture_output=True, text=True,
                          timeout=JOIN, env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_this_linux_notifies_without_fences_unless_told_not_to():
    """The CI machines have membarrier: the light path is the one users run (and the suite tests)."""
    expected = os.environ.get("LOGPIPE_FULL_FENCES", "") in ("", "0")
    assert ringbuf.LIGHT_NOTIFY is expected


@pytest.mark.parametrize("full_fences", [False, True], ids=["membarrier", "fences"])
def test_threads_that_park_thousands_of_times_lose_no_wake_up(full_fences):
    assert run_child("threads", full_fences) == [f"parent {not full_fences} True"]


@pytest.mark.parametrize("full_fences", [False, True], ids=["membarrier", "fences"])
def test_a_forked_child_registers_again_and_loses_no_wake_up(full_fences):
    assert run_child("fork", full_fences) == [f"parent {not full_fences} True", f"child {not full_fences} True"]
