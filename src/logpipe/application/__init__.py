"""The moving parts: producer, workers, pool, autoscaler, metrics, pipeline.

Threads live here; the decisions they act on (sleep table, scaling, pacing)
are pure functions in ``logpipe.domain``.
"""

from logpipe.application.autoscaler import AutoScaler
from logpipe.application.console import Console
from logpipe.application.metrics import Metrics, MetricsReporter
from logpipe.application.pipeline import Pipeline, Report
from logpipe.application.pool import WorkerPool
from logpipe.application.producer import GeneratorSource
from logpipe.application.worker import Worker

__all__ = [
    "AutoScaler",
    "Console",
    "GeneratorSource",
    "Metrics",
    "MetricsReporter",
    "Pipeline",
    "Report",
    "Worker",
    "WorkerPool",
]
