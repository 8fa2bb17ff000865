"""Type stubs for the GIL-keeping write(2) of the file sink (logpipe._filewrite)."""

from typing_extensions import Buffer

def write_holding_gil(fd: int, data: Buffer) -> int: ...
