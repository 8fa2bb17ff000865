"""logpipe._framing.aligned_offset: the distance to a buffer's first aligned byte."""

from __future__ import annotations

import pytest

from logpipe._framing import aligned_offset


@pytest.mark.parametrize("alignment", [1, 2, 16, 64, 4096])
def test_each_byte_further_in_is_one_less_to_go(alignment):
    storage = bytearray(3 * alignment + 8)
    view = memoryview(storage)
    first = aligned_offset(storage, alignment)
    assert 0 <= first < alignment
    for skip in range(2 * alignment):
        expected = (first - skip) % alignment
        assert aligned_offset(view[skip:], alignment) == expected


def test_alignment_one_is_always_zero():
    assert aligned_offset(b"abc", 1) == 0


@pytest.mark.parametrize("alignment", [0, -64, 3, 48])
def test_alignment_must_be_a_power_of_two(alignment):
    with pytest.raises(ValueError, match="power of two"):
        aligned_offset(b"abc", alignment)


def test_data_must_be_bytes_like():
    with pytest.raises(TypeError, match="bytes-like"):
        aligned_offset("text", 64)
