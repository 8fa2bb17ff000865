"""Go-style durations: ``"100us"``, ``"1.5ms"``, ``"1m30s"``, ``"0"``.

The specification is written in Go terms (ProducerRate = 100µs), so flags and
config files take the same spelling Go's ``time.ParseDuration`` does. Values
become float seconds, the unit ``time.monotonic()`` and ``time.sleep()`` use.
"""

from __future__ import annotations

import math
import re

from logpipe.exceptions import ConfigError

__all__ = ["format_duration", "parse_duration"]

# Nanoseconds per unit. Go accepts both micro signs (U+00B5 and U+03BC).
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
# Longest units first so "ms" is not read as "m" followed by junk. The
# patterns are compiled (by the re module, which keeps them) when a
# duration other than 0 is first parsed: ~0.7 ms of start-up otherwise.
_UNITS = "|".join(sorted(map(re.escape, _UNIT_NS), key=len, reverse=True))
_PART = rf"(\d+\.?\d*|\.\d+)({_UNITS})"
_WHOLE = rf"([+-]?)((?:(?:\d+\.?\d*|\.\d+)(?:{_UNITS}))+)"
_BARE_NUMBER = r"[+-]?(\d+\.?\d*|\.\d+)"

_RULE = "use a number with a unit: ns, us/µs, ms, s, m, h; e.g. 100us, 500ms, 1s"


def parse_duration(text: str, *, name: str) -> float:
    """Parse a Go-style duration into seconds.

    Args:
        text: e.g. ``"0"``, ``"250ns"``, ``"100us"``, ``"100µs"``, ``"1.5ms"``,
            ``"1m30s"``, ``"2h"``. Every number needs a unit, except a lone
            ``"0"`` (Go's rule: a bare ``"5"`` is ambiguous, so it is refused).
        name: how the caller names the value in errors, e.g. ``"--rate"``.

    Returns:
        The duration in seconds, never negative.

    Raises:
        ConfigError: one line naming ``name``, the value and the rule.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{name}: {text!r} is not a duration ({_RULE})")
    stripped = text.strip()
    if stripped in ("0", "+0", "-0"):
        return 0.0
    whole = re.fullmatch(_WHOLE, stripped)
    if whole is None:
        hint = "missing unit; " if re.fullmatch(_BARE_NUMBER, stripped) else ""
        raise ConfigError(f"{name}: {text!r} is not a duration ({hint}{_RULE})")
    sign, body = whole.groups()
    # Decimal keeps "0.1s" exact until the one final rounding to float.
    from decimal import Decimal  # only for a duration other than 0: ~1.5 ms of start-up

    total_ns = sum(
        (Decimal(number) * _UNIT_NS[unit] for number, unit in re.findall(_PART, body)),
        Decimal(0),
    )
    if sign == "-" and total_ns:
        raise ConfigError(f"{name}: {text!r} is negative (durations must be >= 0)")
    seconds = float(total_ns / 1_000_000_000)
    if not math.isfinite(seconds):
        raise ConfigError(f"{name}: {text!r} is too large to be a duration")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a duration, in its short form.

    ``1e-4 -> "100µs"``, ``0.5 -> "500ms"``, ``1.0 -> "1s"``,
    ``90 -> "1m30s"``, ``0 -> "0s"``. Precision is one nanosecond, and the
    result parses back with :func:`parse_duration` to the same value.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if seconds < 0:
        return "-" + format_duration(-seconds)
    ns = round(seconds * 1_000_000_000)
    if ns == 0:
        return "0s"
    for unit, size in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
        if ns < size * 1_000:
            return _with_fraction(ns, size) + unit
    hours, rest = divmod(ns, _UNIT_NS["h"])
    minutes, rest = divmod(rest, _UNIT_NS["m"])
    # Go would print "2h0m0s"; zero parts are dropped to keep the form short.
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    parts.append(_with_fraction(rest, _UNIT_NS["s"]) + "s" if rest else "")
    return "".join(parts)


def _with_fraction(ns: int, unit_ns: int) -> str:
    """``ns`` in units of ``unit_ns``, exact, without trailing zeros."""
    whole, frac = divmod(ns, unit_ns)
    if not frac:
        return str(whole)
    digits = len(str(unit_ns)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
