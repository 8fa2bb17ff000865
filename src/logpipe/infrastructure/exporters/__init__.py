"""Exporters: the pipeline's numbers for something other than the console.

:mod:`~logpipe.infrastructure.exporters.prometheus` serves ``/metrics`` and
``/health`` over HTTP; :mod:`~logpipe.infrastructure.exporters.report_json`
writes the final report as JSON. Both read the one
:class:`~logpipe.application.metrics.Metrics` of a run.

The prometheus module imports prometheus_client (some 70 ms), so it is
loaded only when one of its names is first used here, or imported itself
(the CLI does that only with ``--metrics-addr``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from logpipe.infrastructure.exporters.report_json import check_report_path, write_report_json

if TYPE_CHECKING:
    from logpipe.infrastructure.exporters.prometheus import (
        MetricsCollector,
        MetricsServer,
        health,
        parse_address,
        start,
    )

__all__ = [
    "MetricsCollector",
    "MetricsServer",
    "check_report_path",
    "health",
    "parse_address",
    "start",
    "write_report_json",
]

_PROMETHEUS_NAMES = ("MetricsCollector", "MetricsServer", "health", "parse_address", "start")


def __getattr__(name: str) -> Any:
    if name not in _PROMETHEUS_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.prometheus"), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value
