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

from typing import TYPE_CHECKING

from logpipe._lazy import lazy_names
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

__getattr__ = lazy_names(
    __name__,
    dict.fromkeys(("MetricsCollector", "MetricsServer", "health", "parse_address", "start"), f"{__name__}.prometheus"),
)
