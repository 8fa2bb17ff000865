"""The ``nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME`` source's spec: parsing only.

The registry imports this module when a spec names ``nats://`` (it knows
the scheme's usage for ``--help`` and errors without it), and ``--dry-run``
and ``logpipe validate`` parse NATS specs with it. The source itself
(:mod:`logpipe.infrastructure.sources.nats`) imports asyncio and, when
built, nats-py; :meth:`NatsSourceConfig.build` imports it, so a run that
reads nothing from NATS loads neither.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING, ClassVar

from logpipe.domain.durations import parse_duration
from logpipe.domain.records import frozen
from logpipe.exceptions import ConfigError, SourceError

if TYPE_CHECKING:
    from logpipe.infrastructure.sources.context import SourceContext
    from logpipe.infrastructure.sources.nats import NatsSource

__all__ = ["DEFAULT_ACK_WAIT", "DEFAULT_PORT", "NatsSourceConfig"]

DEFAULT_PORT = 4222
DEFAULT_ACK_WAIT = 30.0  # JetStream's own default

_BAD_NAME_CHARS = re.compile(r"[\s\x00-\x1f\x7f.*>/\\]")
_BAD_SUBJECT_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_QUERY_KEYS = ("ack_wait", "durable", "max_ack_pending", "stream")


def _check_subject(subject: str) -> str | None:
    """Why ``subject`` cannot be a consumer's filter, or None."""
    if not subject:
        return "has no SUBJECT"
    if _BAD_SUBJECT_CHARS.search(subject):
        return f"has whitespace or a control character in SUBJECT {subject!r}"
    tokens = subject.split(".")
    for index, token in enumerate(tokens):
        if not token:
            return f"has an empty token in SUBJECT {subject!r} (tokens are separated by single dots)"
        if ("*" in token and token != "*") or (">" in token and token != ">"):
            return f"has a wildcard inside a token of SUBJECT {subject!r} ('*' and '>' stand alone)"
        if token == ">" and index != len(tokens) - 1:
            return f"has '>' before the end of SUBJECT {subject!r}"
    return None


def _check_name(what: str, name: str) -> str | None:
    if not name:
        return f"has an empty {what}="
    if _BAD_NAME_CHARS.search(name):
        return f"has a bad {what} name {name!r} (no spaces, dots, '*', '>', '/' or '\\')"
    return None


@frozen
class NatsSourceConfig:
    """Spec ``nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME``: a JetStream consumer group.

    Optional query parameters: ``ack_wait=DURATION`` and ``max_ack_pending=N``
    (used when the consumer is created). ``stream`` may be left out when a
    stream takes SUBJECT.

    Attributes:
        host, port: the server (port 4222 by default).
        subject: the consumer's filter subject.
        durable: the consumer group's name.
        stream: the stream, or None to find it by subject.
        ack_wait: seconds.
        max_ack_pending: None: the ring's capacity.
    """

    scheme: ClassVar[str] = "nats"
    usage: ClassVar[str] = "nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME"
    takes_target: ClassVar[bool] = True

    host: str
    port: int
    subject: str
    durable: str
    stream: str | None = None
    ack_wait: float = DEFAULT_ACK_WAIT
    max_ack_pending: int | None = None

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> NatsSourceConfig:
        """The config for ``nats://<target>``; ValueError(reason) if malformed."""
        if not target:
            raise ValueError("has no HOST:PORT/SUBJECT")
        location, _, query = target.partition("?")
        hostport, slash, subject = location.partition("/")
        host, port = _split_hostport(hostport)
        why = _check_subject(subject) if slash else "has no SUBJECT"
        if why:
            raise ValueError(why)
        params: dict[str, str] = {}
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key not in _QUERY_KEYS:
                raise ValueError(f"has an unknown parameter {key!r} (known: {', '.join(_QUERY_KEYS)})")
            if key in params:
                raise ValueError(f"has {key}= twice")
            params[key] = value
        if "durable" not in params:
            raise ValueError("has no durable=NAME (the name the consumer group shares)")
        for what in ("durable", "stream"):
            if what in params:
                why = _check_name(what, params[what])
                if why:
                    raise ValueError(why)
        ack_wait = DEFAULT_ACK_WAIT
        if "ack_wait" in params:
            try:
                ack_wait = parse_duration(params["ack_wait"], name="ack_wait")
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            if ack_wait <= 0:
                raise ValueError("has ack_wait=0 (it must be positive, e.g. 30s)")
        max_ack_pending = None
        if "max_ack_pending" in params:
            text = params["max_ack_pending"]
            if not (text.isascii() and text.isdigit()) or int(text) < 1:
                raise ValueError(f"has a bad max_ack_pending {text!r} (a whole number, at least 1)")
            max_ack_pending = int(text)
        return cls(
            host=host,
            port=port,
            subject=subject,
            durable=params["durable"],
            stream=params.get("stream"),
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
        )

    def build(self, context: SourceContext) -> NatsSource:
        """Connect, set up the consumer, and return the source.

        Raises:
            SourceError: one line: nats-py missing, server unreachable, no
                JetStream, no stream, a consumer that does not fit, or
                ``max_ack_pending`` above ``--channel-size``.
        """
        from logpipe.infrastructure.sources.nats import NatsSource  # noqa: PLC0415 - asyncio: only when used

        try:
            return NatsSource(
                self.host,
                self.port,
                self.subject,
                self.durable,
                context=context,
                stream=self.stream,
                ack_wait=self.ack_wait,
                max_ack_pending=self.max_ack_pending,
            )
        except ValueError as exc:
            raise SourceError(str(exc)) from None


def _split_hostport(hostport: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` -> (host, port); ValueError(reason)."""
    if not hostport:
        raise ValueError("has no HOST")
    if "@" in hostport:
        raise ValueError("has credentials, which are not supported (use HOST:PORT)")
    try:
        parts = urllib.parse.urlsplit(f"//{hostport}")
        port = parts.port
    except ValueError:
        raise ValueError(f"has a bad HOST:PORT {hostport!r} (the port must be 1-65535)") from None
    host = parts.hostname
    if not host or _BAD_SUBJECT_CHARS.search(host):
        raise ValueError(f"has a bad HOST in {hostport!r}")
    if port == 0:
        raise ValueError(f"has a bad HOST:PORT {hostport!r} (the port must be 1-65535)")
    return host, port if port is not None else DEFAULT_PORT
