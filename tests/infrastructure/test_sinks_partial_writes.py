"""A write that fails part-way (a full disk first shows as a short write), in the
file sink and in the stdout sink writing to a regular file (``--sink stdout > OUT``).

Both keep the batch's unwritten rest (sinks/_heldwrite.py, UnfinishedBatch) and
complete it before anything else: the retry of the batch writes only the rest,
and another worker's batch waits behind it, so no byte is written twice and no
line is torn.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support import patch_sink_writes
from logpipe.exceptions import SinkError
from logpipe.infrastructure.sinks.file import FileSink
from logpipe.infrastructure.sinks.stdout import StdoutSink


@pytest.fixture(params=["file", "stdout to a regular file"])
def sink_on_file(request, tmp_path: Path) -> Iterator[tuple[FileSink | StdoutSink, int, Path]]:
    """The sink, the descriptor its batches are written to, and the file's path."""
    path = tmp_path / "out.ndjson"
    if request.param == "file":
        sink = FileSink(path)
        yield sink, sink._fd, path
        return
    with open(path, "wb") as stream:
        sink = StdoutSink(stream)
        assert sink._file_fd >= 0
        yield sink, sink._file_fd, path


def failing_after(fd: int, nbytes: int, err: int):
    """A write(2) that writes ``nbytes`` of the next write to ``fd``, then fails once with ``err``."""
    real_write = os.write
    state = {"armed": True}

    def write(target: int, data) -> int:
        if target != fd or not state["armed"]:
            return real_write(target, data)
        view = memoryview(data)
        if len(view) > nbytes and state["armed"] is True:
            state["armed"] = "failing"
            return real_write(target, view[:nbytes])
        if state["armed"] == "failing":
            state["armed"] = False
            raise OSError(err, os.strerror(err))
        return real_write(target, data)

    return write


def test_retry_after_a_partial_write_writes_only_the_rest(sink_on_file, make_batch, monkeypatch):
    """Disk full part-way: the retry of the same batch completes it without duplicating a byte."""
    sink, fd, path = sink_on_file
    batch = make_batch([b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    patch_sink_writes(monkeypatch, failing_after(fd, 10, errno.ENOSPC))
    with pytest.raises(SinkError, match="No space left") as info:
        sink.write_batch(batch)
    assert info.value.retryable is True
    assert sink.records == 0
    sink.write_batch(batch)  # the worker's retry
    monkeypatch.undo()
    sink.close()
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n{"n":3}\n'
    assert sink.records == 3


def test_another_batch_after_a_partial_write_completes_the_torn_line_first(sink_on_file, make_batch, monkeypatch):
    """Another worker's batch waits for the torn batch's rest; the torn batch's retry then adds nothing."""
    sink, fd, path = sink_on_file
    torn = make_batch([b'{"n":1}', b'{"n":2}'])
    other = make_batch([b'{"m":1}'])
    patch_sink_writes(monkeypatch, failing_after(fd, 3, errno.ENOSPC))
    with pytest.raises(SinkError):
        sink.write_batch(torn)
    sink.write_batch(other)
    sink.write_batch(torn)  # its retry: already complete
    monkeypatch.undo()
    sink.close()
    assert path.read_bytes() == b'{"n":1}\n{"n":2}\n{"m":1}\n'
    assert sink.records == 3
