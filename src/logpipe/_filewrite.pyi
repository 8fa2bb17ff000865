"""Type stubs for the file and stdout sinks' writes (logpipe._filewrite)."""

from collections.abc import Callable

from typing_extensions import Buffer

from logpipe._ringbuf import Batch

HOLD_GIL_MAX_BYTES: int
SLOW_WRITE_NS: int
RELEASE_AFTER_SLOW_NS: int

def write_holding_gil(fd: int, data: Buffer) -> int: ...

class HeldWrites:
    regular: bool
    written: int
    kept_gil: int
    released_gil: int
    clock: Callable[[], int] | None
    def __init__(self, regular: bool = False, *, clock: Callable[[], int] | None = None) -> None: ...
    def write(self, fd: int, data: Buffer) -> int: ...
    def write_batch(self, fd: int, batch: Batch) -> int: ...
