"""The dead-letter file: where rejected input lines go, with the reason.

A malformed or oversized line must never crash the pipeline nor silently
vanish: it is counted (``logpipe_records_invalid_total``) and written here as
one JSON object per line::

    {"ts": 1712345678123456, "source": "tcp://127.0.0.1:5170", "reason": "not JSON: ...",
     "size": 10485760, "line": "<the first 4 KiB, decoded with replacement>"}

The file is opened lazily on the first rejection, so a clean run leaves no
empty file behind. Writes are serialised: sources call from several threads.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["DeadLetter", "default_dead_letter_path"]

# How much of a rejected line is kept: enough to see what went wrong,
# bounded so a 10 MB garbage line does not become a 10 MB dead letter.
KEPT_BYTES = 4096


def default_dead_letter_path(state_dir: str | None) -> str:
    """STATE_DIR/dead-letter.ndjson, or ./logpipe-dead-letter.ndjson."""
    if state_dir:
        return os.path.join(state_dir, "dead-letter.ndjson")
    return "logpipe-dead-letter.ndjson"


class DeadLetter:
    """Appends rejected lines to a file.

    Args:
        path: the file; created (with its directory) on the first rejection.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0
        self._lock = threading.Lock()
        self._file: object | None = None

    def reject(self, source: str, reason: str, line: bytes, size: int | None = None) -> None:
        """Record one rejected line.

        Args:
            source: the source spec the line came from.
            reason: why it was rejected, one short phrase.
            line: the line, or its first bytes if it was cut short.
            size: the line's full length when ``line`` holds only a prefix.
        """
        # Imported on the first rejection: orjson's import loads datetime,
        # uuid, platform and json (~10-15 ms), which a clean run never needs.
        import orjson

        entry = orjson.dumps(
            {
                "ts": time.time_ns() // 1000,
                "source": source,
                "reason": reason,
                "size": len(line) if size is None else size,
                "line": line[:KEPT_BYTES].decode("utf-8", "replace"),
            }
        )
        with self._lock:
            if self._file is None:
                directory = os.path.dirname(self.path)
                if directory:
                    os.makedirs(directory, exist_ok=True)
                self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
            self._file.write(entry + b"\n")  # type: ignore[attr-defined]
            self._file.flush()  # type: ignore[attr-defined]
            self.count += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()  # type: ignore[attr-defined]
                self._file = None
