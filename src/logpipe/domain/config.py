"""The pipeline's parameters: defaults, rules, and where values come from.

Each parameter is declared once, as a field of :class:`PipelineConfig` whose
metadata carries its flag, kind, help and range. :data:`OPTIONS` is read off
those fields, and the CLI (argparse flags), the TOML loader (conversion) and
``validate()`` (rules) all work from it, so the three cannot disagree.

Errors are :class:`~logpipe.exceptions.ConfigError` with one line naming the
option, the value and the rule: ``--channel-size: 0 is out of range (must be
>= 1)``, ``config.toml: batch_timeout: 'soon' is not a duration (...)``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal

from logpipe.domain.durations import format_duration, parse_duration
from logpipe.domain.records import field, fields, frozen
from logpipe.exceptions import ConfigError

__all__ = [
    "Kind",
    "OPTIONS",
    "OPTION_BY_NAME",
    "Option",
    "PipelineConfig",
    "build_config",
    "collect_toml_errors",
    "load_toml",
]

Kind = Literal["duration", "int", "float", "str", "bool"]

_KIND_NAMES = {
    "duration": "a duration",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
}


@frozen
class Option:
    """One parameter, as the CLI, the TOML loader and the rules see it.

    Attributes:
        name: the PipelineConfig attribute, e.g. ``"channel_size"``.
        flag: the CLI flag, e.g. ``"--channel-size"``.
        kind: how text becomes a value: duration (float seconds), int,
            float, str or bool (a switch on the command line).
        help: one line for ``--help``.
        default: the value when nothing sets it; None means unset.
        low, high: the allowed range, when there is one.
        low_open, high_open: whether those bounds are excluded.
        unset: what leaving an optional parameter unset means.
        choices: the allowed values of a str option, when they are fixed.
    """

    name: str
    flag: str
    kind: Kind
    help: str
    default: Any
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False
    unset: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def optional(self) -> bool:
        """Whether None (unset) is allowed."""
        return self.unset is not None

    @property
    def key(self) -> str:
        """The flag without dashes, the other spelling a TOML key may use."""
        return self.flag.removeprefix("--")

    @property
    def rule(self) -> str:
        """The range as text, e.g. ``"> 0 and <= 1"``; empty if unbounded."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.show(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.show(self.high)}")
        return " and ".join(parts)

    def show(self, value: Any) -> str:
        """A value as an error message shows it: ``500ms``, ``0``, ``'x'``."""
        if self.kind == "duration" and _is_number(value) and math.isfinite(value):
            return format_duration(value)
        return repr(value)

    def parse(self, text: str, *, label: str | None = None) -> Any:
        """Convert command-line text to this option's value.

        Ranges are not checked here; PipelineConfig checks them, naming the
        flag. Note for argparse: a ``type=`` callable's ValueError message is
        replaced by argparse's own, so re-raise this one as
        ``argparse.ArgumentTypeError(str(exc))`` to keep it.

        Raises:
            ConfigError: naming ``label`` (default: the flag) and the text.
        """
        label = label or self.flag
        if self.kind == "duration":
            return parse_duration(text, name=label)
        if self.kind == "str":
            return text
        if self.kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return lowered in ("true", "yes", "on", "1")
            raise ConfigError(f"{label}: {text!r} is not true or false")
        try:
            value = int(text) if self.kind == "int" else float(text)
        except ValueError:
            raise ConfigError(f"{label}: {text!r} is not {_KIND_NAMES[self.kind]}") from None
        return value if self.kind == "int" else self._finite(value, label, "a number")

    def convert(self, value: Any, *, label: str) -> Any:
        """Convert a TOML (or Python) value to this option's type.

        Durations may be strings (``"500ms"``) or numbers of seconds. Ints
        stay ints; floats accept ints. Nothing else is coerced: a quoted
        number where a number belongs is a mistake worth reporting.

        Raises:
            ConfigError: ``{label}: {value} is not {kind} ...``.
        """
        if self.kind == "duration":
            if isinstance(value, str):
                return parse_duration(value, name=label)
            if _is_number(value):
                return self._finite(float(value), label, "a number of seconds")
        elif self.kind == "float":
            if _is_number(value):
                return self._finite(float(value), label, "a number")
        elif self.kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif isinstance(value, str if self.kind == "str" else bool):
            return value
        wanted = _KIND_NAMES[self.kind]
        if self.kind == "duration":
            wanted += " (e.g. \"500ms\") or a number of seconds"
        raise ConfigError(f"{label}: {value!r} has the wrong type (must be {wanted})")

    @staticmethod
    def _finite(value: float, label: str, wanted: str) -> float:
        # TOML has inf and nan; neither is a usable interval or threshold.
        if math.isfinite(value):
            return value
        raise ConfigError(f"{label}: {value!r} is not {wanted} (must be finite)")

    def check(self, value: Any) -> str | None:
        """Why ``value`` breaks this option's range, or None if it does not.

        The value must already have the right type (see :meth:`convert`).
        """
        if self.choices is not None and isinstance(value, str) and value not in self.choices:
            return f"is not one of {', '.join(self.choices)}"
        if not _is_number(value):  # None (unset), strings and switches have no range
            return None
        too_low = self.low is not None and (
            value <= self.low if self.low_open else value < self.low
        )
        too_high = self.high is not None and (
            value >= self.high if self.high_open else value > self.high
        )
        if not (too_low or too_high):
            return None
        unset = f"; leave it unset to {self.unset}" if self.optional else ""
        return f"is out of range (must be {self.rule}{unset})"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _opt(
    default: Any,
    kind: Kind,
    help: str,
    **rule: Any,
) -> Any:
    """A field carrying its Option metadata (name and flag added later)."""
    return field(default=default, metadata={"option": dict(kind=kind, help=help, **rule)})


