"""LogRecord -> one JSON line, for logpipe.logging's handler.

Pure functions, no I/O: the handler calls :func:`render` in the thread that
logs, so it is written for the common case (no extra fields, a str message,
no exception) to cost one dict, one ``orjson.dumps`` and nothing else.

The line::

    {"ts": 1712345678123456, "level": "INFO", "logger": "app.db",
     "msg": "connected to db1", "thread": "MainThread",
     "exc": "Traceback (most recent call last): ...",      # only with exc_info
     "stack": "Stack (most recent call last): ...",        # only with stack_info
     "extra": {"user": 42, "request_id": "5f1c"}}          # only with extra fields

``ts`` is Unix time in microseconds, as in every logpipe record. ``extra``
holds every attribute of the record that the logging module did not put
there itself (what ``logger.info(..., extra={...})`` and structlog's
``render_to_log_kwargs`` add); nested under its own key, so that an extra
called ``level`` or ``ts`` cannot overwrite or be lost behind the fixed
fields.

Anything orjson cannot take is made to fit rather than lost: values of
unknown types become ``str(value)``; text with lone surrogates (from
``surrogateescape`` decoding, say) keeps them as ``\\udcff`` escapes in
valid UTF-8; integers beyond 64 bits and non-str keys become strings.
"""

from __future__ import annotations

import logging
import traceback

import orjson

__all__ = ["STANDARD_ATTRIBUTES", "exception_text", "extra_fields", "render"]

# The attributes every LogRecord has on this Python (a fresh record's, plus
# what Formatter.format adds and taskName, new in 3.12): the rest are extras.
STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
# A record with no more attributes than a fresh one has no extras (cheap test).
_BASE_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
_MAX_DEPTH = 32  # nesting kept when an unencodable value is cleaned up
_dumps = orjson.dumps


def render(record: logging.LogRecord, msg: str | None = None) -> bytes:
    """The JSON line of ``record`` (without its newline).

    Args:
        record: the record.
        msg: its message as a Formatter made it, which then holds the
            exception and stack text too (no ``exc``, no ``stack``); None
            for ``record.getMessage()``, ``exc`` and ``stack``.
    """
    # Written for speed: this runs in the caller's thread for every record.
    from_formatter = msg is not None
    if msg is None:
        text = record.msg
        if type(text) is str:
            args = record.args
            msg = text % args if args else text  # what getMessage does, one call fewer
        else:
            msg = record.getMessage()
    entry = {
        "ts": int(record.created * 1_000_000),
        "level": record.levelname,
        "logger": record.name,
        "msg": msg,
        "thread": record.threadName,
    }
    if not from_formatter:  # a Formatter's msg holds these already
        if record.exc_info or record.exc_text:
            entry["exc"] = exception_text(record)
        if record.stack_info:
            entry["stack"] = record.stack_info
    fields = record.__dict__
    if len(fields) > _BASE_SIZE:
        extra = extra_fields(fields)
        if extra:
            entry["extra"] = extra
    try:
        return _dumps(entry)
    except TypeError:  # orjson.JSONEncodeError: a type it does not know, surrogates, huge ints...
        pass
    try:
        return _dumps(entry, default=_as_text)
    except TypeError:
        return _dumps(_clean(entry, 0))


def extra_fields(fields: dict[str, object]) -> dict[str, object]:
    """The attributes of a record's ``__dict__`` that logging did not set, in order."""
    if not fields.keys() - STANDARD_ATTRIBUTES:
        return {}
    return {key: value for key, value in fields.items() if key not in STANDARD_ATTRIBUTES}


def exception_text(record: logging.LogRecord) -> str:
    """The traceback of ``record.exc_info``, cached in ``record.exc_text`` as Formatter does."""
    if not record.exc_text and record.exc_info:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    return record.exc_text or ""


def _as_text(value: object) -> str:
    """orjson's fallback for a type it does not know: the value's str()."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<unprintable {type(value).__name__}>"


def _clean(value: object, depth: int) -> object:
    """``value`` with everything orjson refuses replaced by text that says what it was."""
    if isinstance(value, str):
        # Lone surrogates cannot be encoded as UTF-8: keep them as \\udcxx.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth >= _MAX_DEPTH:
        return _clean(_as_text(value), depth)
    if isinstance(value, dict):
        return {
            _clean(key if isinstance(key, str) else _as_text(key), depth): _clean(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_clean(item, depth + 1) for item in value]
    try:
        orjson.dumps(value)
        return value  # a type orjson takes as it is (datetime, UUID, dataclass...)
    except TypeError:
        return _clean(_as_text(value), depth)
