"""What kind of file a descriptor is open on, for the sources and sinks that read or write it."""

from __future__ import annotations

import os
import stat

__all__ = ["is_regular_file"]


def is_regular_file(fd: int) -> bool:
    """Whether ``fd`` is open on a regular file (False if it cannot be asked)."""
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