_MiB = 1024 * 1024


@frozen
class PipelineConfig:
    """Every parameter of the pipeline, validated when constructed.

    Durations are float seconds. Use :func:`build_config` to combine
    defaults, a TOML file and command-line values, and
    ``logpipe.domain.records.replace(config, ...)`` for a changed copy
    (validated too).

    Raises:
        ConfigError: on construction, for the first value that breaks a rule.
    """

    rate: float = _opt(
        100e-6, "duration", "interval between generated logs; 0 = as fast as possible", low=0
    )
    channel_size: int = _opt(1500, "int", "queue capacity, in records", low=1)
    batch_size: int = _opt(50, "int", "most records a worker writes per flush", low=1)
    batch_timeout: float = _opt(
        0.5, "duration", "longest a worker holds a partial batch", low=0, low_open=True
    )
    min_workers: int = _opt(1, "int", "fewest workers the autoscaler keeps", low=1)
    max_workers: int = _opt(10, "int", "most workers the autoscaler runs", low=1)
    scale_interval: float = _opt(
        1.0, "duration", "how often the autoscaler looks at the queue", low=0, low_open=True
    )
    scale_up: float = _opt(
        0.8, "float", "queue usage above which a worker is added", low=0, low_open=True, high=1
    )
    scale_down: float = _opt(
        0.2,
        "float",
        "queue usage below which a worker is removed",
        low=0,
        low_open=True,
        high=1,
        high_open=True,
    )
    scale_down_window: int = _opt(
        3,
        "int",
        "scale-down stabilization: scale intervals in a row that must call for one worker fewer before one goes (1 = at once)",
        low=1,
    )
    io_latency: float = _opt(
        0.0, "duration", "artificial delay per flush, to show backpressure", low=0
    )
    duration: float | None = _opt(
        None, "duration", "stop after this long", low=0, low_open=True, unset="run until a signal"
    )
    load_duration: float | None = _opt(
        None,
        "duration",
        "generator: produce for this long, then idle until the run ends (watch the pool scale down)",
        low=0,
        low_open=True,
        unset="produce until the run ends",
    )
    count: int | None = _opt(
        None, "int", "stop after producing this many records", low=1, unset="produce without limit"
    )
    source: str = _opt("generator", "str", "where records come from")
    sink: str = _opt("null", "str", "where records go: null, stdout, file:PATH, nats://HOST:PORT/SUBJECT")
    metrics_interval: float = _opt(
        1.0, "duration", "how often the metrics line is printed", low=0, low_open=True
    )
    max_record_size: int = _opt(
        _MiB, "int", "largest record accepted, in bytes", low=1, high=2**31 - 1
    )
    verbose: bool = _opt(False, "bool", "print every flush, not only the final ones")
    ui: bool = _opt(
        False, "bool", "live terminal view instead of the [METRICS] line (plain lines when not a terminal)"
    )
    message: str = _opt("hello from producer", "str", "the msg field of generated logs")
    level: str = _opt("INFO", "str", "the level field of generated logs")
    # -- real inputs and outputs (sources and sinks) ---------------------------
    format: str = _opt(
        "raw", "str", "raw: any line is a record; json: lines must be JSON", choices=("raw", "json")
    )
    state_dir: str | None = _opt(
        None, "str", "where file sources keep checkpoints", unset="keep no checkpoints"
    )
    dead_letter: str | None = _opt(
        None,
        "str",
        "file for rejected lines, with the reason",
        unset="use STATE_DIR/dead-letter.ndjson, or ./logpipe-dead-letter.ndjson",
    )
    once: bool = _opt(False, "bool", "file sources: read to the end once, then stop")
    max_connections: int = _opt(256, "int", "tcp source: most clients at once", low=1)
    rotate_bytes: int | None = _opt(
        None, "int", "file sink: rotate after this many bytes", low=1, unset="never rotate"
    )
    rotate_keep: int = _opt(5, "int", "file sink: rotated files kept", low=1)
    nats_stream: str | None = _opt(
        None, "str", "nats sink: create this JetStream stream if missing", unset="use an existing stream"
    )
    nats_mode: str | None = _opt(
        None,
        "str",
        "nats sink: record (a message per record) or batch (a message per worker batch)",
        choices=("record", "batch"),
        unset="use the spec's ?mode=, else record",
    )
    # -- observing a run ------------------------------------------------------
    metrics_addr: str | None = _opt(
        None,
        "str",
        "serve Prometheus /metrics and /health on HOST:PORT (:PORT means 127.0.0.1; port 0 picks one)",
        unset="serve no endpoint",
    )
    health_threshold: float = _opt(
        30.0, "duration", "/health fails once the sink has been failing this long", low=0, low_open=True
    )
    report_json: str | None = _opt(
        None, "str", "write the final report, with the loss ledger, as JSON to this file", unset="write none"
    )

    def __post_init__(self) -> None:
        # Normalise numbers first (rate=0 -> 0.0) so a config compares and
        # prints the same however it was built; frozen, hence object.__setattr__.
        for option in OPTIONS:
            value = getattr(self, option.name)
            if value is None and option.optional:
                continue
            object.__setattr__(self, option.name, option.convert(value, label=option.flag))
        self.validate()

    def validate(self) -> None:
        """Check every rule; raise ConfigError for the first one broken."""
        values = {option.name: getattr(self, option.name) for option in OPTIONS}
        problems = _problems(values, lambda name: OPTION_BY_NAME[name].flag)
        if problems:
            raise ConfigError(problems[0])

    def to_dict(self) -> dict[str, Any]:
        """Attribute name -> value, in OPTIONS order."""
        return {option.name: getattr(self, option.name) for option in OPTIONS}


