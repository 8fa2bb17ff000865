"""The ``null`` sink: counts records and bytes, writes nothing.

For benchmarks and dry runs: the pipeline's cost without the target's.
"""

from __future__ import annotations

from typing import ClassVar

from logpipe.domain.records import frozen
from logpipe.infrastructure.sinks._base import CountingSink

__all__ = ["NullSink", "NullSinkConfig"]


class NullSink(CountingSink):
    """Discards every batch, counting its records (``records``) and bytes (``nbytes``)."""

    def __init__(self) -> None:
        super().__init__("null")

    def _write(self, view: memoryview) -> None:
        pass


@frozen
class NullSinkConfig:
    """Builds a :class:`NullSink`; spec ``null``."""

    scheme: ClassVar[str] = "null"
    usage: ClassVar[str] = "null"
    takes_target: ClassVar[bool] = False

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> NullSinkConfig:
        """The config for spec ``null`` (``target`` is always None here)."""
        return cls()

    def build(self, settings: object = None) -> NullSink:
        """A new NullSink."""
        return NullSink()
