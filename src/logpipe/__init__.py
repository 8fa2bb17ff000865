"""logpipe: a backpressure-aware, auto-scaling log pipeline for one host.

The public API is re-exported here; everything else is private or lives in
the layer packages (``logpipe.domain``, ``logpipe.application``,
``logpipe.infrastructure``).

The public names are imported on first use: every ``logpipe.*``
import runs this file first, the ``logpipe`` command's entry point included,
and that must install its signal handler before the heavy imports (the ring
buffer pulls in orjson).
"""

from __future__ import annotations

from logpipe._version import __version__

TYPE_CHECKING = False  # not typing's: importing typing costs ~10 ms of start-up
if TYPE_CHECKING:
    from typing import Any

    from logpipe._ringbuf import Batch, RingBuffer, StopSignal
    from logpipe.exceptions import Closed, ConfigError, Empty, Full, LogpipeError
    from logpipe.logging import LogpipeHandler

__all__ = [
    "Batch",
    "Closed",
    "ConfigError",
    "Empty",
    "Full",
    "LogpipeError",
    "LogpipeHandler",
    "RingBuffer",
    "StopSignal",
    "__version__",
]

_LAZY = {
    "Batch": "logpipe._ringbuf",
    "RingBuffer": "logpipe._ringbuf",
    "StopSignal": "logpipe._ringbuf",
    "Closed": "logpipe.exceptions",
    "ConfigError": "logpipe.exceptions",
    "Empty": "logpipe.exceptions",
    "Full": "logpipe.exceptions",
    "LogpipeError": "logpipe.exceptions",
    "LogpipeHandler": "logpipe.logging",  # the pipeline machinery: loaded only when asked for
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'logpipe' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