OPTIONS: tuple[Option, ...] = tuple(
    Option(
        name=f.name,
        flag="--" + f.name.replace("_", "-"),
        default=f.default,
        **f.metadata["option"],
    )
    for f in fields(PipelineConfig)
)
OPTION_BY_NAME: Mapping[str, Option] = {option.name: option for option in OPTIONS}
# A TOML key may be the attribute (channel_size) or the flag's word (channel-size).
_OPTION_BY_KEY: Mapping[str, Option] = {
    **OPTION_BY_NAME,
    **{option.key: option for option in OPTIONS},
}


def _problems(values: Mapping[str, Any], call: Callable[[str], str]) -> list[str]:
    """Every broken rule in ``values`` (typed already), as one-line messages.

    ``call(name)`` is how a message refers to an option: its flag for the
    command line, its key as written for a config file.
    """
    problems = []
    for name, value in values.items():
        option = OPTION_BY_NAME[name]
        why = option.check(value)
        if why:
            problems.append(f"{call(name)}: {option.show(value)} {why}")
    if problems:  # the cross-option rules assume each value is sane
        return problems
    low, high = values["min_workers"], values["max_workers"]
    if high < low:
        problems.append(
            f"{call('max_workers')}: {high!r} is below {call('min_workers')}, which is {low!r} "
            "(must be max-workers >= min-workers)"
        )
    down, up = values["scale_down"], values["scale_up"]
    if not down < up:
        problems.append(
            f"{call('scale_down')}: {down!r} is not below {call('scale_up')}, which is {up!r} "
            "(must be 0 < scale-down < scale-up <= 1)"
        )
    return problems


