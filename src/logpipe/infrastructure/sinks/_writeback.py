"""Start the kernel writing a file's new bytes to disk, without waiting.

The file sink fsyncs when it closes, so a run that ended is on disk. Left
alone, the kernel keeps written pages dirty in memory until that fsync
(or until gigabytes pile up), and the whole run's data is then written
while the run waits to end: 0.1-0.4 s for a few hundred MB here, seconds
for gigabytes. Asking for writeback as the data comes in
(``sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)``: start
writing these pages, return without waiting for them) spreads that work
over the run, so the final fsync has only the last few MiB to wait for.

It is advice, never a promise: durability still comes from the fsync at
close (and at each rotation), which reports any error. Where the call does
not exist (not Linux, or a libc without it) :func:`start_writeback` does
nothing, and its own errors are ignored for the same reason. ctypes is
loaded on the first call, so a run that never writes this much does not
pay for importing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["WRITEBACK_STEP", "start_writeback"]

#: Bytes written between two writeback requests: large enough that the
#: call is rare (one per 8 MiB), small enough to keep the final fsync short.
WRITEBACK_STEP = 8 << 20

_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of dirty pages, do not wait

_call: Callable[[int, int, int], None] | None = None
_loaded = False


def _load() -> Callable[[int, int, int], None] | None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int

    def call(fd: int, offset: int, length: int) -> None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # -1 on error: advice only

    return call


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` at ``offset`` to disk."""
    global _call, _loaded
    if not _loaded:
        _call = _load() if os.name == "posix" else None
        _loaded = True
    if _call is not None:
        _call(fd, offset, length)
