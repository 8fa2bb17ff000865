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

from logpipe._lazy import lazy_names
from logpipe._version import __version__

TYPE_CHECKING = False  # not typing's: importing typing costs ~10 ms of start-up
if TYPE_CHECKING:
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


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
