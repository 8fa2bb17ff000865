"""The batch encoder: the generator's JSON lines, formatted and pushed without the GIL."""

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from logpipe import Closed, RingBuffer
from logpipe._encoder import encode_logs, put_logs

MSG, LEVEL = orjson.dumps("hello from producer"), orjson.dumps("INFO")
u64 = st.integers(min_value=0, max_value=2**64 - 1)
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.lists(st.tuples(u64, i64), max_size=50))
def test_encoded_lines_parse_back_to_the_columns(rows):
    """Every line is JSON with the msg, level, ts and seq given, extremes of int64/uint64 included."""
    seqs = np.array([r[0] for r in rows], dtype=np.uint64)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    data = encode_logs(seqs, ts, MSG, LEVEL)
    lines = data.split(b"\n")
    assert lines[-1] == b""
    parsed = [orjson.loads(line) for line in lines[:-1]] if rows else []
    assert [(p["seq"], p["ts"]) for p in parsed] == rows
    assert all(p["msg"] == "hello from producer" and p["level"] == "INFO" for p in parsed)


def test_put_logs_pushes_what_encode_logs_frames():
    """put_logs puts exactly the records encode_logs would write, in order."""
    seqs = np.arange(1000, dtype=np.uint64)
    ts = np.arange(1000, dtype=np.int64) * 7
    ring = RingBuffer(2000)
    assert put_logs(ring, seqs, ts, MSG, LEVEL) == 1000
    assert bytes(ring.get_batch(1000, timeout=0)) == encode_logs(seqs, ts, MSG, LEVEL)


def test_put_logs_on_a_full_ring_returns_the_count_taken_at_the_timeout():
    """With no consumer, put_logs takes what fits and returns that count when the timeout expires."""
    ring = RingBuffer(10)
    seqs = np.arange(25, dtype=np.uint64)
    assert put_logs(ring, seqs, np.zeros(25, dtype=np.int64), MSG, LEVEL, timeout=0.05) == 10
    assert [orjson.loads(r)["seq"] for r in ring.get_many(10, block=False)] == list(range(10))


def test_put_logs_on_a_closed_ring_raises_closed():
    """A ring closed before anything went in raises Closed."""
    ring = RingBuffer(10)
    ring.close()
    with pytest.raises(Closed):
        put_logs(ring, np.arange(3, dtype=np.uint64), np.zeros(3, dtype=np.int64), MSG, LEVEL)


def test_columns_of_different_lengths_are_refused():
    """seqs and ts must have one entry per log."""
    with pytest.raises(ValueError, match="differ in length"):
        encode_logs(np.arange(3, dtype=np.uint64), np.zeros(2, dtype=np.int64), MSG, LEVEL)


def test_a_log_over_max_record_size_is_refused_before_anything_is_pushed():
    """A ring whose max_record_size is below the longest possible log refuses the call."""
    ring = RingBuffer(10, max_record_size=40)
    with pytest.raises(ValueError, match="max_record_size"):
        put_logs(ring, np.arange(1, dtype=np.uint64), np.zeros(1, dtype=np.int64), MSG, LEVEL)
    assert len(ring) == 0
