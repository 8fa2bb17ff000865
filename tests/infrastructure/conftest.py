"""Shared helpers for the sink and registry tests: real Batches from a real ring."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from logpipe import Batch, RingBuffer


def batch_of(records: Sequence[bytes]) -> Batch:
    """A logpipe.Batch holding ``records``, popped from a ring like a worker's."""
    ring = RingBuffer(max(1, len(records)))
    ring.put_many(records)
    batch = ring.get_batch(max(1, len(records)), timeout=0)
    assert len(batch) == len(records)
    return batch


@pytest.fixture
def make_batch() -> Callable[[Sequence[bytes]], Batch]:
    """Build a Batch from a list of records."""
    return batch_of
