"""Errors raised by logpipe.

Every error derives from :class:`LogpipeError`. Where an error means the same
as a standard-library one it subclasses that too, so code written for
``queue.Queue`` (``except queue.Full:``, on 3.13 ``except queue.ShutDown:``)
keeps working with a RingBuffer.
"""

from __future__ import annotations

import queue
import sys

__all__ = ["Closed", "ConfigError", "Empty", "Full", "LogpipeError", "SinkError", "SourceError"]


class LogpipeError(Exception):
    """Base class of every logpipe error."""


class Full(LogpipeError, queue.Full):
    """A put could not take the record: the ring is full (records or bytes)."""


class Empty(LogpipeError, queue.Empty):
    """A get found nothing to take before its timeout (or its stop signal)."""


# queue.ShutDown (3.13+) is what queue.Queue raises after shutdown(); Closed
# means the same, so from 3.13 on it is one too.
_SHUTDOWN_BASES: tuple[type[Exception], ...] = (queue.ShutDown,) if sys.version_info >= (3, 13) else ()


class Closed(LogpipeError, *_SHUTDOWN_BASES):
    """The ring is closed (close() or shutdown()): puts are refused, and gets
    have drained it (or found it emptied by shutdown(immediate=True)).

    On Python 3.13+ it is also a ``queue.ShutDown``, so loops written for a
    shut-down ``queue.Queue`` end the same way on a RingBuffer.
    """


class ConfigError(LogpipeError, ValueError):
    """A configuration value breaks its rule; the message names both."""


class SinkError(LogpipeError):
    """A sink cannot deliver: its target refused a write (broken pipe, disk full...).

    The message names the sink and the reason on one line; the OSError that
    caused it is chained as ``__cause__``.

    Attributes:
        retryable: whether writing the same batch again may succeed (a full
            disk may be freed; a reader that closed its pipe never returns).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SourceError(LogpipeError):
    """A source cannot be opened: its server is unreachable, its stream missing...

    The message names the source and the reason on one line.
    """
