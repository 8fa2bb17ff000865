"""Built-in sinks, one module each, each with the config object that builds it.

``null`` (counts only), ``stdout`` and ``file:PATH``; the registry
(:mod:`logpipe.infrastructure.registry`) maps specs to their configs.

A sink's module is imported when a spec names it or one of its names is
first asked for here (``from logpipe.infrastructure.sinks import
NullSink``), not by importing this package: a run to a file does not load
the null and stdout sinks (~1 ms each when their configs were dataclasses).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from logpipe._lazy import lazy_names

if TYPE_CHECKING:
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

__getattr__ = lazy_names(
    __name__,
    {
        "CountingSink": f"{__name__}._base",
        "FileSink": f"{__name__}.file",
        "FileSinkConfig": f"{__name__}.file",
        "NullSink": f"{__name__}.null",
        "NullSinkConfig": f"{__name__}.null",
        "StdoutSink": f"{__name__}.stdout",
        "StdoutSinkConfig": f"{__name__}.stdout",
    },
)
