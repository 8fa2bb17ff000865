"""Exporters: the pipeline's numbers for something other than the console.

:mod:`~logpipe.infrastructure.exporters.prometheus` serves ``/metrics`` and
``/health`` over HTTP; :mod:`~logpipe.infrastructure.exporters.report_json`
writes the final report as JSON. Both read the one
:class:`~logpipe.application.metrics.Metrics` of a run.
"""

from logpipe.infrastructure.exporters.prometheus import (
    MetricsCollector,
    MetricsServer,
    health,
    parse_address,
    start,
)
from logpipe.infrastructure.exporters.report_json import check_report_path, write_report_json

__all__ = [
    "MetricsCollector",
    "MetricsServer",
    "check_report_path",
    "health",
    "parse_address",
    "start",
    "write_report_json",
]
