"""logpipe: a backpressure-aware, auto-scaling log pipeline for one host.

The public API is re-exported here; everything else is private or lives in
the layer packages (``logpipe.domain``, ``logpipe.application``,
``logpipe.infrastructure``).
"""

from logpipe._ringbuf import Batch, RingBuffer, StopSignal
from logpipe._version import __version__
from logpipe.exceptions import Closed, ConfigError, Empty, Full, LogpipeError

__all__ = [
    "Batch",
    "Closed",
    "ConfigError",
    "Empty",
    "Full",
    "LogpipeError",
    "RingBuffer",
    "StopSignal",
    "__version__",
]
