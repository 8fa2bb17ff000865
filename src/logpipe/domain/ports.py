"""The extension points: what a sink and a source must provide.

Sources and sinks are plugins (``file:PATH``, ``stdout``, ``tcp://...``)
chosen by the infrastructure layer's registry; the application layer only
ever talks to them through these Protocols, so a test can hand it a list
appender or a scripted source instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

__all__ = ["FramedBatch", "Ring", "Sink", "Source", "StopFlag"]


class FramedBatch(Protocol):
    """Records popped in one pass, as newline-framed bytes.

    The buffer protocol gives ``rec1\\nrec2\\n...`` (``memoryview(batch)``,
    ``file.write(batch)``), so a sink writes a batch with one system call;
    ``len(batch)`` is the number of records, not of bytes.
    ``logpipe.Batch`` is the implementation.
    """

    def __len__(self) -> int: ...


class StopFlag(Protocol):
    """A one-way stop signal: ``threading.Event`` or ``logpipe.StopSignal``."""

    def is_set(self) -> bool: ...


class Ring(Protocol):
    """The part of ``logpipe.RingBuffer`` a source uses to deliver records."""

    @property
    def usage(self) -> float:
        """Occupancy, 0.0 to 1.0; what backpressure is decided on."""
        ...

    def put(self, item: bytes, block: bool = True, timeout: float | None = None) -> None:
        """Add one record; blocks while full; Full on timeout, Closed if closed."""
        ...

    def put_many(
        self, items: Iterable[bytes], block: bool = True, timeout: float | None = None
    ) -> int:
        """Add records in order; returns how many were taken."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Where records go: ``null``, ``stdout``, ``file:PATH``, NATS...

    Workers call a sink from several threads at once, one batch per call,
    so a sink serialises its own writes if its target needs that. A sink
    that cannot write raises; it never drops records silently.
    """

    def write_batch(self, batch: FramedBatch) -> None:
        """Write every record of ``batch``, ideally in one system call.

        Args:
            batch: newline-framed records; ``len(batch)`` is their count.
        """
        ...

    def flush(self) -> None:
        """Push buffered data to its destination (called before shutdown ends)."""
        ...

    def close(self) -> None:
        """Flush and release the target; called once, after the last write."""
        ...


@runtime_checkable
class Source(Protocol):
    """Where records come from: the generator, a file, stdin, TCP...

    Attributes:
        name: a short label for metrics and messages, e.g. ``"generator"``.
    """

    name: str

    def run(self, ring: Ring, stop: StopFlag) -> None:
        """Put records into ``ring`` until the input ends or ``stop`` is set.

        Runs in its own thread and returns promptly (within ~10 ms) once
        ``stop`` is set. Each record is one log line without its newline.
        The source does not close the ring: the pipeline does, after every
        source has returned, so shutdown keeps its order.

        Args:
            ring: the queue to fill; a put blocks while it is full, which is
                the backpressure of last resort.
            stop: the pipeline's cancellation signal.
        """
        ...
