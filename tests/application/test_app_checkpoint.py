"""FlushTracker: the watermark is the longest written prefix, whatever order workers report in."""

from __future__ import annotations

import random
import sys
import threading

from logpipe.application.checkpoint import FlushTracker

JOIN = 30.0


def test_the_watermark_waits_for_a_gap_and_jumps_when_it_closes() -> None:
    tracker = FlushTracker()
    tracker.flushed([(0, 10)])
    assert tracker.watermark == 10
    tracker.flushed([(20, 5), (25, 0)])  # written past a gap (10..19); an empty run counts for nothing
    assert tracker.watermark == 10
    tracker.flushed([(15, 5)])
    assert tracker.watermark == 10
    tracker.flushed([(10, 5)])  # closes the gap: everything up to 25 is written
    assert tracker.watermark == 25
    tracker.flushed([(25, 3), (28, 2)])  # a batch of two runs (the ring wrapped)
    assert tracker.watermark == 30


def test_many_workers_reporting_shuffled_runs_never_move_the_watermark_past_a_gap() -> None:
    """Four reporters, runs in random order, a reader checking every watermark it sees.

    Each reporter marks its run's positions as written before it reports
    them; every watermark read must cover only marked positions, never go
    back, and end at the total.
    """
    runs_total = 20_000
    rng = random.Random(7)
    sizes = [rng.choice((0, 1, 1, 2, 50, 100)) for _ in range(runs_total)]
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size)
    total = starts[-1] + sizes[-1]
    runs = list(zip(starts, sizes))
    order = list(range(runs_total))
    rng.shuffle(order)
    shares = [order[i::4] for i in range(4)]
    written = bytearray(total)
    tracker = FlushTracker()
    failures: list[str] = []
    done = threading.Event()

    def report(indexes: list[int]) -> None:
        for i in indexes:
            start, count = runs[i]
            written[start : start + count] = b"\x01" * count
            # A batch holds one run, or two where the ring wrapped.
            tracker.flushed([(start, count)] if count < 2 else [(start, 1), (start + 1, count - 1)])

    def read() -> None:
        last = 0
        while not done.is_set():
            mark = tracker.watermark
            if mark < last:
                failures.append(f"the watermark went back from {last} to {mark}")
            if written.find(b"\x00", last, mark) != -1:  # below last: checked by an earlier read
                failures.append(f"the watermark {mark} covers a position not written yet")
            last = mark

    # Threads switch every microsecond, not every 5 ms, so the reads land
    # between reports all through the run, not once per slice.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        reporters = [threading.Thread(target=report, args=(share,)) for share in shares]
        reader = threading.Thread(target=read)
        reader.start()
        for thread in reporters:
            thread.start()
        for thread in reporters:
            thread.join(JOIN)
            assert not thread.is_alive()
        done.set()
        reader.join(JOIN)
        assert not reader.is_alive()
    finally:
        done.set()
        sys.setswitchinterval(interval)
    assert failures == []
    assert tracker.watermark == total
