"""The domain layer: pure Python, no threads, no I/O.

Configuration and its rules, Go-style durations, the pipeline's policies
(backpressure sleep table, scaling decision, pacing schedule), the clock,
and the Protocols sources and sinks implement. Nothing here imports the
application or infrastructure layers.
"""

from logpipe.domain.clock import Clock, FakeClock, SystemClock
from logpipe.domain.config import (
    OPTION_BY_NAME,
    OPTIONS,
    Kind,
    Option,
    PipelineConfig,
    build_config,
    collect_toml_errors,
    load_toml,
)
from logpipe.domain.durations import format_duration, parse_duration
from logpipe.domain.policies import (
    BACKPRESSURE_TABLE,
    PacingSchedule,
    ScaleDecision,
    backpressure_sleep,
    decide_scaling,
    stabilize_scale_down,
)
from logpipe.domain.ports import FramedBatch, Ring, Sink, Source, StopFlag

__all__ = [
    "BACKPRESSURE_TABLE",
    "Clock",
    "FakeClock",
    "FramedBatch",
    "Kind",
    "OPTIONS",
    "OPTION_BY_NAME",
    "Option",
    "PacingSchedule",
    "PipelineConfig",
    "Ring",
    "ScaleDecision",
    "Sink",
    "Source",
    "StopFlag",
    "SystemClock",
    "backpressure_sleep",
    "build_config",
    "collect_toml_errors",
    "decide_scaling",
    "format_duration",
    "load_toml",
    "parse_duration",
    "stabilize_scale_down",
]
