"""What every source is given besides its spec: the shared settings and sinks
for its side results (counters, rejected lines, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass

from logpipe.application.metrics import Metrics
from logpipe.infrastructure.deadletter import DeadLetter

__all__ = ["SourceContext"]


@dataclass(frozen=True)
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
    """

    format: str
    max_line: int
    metrics: Metrics
    dead_letter: DeadLetter
    state_dir: str | None = None
    once: bool = False
    max_connections: int = 256
