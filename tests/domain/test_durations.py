"""Tests for logpipe.domain.durations: Go-style duration text <-> seconds."""

from __future__ import annotations

import pytest

from logpipe.domain.durations import format_duration, parse_duration
from logpipe.exceptions import ConfigError

RULE = "use a number with a unit: ns, us/µs, ms, s, m, h; e.g. 100us, 500ms, 1s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("250ns", 250e-9),
        ("100us", 100e-6),
        ("100\u00b5s", 100e-6),  # micro sign
        ("100\u03bcs", 100e-6),  # Greek mu, which Go accepts too
        ("1.5ms", 0.0015),
        ("500ms", 0.5),
        ("1s", 1.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1h2m3.5s", 3723.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("+1s", 1.0),
        ("-0", 0.0),
        (" 1s ", 1.0),
    ],
)
def test_parse_valid(text: str, seconds: float) -> None:
    """Go's duration spellings parse to the exact float number of seconds."""
    assert parse_duration(text, name="--rate") == seconds


def test_parse_unparsable_names_option_value_and_rule() -> None:
    """An unparsable duration gives one line naming the option, the value and the rule."""
    with pytest.raises(ConfigError) as info:
        parse_duration("10 parsecs", name="--rate")
    assert str(info.value) == f"--rate: '10 parsecs' is not a duration ({RULE})"


@pytest.mark.parametrize("text", ["5", "1.5", "-3"])
def test_parse_bare_number_is_rejected(text: str) -> None:
    """A bare number other than 0 is refused, as in Go, with a hint about the unit."""
    with pytest.raises(ConfigError, match="missing unit") as info:
        parse_duration(text, name="--batch-timeout")
    assert str(info.value).startswith(f"--batch-timeout: {text!r} is not a duration")


@pytest.mark.parametrize("text", ["", "ms", "1.2.3s", "1 s", "1sm", "s1", "1e3s", "1d", "..s"])
def test_parse_malformed_is_rejected(text: str) -> None:
    """Empty, unit-only, doubled dots, inner spaces, exponents and unknown units are errors."""
    with pytest.raises(ConfigError) as info:
        parse_duration(text, name="--rate")
    message = str(info.value)
    assert message.startswith(f"--rate: {text!r} is not a duration")
    assert "\n" not in message


@pytest.mark.parametrize("text", ["-1s", "-100us", "-1m30s"])
def test_parse_negative_is_rejected(text: str) -> None:
    """Negative durations are refused, naming the option and the value."""
    with pytest.raises(ConfigError, match="is negative") as info:
        parse_duration(text, name="--io-latency")
    assert str(info.value).startswith(f"--io-latency: {text!r}")


def test_parse_error_is_a_value_error() -> None:
    """ConfigError is a ValueError, so generic callers can catch it as one."""
    with pytest.raises(ValueError):
        parse_duration("soon", name="--rate")


def test_parse_non_string_is_rejected() -> None:
    """A non-string input is an error naming the option, not a TypeError."""
    with pytest.raises(ConfigError, match=r"^--rate: 5 is not a duration"):
        parse_duration(5, name="--rate")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1e-9, "1ns"),
        (250e-9, "250ns"),
        (100e-6, "100µs"),
        (1.5e-6, "1.5µs"),
        (0.0015, "1.5ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (1.25, "1.25s"),
        (60, "1m"),
        (90, "1m30s"),
        (7200, "2h"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_format_short_form(seconds: float, text: str) -> None:
    """Seconds format in Go's short style with the largest fitting unit."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "seconds", [0.0, 1e-9, 2.5e-7, 1e-4, 0.0015, 0.1, 0.5, 1.0, 59.999, 90.0, 7200.5, 3661.0]
)
def test_format_round_trips(seconds: float) -> None:
    """Whatever format_duration prints, parse_duration reads back as the same value."""
    assert parse_duration(format_duration(seconds), name="x") == seconds


def test_format_rejects_non_finite() -> None:
    """NaN and infinity have no duration form."""
    with pytest.raises(ValueError):
        format_duration(float("inf"))
