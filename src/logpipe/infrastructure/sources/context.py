"""What every source is given besides its spec: the shared settings and sinks
for its side results (counters, rejected lines, checkpoints)."""

from __future__ import annotations

from logpipe.application.metrics import Metrics
from logpipe.domain.config import PipelineConfig
from logpipe.domain.records import frozen
from logpipe.infrastructure.deadletter import DeadLetter, default_dead_letter_path

__all__ = ["SourceContext"]


@frozen
class SourceContext:
    """Settings and collaborators shared by all sources.

    Attributes:
        format: ``"raw"`` (any line is a record) or ``"json"`` (a line must be
            valid JSON; others go to the dead letter).
        max_line: longest line accepted, in bytes (the ring's max_record_size);
            longer lines are rejected as "too long".
        metrics: ``invalid`` is counted here.
        dead_letter: where rejected lines go.
        state_dir: where checkpoints live; None: no checkpoints.
        once: file sources read to the end once, then stop.
        max_connections: the TCP source's limit on clients at once.
        ring_capacity: the ring's capacity in records (``--channel-size``);
            the NATS source bounds its unacknowledged messages by it.
    """

    format: str
    max_line: int
    metrics: Metrics
    dead_letter: DeadLetter
    state_dir: str | None = None
    once: bool = False
    max_connections: int = 256
    ring_capacity: int = 1500

    @classmethod
    def for_run(cls, config: PipelineConfig, metrics: Metrics) -> SourceContext:
        """The context a run's configuration describes, with its dead-letter file
        (``--dead-letter``, else STATE_DIR/dead-letter.ndjson, else ./logpipe-dead-letter.ndjson)."""
        return cls(
            format=config.format,
            max_line=config.max_record_size,
            metrics=metrics,
            dead_letter=DeadLetter(config.dead_letter or default_dead_letter_path(config.state_dir)),
            state_dir=config.state_dir,
            once=config.once,
            max_connections=config.max_connections,
            ring_capacity=config.channel_size,
        )
