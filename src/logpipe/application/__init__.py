"""The moving parts: producer, workers, pool, autoscaler, metrics, pipeline.

Threads live here; the decisions they act on (sleep table, scaling, pacing)
are pure functions in ``logpipe.domain``.

Each name loads its module on first use (``from logpipe.application import
Pipeline`` still works): a run from a file or stdin never imports the
generator (``producer`` and its compiled encoder), which the pipeline
imports only when it runs one.
"""

from typing import TYPE_CHECKING

from logpipe._lazy import lazy_names

if TYPE_CHECKING:
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

__getattr__ = lazy_names(
    __name__,
    {
        "AutoScaler": f"{__name__}.autoscaler",
        "Console": f"{__name__}.console",
        "GeneratorSource": f"{__name__}.producer",
        "Metrics": f"{__name__}.metrics",
        "MetricsReporter": f"{__name__}.metrics",
        "Pipeline": f"{__name__}.pipeline",
        "Report": f"{__name__}.pipeline",
        "Worker": f"{__name__}.worker",
        "WorkerPool": f"{__name__}.pool",
    },
)
