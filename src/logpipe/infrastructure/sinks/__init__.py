"""Built-in sinks, one module each, each with the config object that builds it.

``null`` (counts only), ``stdout`` and ``file:PATH``; the registry
(:mod:`logpipe.infrastructure.registry`) maps specs to their configs.
"""

from logpipe.infrastructure.sinks._base import CountingSink
from logpipe.infrastructure.sinks.file import FileSink, FileSinkConfig
from logpipe.infrastructure.sinks.null import NullSink, NullSinkConfig
from logpipe.infrastructure.sinks.stdout import StdoutSink, StdoutSinkConfig

__all__ = [
    "CountingSink",
    "FileSink",
    "FileSinkConfig",
    "NullSink",
    "NullSinkConfig",
    "StdoutSink",
    "StdoutSinkConfig",
]