def _read_toml(
    path: str | os.PathLike[str], *, across: bool
) -> tuple[dict[str, Any], list[str]]:
    """The file's values by attribute name, and every problem found in it.

    ``across``: also check the rules between options, with defaults for the
    keys the file leaves out. Off for loading, where the command line may
    still fix them (a file's min_workers = 20 with --max-workers 30).
    """
    import tomllib  # only with --config: ~5 ms of every other start-up

    where = os.fspath(path)
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except OSError as exc:
        return {}, [f"{where}: cannot read the file ({exc.strerror or exc})"]
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        detail = " ".join(str(exc).split())  # one line, whatever the parser says
        return {}, [f"{where}: not valid TOML ({detail})"]

    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}  # attribute name -> key as written, for messages
    errors: list[str] = []
    for key, value in raw.items():
        label = f"{where}: {key}"
        option = _OPTION_BY_KEY.get(key)
        if option is None:
            errors.append(f"{label}: unknown key ({_suggest(key)})")
            continue
        if option.name in spelled:
            errors.append(f"{label}: given twice (also as {spelled[option.name]})")
            continue
        spelled[option.name] = key
        try:
            converted = option.convert(value, label=label)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        why = option.check(converted)
        if why:
            errors.append(f"{label}: {option.show(converted)} {why}")
            continue
        values[option.name] = converted

    if across and not errors:
        merged = {option.name: option.default for option in OPTIONS} | values

        def call(name: str) -> str:
            # A file's message names keys as written, and marks defaults as such.
            return spelled.get(name, f"{name} (default)")

        errors.extend(f"{where}: {problem}" for problem in _problems(merged, call))
    return values, errors


def _suggest(key: str) -> str:
    import difflib  # only for errors

    close = difflib.get_close_matches(key, _OPTION_BY_KEY, n=1)
    if close:
        return f"did you mean {close[0]}?"
    return "known keys: " + ", ".join(option.name for option in OPTIONS)


def collect_toml_errors(path: str | os.PathLike[str]) -> list[str]:
    """Every problem in a TOML config file, one line each; [] if it is good.

    Checks what :func:`load_toml` checks, plus the rules across options
    (``max_workers >= min_workers``...) with defaults for keys not in the file.
    """
    return _read_toml(path, across=True)[1]


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML config file into ``{attribute name: value}``.

    Keys are attribute names or flags without dashes (``channel_size`` or
    ``channel-size``); durations are strings (``"500ms"``) or numbers of
    seconds. Only the keys present are returned.

    Raises:
        ConfigError: naming the file and key, for the first problem found
            (with the number of further ones, which
            :func:`collect_toml_errors` lists). Rules between options are
            left to :class:`PipelineConfig`, once the command line is merged.
    """
    values, errors = _read_toml(path, across=False)
    if errors:
        more = f" (and {len(errors) - 1} more problem(s) in this file)" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
    return values


def build_config(
    toml_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PipelineConfig:
    """Merge defaults < TOML file < command-line values into a PipelineConfig.

    Args:
        toml_path: a config file, or None for none.
        overrides: values by attribute name (or flag word), already typed,
            e.g. from argparse. None means "not given" and is skipped, so the
            CLI can pass every flag with None for those the user left out.

    Raises:
        ConfigError: from the file, for an unknown override, or the first
            rule broken by the merged values.
    """
    values = load_toml(toml_path) if toml_path is not None else {}
    for key, value in (overrides or {}).items():
        option = _OPTION_BY_KEY.get(key)
        if option is None:
            raise ConfigError(f"{key}: unknown option ({_suggest(key)})")
        if value is not None:
            values[option.name] = value
    return PipelineConfig(**values)
