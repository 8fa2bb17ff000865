"""The infrastructure layer: sources, sinks and the registry that picks them.

Components are chosen by spec (``null``, ``stdout``, ``file:PATH``...);
:func:`open_sink` and :func:`open_source` turn a spec into one, with
one-line :class:`~logpipe.exceptions.ConfigError` messages for bad specs.
The sinks' names and ``GeneratorSourceConfig`` load their modules on
first use, as in :mod:`logpipe.infrastructure.sinks`.
"""

from typing import TYPE_CHECKING

from logpipe._lazy import lazy_names
from logpipe.infrastructure.registry import (
    SINKS,
    SOURCES,
    ComponentConfig,
    Registry,
    Spec,
    open_sink,
    open_source,
    parse_sink,
    parse_source,
)

if TYPE_CHECKING:
    from logpipe.infrastructure.registry import GeneratorSourceConfig
    from logpipe.infrastructure.sinks import (
        CountingSink,
        FileSink,
        FileSinkConfig,
        NullSink,
        NullSinkConfig,
        StdoutSink,
        StdoutSinkConfig,
    )

__all__ = [
    "SINKS",
    "SOURCES",
    "ComponentConfig",
    "CountingSink",
    "FileSink",
    "FileSinkConfig",
    "GeneratorSourceConfig",
    "NullSink",
    "NullSinkConfig",
    "Registry",
    "Spec",
    "StdoutSink",
    "StdoutSinkConfig",
    "open_sink",
    "open_source",
    "parse_sink",
    "parse_source",
]

_SINKS = "logpipe.infrastructure.sinks"
__getattr__ = lazy_names(
    __name__,
    {
        "GeneratorSourceConfig": "logpipe.infrastructure.sources.generator",
        "CountingSink": _SINKS,
        "FileSink": _SINKS,
        "FileSinkConfig": _SINKS,
        "NullSink": _SINKS,
        "NullSinkConfig": _SINKS,
        "StdoutSink": _SINKS,
        "StdoutSinkConfig": _SINKS,
    },
)
