"""The sources' read buffer: page aligned, the size asked for, its newline search exact."""

from __future__ import annotations

import os
import random

import pytest

from logpipe._framing import aligned_offset
from logpipe.infrastructure.sources._lines import CHUNK_SIZE, READ_ALIGNMENT, ReadBuffer


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, CHUNK_SIZE])
def test_view_starts_on_a_page_and_has_the_size_asked_for(size):
    buffer = ReadBuffer(size)
    assert len(buffer) == len(buffer.view) == size
    assert aligned_offset(buffer.view, READ_ALIGNMENT) == 0
    assert not buffer.view.readonly


def test_many_buffers_are_all_aligned():
    # malloc places bytearrays at many different addresses: each must be realigned.
    buffers = [ReadBuffer(random.Random(seed).randint(1, 70_000)) for seed in range(50)]
    assert all(aligned_offset(buffer.view, READ_ALIGNMENT) == 0 for buffer in buffers)


def test_the_storage_cannot_move_while_the_view_exists():
    buffer = ReadBuffer(100)
    with pytest.raises(BufferError):
        buffer._storage.extend(b"x" * 10_000)


def test_os_readv_fills_the_view(tmp_path):
    path = tmp_path / "in"
    data = os.urandom(10_000)
    path.write_bytes(data)
    buffer = ReadBuffer(4096)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = bytearray()
        while n := os.readv(fd, (buffer.view,)):
            got += buffer.view[:n]
    finally:
        os.close(fd)
    assert got == data
