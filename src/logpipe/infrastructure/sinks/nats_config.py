"""The ``nats://HOST:PORT/SUBJECT`` sink's spec: :class:`NatsSinkConfig`, parsing only.

The registry imports this module when a spec names ``nats://`` (it knows
the scheme's usage for ``--help`` and errors without it), and ``--dry-run``
and ``logpipe validate`` parse NATS specs with it. The sink itself
(:mod:`logpipe.infrastructure.sinks.nats`) imports asyncio and, when built,
nats-py; :meth:`NatsSinkConfig.build` imports it, so a run that publishes
nothing to NATS loads neither.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from logpipe.domain.records import frozen
from logpipe.exceptions import SinkError

if TYPE_CHECKING:
    from logpipe.domain.config import PipelineConfig
    from logpipe.infrastructure.sinks.nats import NatsSink

__all__ = ["DEFAULT_PORT", "MODES", "NatsSinkConfig", "check_subject"]

DEFAULT_PORT = 4222
MODES = ("record", "batch")

_BAD_SUBJECT_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


def check_subject(subject: str) -> str | None:
    """Why ``subject`` cannot be published to, or None if it can.

    A subject is dot-separated tokens, none empty, without whitespace or
    control characters, and without the wildcards ``*`` and ``>`` (which
    only subscriptions may use).
    """
    if not subject:
        return "has no SUBJECT"
    if _BAD_SUBJECT_CHARS.search(subject):
        return f"has whitespace or a control character in SUBJECT {subject!r}"
    for token in subject.split("."):
        if not token:
            return f"has an empty token in SUBJECT {subject!r} (tokens are separated by single dots)"
        if "*" in token or ">" in token:
            return f"has a wildcard in SUBJECT {subject!r} (a publish needs a concrete subject)"
    return None


@frozen
class NatsSinkConfig:
    """Builds a :class:`NatsSink`; spec ``nats://HOST:PORT/SUBJECT[?mode=record|batch]`` (port 4222 by default).

    Attributes:
        host: the server's host name or address.
        port: its client port.
        subject: where records are published.
        stream: a JetStream stream to create if missing (``--nats-stream``).
        mode: ``record`` (a message per record) or ``batch`` (a message per
            batch), from ``?mode=`` or ``--nats-mode``.
    """

    scheme: ClassVar[str] = "nats"
    usage: ClassVar[str] = "nats://HOST:PORT/SUBJECT"
    takes_target: ClassVar[bool] = True

    host: str
    port: int = DEFAULT_PORT
    subject: str = ""
    stream: str | None = None
    mode: str = "record"

    @classmethod
    def from_target(cls, target: str | None, settings: PipelineConfig | None = None) -> NatsSinkConfig:
        """The config for ``nats://<target>``; ValueError(reason) if malformed.

        Args:
            target: ``HOST[:PORT]/SUBJECT[?mode=MODE]`` (the registry has removed ``//``).
            settings: the run's PipelineConfig (its ``nats_stream`` and
                ``nats_mode`` are taken), or None.
        """
        if not target:
            raise ValueError("has no HOST:PORT/SUBJECT")
        target, question, query = target.partition("?")
        hostport, slash, subject = target.partition("/")
        if "@" in hostport:
            raise ValueError("has credentials, which are not supported (use HOST:PORT)")
        host, port = _split_hostport(hostport)
        if not slash or not subject:
            raise ValueError("has no SUBJECT")
        why = check_subject(subject)
        if why:
            raise ValueError(why)
        spec_mode = _parse_query(query) if question else None
        flag_mode = settings.nats_mode if settings is not None else None
        if spec_mode is not None and flag_mode is not None and spec_mode != flag_mode:
            raise ValueError(f"says mode={spec_mode} but --nats-mode is {flag_mode} (give one)")
        stream = settings.nats_stream if settings is not None else None
        mode = spec_mode or flag_mode or "record"
        return cls(host=host, port=port, subject=subject, stream=stream, mode=mode)

    def build(self, options: PipelineConfig | None = None) -> NatsSink:
        """Connect, check (or create) the stream, and return the sink.

        Args:
            options: the run's PipelineConfig; when given, its ``nats_stream``
                replaces this config's ``stream``, and its ``nats_mode``, if
                set, this config's ``mode``.

        Raises:
            SinkError: one line: nats-py missing, server unreachable, no JetStream,
                or no stream for the subject.
        """
        stream = options.nats_stream if options is not None else self.stream
        mode = self.mode
        if options is not None and options.nats_mode is not None:
            mode = options.nats_mode
        from logpipe.infrastructure.sinks.nats import NatsSink  # noqa: PLC0415 - asyncio: only when used

        try:
            return NatsSink(self.host, self.port, self.subject, stream=stream, mode=mode)
        except ValueError as exc:
            raise SinkError(str(exc), retryable=False) from None


def _parse_query(query: str) -> str:
    """``mode=batch`` -> ``"batch"``; ValueError(reason) for anything else."""
    if not query:
        raise ValueError("has an empty query after '?' (use ?mode=record or ?mode=batch)")
    mode = None
    for item in query.split("&"):
        key, equals, value = item.partition("=")
        if key != "mode" or not equals:
            raise ValueError(f"has an unknown option {item!r} after '?' (known: mode=record, mode=batch)")
        if mode is not None:
            raise ValueError("gives mode twice")
        if value not in MODES:
            raise ValueError(f"has mode={value!r}, which is not one of {', '.join(MODES)}")
        mode = value
    assert mode is not None
    return mode


def _split_hostport(hostport: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` -> (host, port); ValueError(reason)."""
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or not host:
            raise ValueError(f"has a malformed HOST {hostport!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"has a malformed HOST:PORT {hostport!r}")
        port_text = rest[1:] if rest else ""
    else:
        host, colon, port_text = hostport.partition(":")
        if colon and not port_text:
            raise ValueError(f"has an empty PORT in {hostport!r}")
        if ":" in port_text:
            raise ValueError(f"has a malformed HOST:PORT {hostport!r} (write an IPv6 address as [ADDR]:PORT)")
    if not host:
        raise ValueError("has no HOST")
    if _BAD_SUBJECT_CHARS.search(host):
        raise ValueError(f"has whitespace in HOST {host!r}")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"has a bad PORT {port_text!r} (must be 1-65535)")
    return host, int(port_text)
