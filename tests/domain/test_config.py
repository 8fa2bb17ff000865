"""Tests for logpipe.domain.config: PipelineConfig, OPTIONS, TOML files and merging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from logpipe.domain import records
from logpipe.domain.config import (
    OPTION_BY_NAME,
    OPTIONS,
    PipelineConfig,
    build_config,
    collect_toml_errors,
    load_toml,
)
from logpipe.exceptions import ConfigError


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line(message: str, *parts: str) -> None:
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# --- defaults and the OPTIONS table ---------------------------------------------


def test_defaults_are_the_specification() -> None:
    """Defaults are the spec's and the issue's: 100us, 1500, 50, 500ms, 1..10, 1s, 0.8/0.2..."""
    config = PipelineConfig()
    assert config.to_dict() == {
        "rate": 100e-6,
        "channel_size": 1500,
        "batch_size": 50,
        "batch_timeout": 0.5,
        "min_workers": 1,
        "max_workers": 10,
        "scale_interval": 1.0,
        "scale_up": 0.8,
        "scale_down": 0.2,
        "scale_down_window": 3,
        "io_latency": 0.0,
        "duration": None,
        "load_duration": None,
        "count": None,
        "source": "generator",
        "sink": "null",
        "metrics_interval": 1.0,
        "max_record_size": 1024 * 1024,
        "verbose": False,
        "ui": False,
        "message": "hello from producer",
        "level": "INFO",
        "format": "raw",
        "state_dir": None,
        "dead_letter": None,
        "once": False,
        "max_connections": 256,
        "rotate_bytes": None,
        "rotate_keep": 5,
        "nats_stream": None,
        "nats_mode": None,
        "metrics_addr": None,
        "health_threshold": 30.0,
        "report_json": None,
    }


def test_a_choice_outside_its_list_is_one_line_naming_the_flag() -> None:
    """--format accepts raw and json only; anything else names the flag, value and choices."""
    with pytest.raises(ConfigError) as caught:
        PipelineConfig(format="xml")
    assert str(caught.value) == "--format: 'xml' is not one of raw, json"


def test_options_describe_every_field_once() -> None:
    """OPTIONS has one entry per PipelineConfig field, in order, with its default."""
    fields = records.fields(PipelineConfig)
    assert [option.name for option in OPTIONS] == [f.name for f in fields]
    assert [option.default for option in OPTIONS] == [f.default for f in fields]
    assert set(OPTION_BY_NAME) == {f.name for f in fields}


def test_option_flags_follow_the_names() -> None:
    """Each flag is the attribute with dashes (--channel-size), and flags are unique."""
    for option in OPTIONS:
        assert option.flag == "--" + option.name.replace("_", "-")
        assert option.key == option.flag[2:]
        assert option.help and "\n" not in option.help
    assert len({option.flag for option in OPTIONS}) == len(OPTIONS)


def test_option_kinds() -> None:
    """Intervals are durations, counts ints, thresholds floats, names strings, verbose a switch."""
    kinds = {option.name: option.kind for option in OPTIONS}
    durations = ("rate", "batch_timeout", "scale_interval", "io_latency", "duration")
    for name in (*durations, "metrics_interval"):
        assert kinds[name] == "duration"
    counts = ("channel_size", "batch_size", "min_workers", "max_workers", "count")
    for name in (*counts, "max_record_size"):
        assert kinds[name] == "int"
    assert kinds["scale_up"] == kinds["scale_down"] == "float"
    assert kinds["verbose"] == "bool"
    assert kinds["sink"] == kinds["source"] == kinds["message"] == kinds["level"] == "str"


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("rate", "100us", 100e-6),
        ("rate", "0", 0.0),
        ("batch_timeout", "500ms", 0.5),
        ("channel_size", "3000", 3000),
        ("scale_up", "0.9", 0.9),
        ("verbose", "yes", True),
        ("sink", "file:/tmp/x", "file:/tmp/x"),
    ],
)
def test_option_parse_command_line_text(name: str, text: str, value: Any) -> None:
    """Option.parse turns flag text into the option's type."""
    assert OPTION_BY_NAME[name].parse(text) == value


@pytest.mark.parametrize(
    ("name", "text", "wanted"),
    [
        ("rate", "10 parsecs", "is not a duration"),
        ("channel_size", "1.5", "is not an integer"),
        ("scale_up", "high", "is not a number"),
        ("scale_up", "nan", "must be finite"),
        ("verbose", "maybe", "is not true or false"),
    ],
)
def test_option_parse_errors_name_the_flag(name: str, text: str, wanted: str) -> None:
    """Bad flag text is one line naming the flag, the text and what was expected."""
    option = OPTION_BY_NAME[name]
    with pytest.raises(ConfigError) as info:
        option.parse(text)
    assert str(info.value).startswith(f"{option.flag}: ")
    assert_one_line(str(info.value), repr(text) if wanted != "must be finite" else "nan", wanted)


# --- rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "flag", "shown", "rule"),
    [
        ({"channel_size": 0}, "--channel-size", "0", ">= 1"),
        ({"batch_size": 0}, "--batch-size", "0", ">= 1"),
        ({"batch_size": -5}, "--batch-size", "-5", ">= 1"),
        ({"min_workers": 0}, "--min-workers", "0", ">= 1"),
        ({"max_workers": 0}, "--max-workers", "0", ">= 1"),
        ({"min_workers": 5, "max_workers": 4}, "--max-workers", "4", ">= min-workers"),
        ({"scale_down": 0.0}, "--scale-down", "0.0", "> 0"),
        ({"scale_down": 1.0}, "--scale-down", "1.0", "< 1"),
        ({"scale_up": 0.0}, "--scale-up", "0.0", "> 0"),
        ({"scale_up": 1.01}, "--scale-up", "1.01", "<= 1"),
        ({"scale_up": 0.1}, "--scale-down", "0.2", "scale-down < scale-up"),
        ({"scale_up": 0.5, "scale_down": 0.5}, "--scale-down", "0.5", "scale-down < scale-up"),
        ({"scale_interval": 0.0}, "--scale-interval", "0s", "> 0"),
        ({"batch_timeout": 0}, "--batch-timeout", "0s", "> 0"),
        ({"metrics_interval": 0}, "--metrics-interval", "0s", "> 0"),
        ({"rate": -0.001}, "--rate", "-1ms", ">= 0"),
        ({"io_latency": -0.5}, "--io-latency", "-500ms", ">= 0"),
        ({"count": 0}, "--count", "0", ">= 1"),
        ({"duration": 0}, "--duration", "0s", "> 0"),
        ({"max_record_size": 0}, "--max-record-size", "0", ">= 1"),
    ],
)
def test_every_rule_names_flag_value_and_rule(
    changes: dict[str, Any], flag: str, shown: str, rule: str
) -> None:
    """Each broken rule raises one line starting with the flag, then the value, then the rule."""
    with pytest.raises(ConfigError) as info:
        PipelineConfig(**changes)
    message = str(info.value)
    assert message.startswith(f"{flag}: {shown} ")
    assert_one_line(message, rule)


def test_scale_rule_names_both_thresholds() -> None:
    """scale-down >= scale-up names both flags and both values."""
    with pytest.raises(ConfigError) as info:
        PipelineConfig(scale_up=0.3, scale_down=0.4)
    assert_one_line(str(info.value), "--scale-down: 0.4", "--scale-up, which is 0.3")


def test_optional_rule_says_what_unset_means() -> None:
    """A bad --duration or --count says it can be left unset instead."""
    with pytest.raises(ConfigError, match="leave it unset to run until a signal"):
        PipelineConfig(duration=0.0)
    with pytest.raises(ConfigError, match="leave it unset to produce without limit"):
        PipelineConfig(count=0)


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({"channel_size": "1500"}, "--channel-size"),
        ({"channel_size": True}, "--channel-size"),
        ({"batch_size": 2.0}, "--batch-size"),
        ({"verbose": 1}, "--verbose"),
        ({"sink": None}, "--sink"),
        ({"scale_up": "0.8"}, "--scale-up"),
        ({"rate": "fast"}, "--rate"),
    ],
)
def test_wrong_types_are_rejected(changes: dict[str, Any], flag: str) -> None:
    """A value of the wrong type is a ConfigError naming the flag, not a TypeError later."""
    with pytest.raises(ConfigError) as info:
        PipelineConfig(**changes)
    value = next(iter(changes.values()))
    assert_one_line(str(info.value), f"{flag}: ", repr(value))


@pytest.mark.parametrize(
    "changes",
    [
        {"rate": 0},
        {"io_latency": 0},
        {"scale_up": 1, "scale_down": 0.99},
        {"min_workers": 4, "max_workers": 4},
        {"count": 1, "duration": 1e-9},
        {"channel_size": 1, "batch_size": 1},
    ],
)
def test_values_on_the_bounds_are_accepted(changes: dict[str, Any]) -> None:
    """Inclusive bounds are inclusive: rate 0, scale-up 1, min = max, count 1."""
    config = PipelineConfig(**changes)
    for name, value in changes.items():
        assert getattr(config, name) == value


def test_numbers_are_normalised() -> None:
    """Whole numbers given for durations and thresholds become floats."""
    config = PipelineConfig(rate=0, scale_up=1, duration=2)
    assert type(config.rate) is float and config.rate == 0.0
    assert type(config.scale_up) is float
    assert type(config.duration) is float


def test_config_is_frozen_and_replace_validates() -> None:
    """A config cannot be changed in place, and replace() checks the rules again."""
    config = PipelineConfig()
    with pytest.raises(records.FrozenRecordError):
        config.channel_size = 5  # type: ignore[misc]
    assert records.replace(config, channel_size=5).channel_size == 5
    with pytest.raises(ConfigError, match="--channel-size: 0 "):
        records.replace(config, channel_size=0)


# --- TOML files --------------------------------------------------------------------


def test_load_toml_good_file(tmp_path: Path) -> None:
    """Both key spellings work; durations may be strings or seconds; only given keys return."""
    path = write(
        tmp_path,
        'rate = "1ms"\n'
        "channel-size = 3000\n"
        "batch_timeout = 0.25\n"
        'scale-interval = "2s"\n'
        "scale_up = 1\n"
        'sink = "file:/tmp/out.ndjson"\n'
        "verbose = true\n"
        "count = 1000\n",
    )
    assert load_toml(path) == {
        "rate": 0.001,
        "channel_size": 3000,
        "batch_timeout": 0.25,
        "scale_interval": 2.0,
        "scale_up": 1.0,
        "sink": "file:/tmp/out.ndjson",
        "verbose": True,
        "count": 1000,
    }
    assert collect_toml_errors(path) == []


def test_load_toml_bad_duration(tmp_path: Path) -> None:
    """A bad duration names the file, the key, the value and the rule."""
    path = write(tmp_path, 'batch_timeout = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    message = str(info.value)
    assert_one_line(message, f"{path}: batch_timeout: 'soon' is not a duration (use a number")


def test_load_toml_unknown_key(tmp_path: Path) -> None:
    """An unknown key is named, with the closest known key suggested."""
    path = write(tmp_path, "channel_sise = 10\n")
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    message = str(info.value)
    assert_one_line(message, f"{path}: channel_sise: unknown key", "did you mean channel_size?")


def test_load_toml_unknown_key_without_near_match_lists_keys(tmp_path: Path) -> None:
    """An unknown key unlike any other lists the known keys."""
    path = write(tmp_path, "[output]\nformat = 1\n")
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    message = str(info.value)
    assert_one_line(message, f"{path}: output: unknown key", "known keys: rate, channel_size")


@pytest.mark.parametrize(
    ("line", "key", "shown"),
    [
        ('batch_size = "50"', "batch_size", "'50'"),
        ("count = 1.5", "count", "1.5"),
        ("sink = 5", "sink", "5"),
        ("verbose = 1", "verbose", "1"),
        ("rate = true", "rate", "True"),
        ("scale_up = [0.8]", "scale_up", "[0.8]"),
    ],
)
def test_load_toml_wrong_type(tmp_path: Path, line: str, key: str, shown: str) -> None:
    """A value of the wrong type names the file, the key, the value and the type wanted."""
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    assert_one_line(str(info.value), f"{path}: {key}: {shown} has the wrong type (must be ")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("channel-size = 0", "channel-size: 0 is out of range (must be >= 1)"),
        ("rate = -1", "rate: -1s is out of range (must be >= 0s)"),
        ('rate = "-1ms"', "rate: '-1ms' is negative"),
        ("scale_up = inf", "scale_up: inf is not a number (must be finite)"),
        ("batch_timeout = nan", "batch_timeout: nan is not a number of seconds"),
    ],
)
def test_load_toml_bad_value(tmp_path: Path, line: str, expected: str) -> None:
    """A value out of range names the file, the key as written, the value and the rule."""
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    assert_one_line(str(info.value), f"{path}: {expected}")


def test_load_toml_key_given_twice(tmp_path: Path) -> None:
    """The same option under both spellings is an error, not a silent choice."""
    path = write(tmp_path, "batch_size = 5\nbatch-size = 6\n")
    with pytest.raises(ConfigError, match="batch-size: given twice"):
        load_toml(path)


def test_load_toml_syntax_error(tmp_path: Path) -> None:
    """Invalid TOML is one line naming the file and the parser's position."""
    path = write(tmp_path, "rate = \n")
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    assert_one_line(str(info.value), f"{path}: not valid TOML", "line 1")


def test_load_toml_missing_file(tmp_path: Path) -> None:
    """A missing file is one line naming it."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    assert_one_line(str(info.value), f"{path}: cannot read the file")


def test_load_toml_reports_first_problem_and_count(tmp_path: Path) -> None:
    """With several problems load_toml raises the first and says how many more there are."""
    path = write(tmp_path, 'batch_timeout = "soon"\nbogus = 1\nchannel_size = 0\n')
    with pytest.raises(ConfigError) as info:
        load_toml(path)
    message = str(info.value)
    assert_one_line(message, "batch_timeout: 'soon'", "(and 2 more problem(s) in this file)")


def test_collect_toml_errors_returns_every_problem(tmp_path: Path) -> None:
    """collect_toml_errors lists every bad key of a file, one line each, in file order."""
    path = write(
        tmp_path,
        'batch_timeout = "soon"\n'
        "channel_sise = 3\n"
        'batch_size = "50"\n'
        "max_workers = 0\n"
        'rate = "-1s"\n'
        "sink = 5\n"
        "channel-size = 100\n",  # fine: the misspelt key above did not count
    )
    errors = collect_toml_errors(path)
    keys = ["batch_timeout", "channel_sise", "batch_size", "max_workers", "rate", "sink"]
    assert len(errors) == len(keys)
    for error, key in zip(errors, keys, strict=True):
        assert error.startswith(f"{path}: {key}: ")
        assert "\n" not in error


def test_collect_toml_errors_checks_rules_across_options(tmp_path: Path) -> None:
    """Rules between options are checked against the defaults, naming keys as written."""
    path = write(tmp_path, "min-workers = 20\nscale_down = 0.9\n")
    errors = collect_toml_errors(path)
    assert errors == [
        f"{path}: max_workers (default): 10 is below min-workers, which is 20 "
        "(must be max-workers >= min-workers)",
        f"{path}: scale_down: 0.9 is not below scale_up (default), which is 0.8 "
        "(must be 0 < scale-down < scale-up <= 1)",
    ]


def test_collect_toml_errors_unreadable_file(tmp_path: Path) -> None:
    """A file that cannot be read is one problem, not an exception."""
    assert collect_toml_errors(tmp_path / "nope.toml") == [
        f"{tmp_path / 'nope.toml'}: cannot read the file (No such file or directory)"
    ]


# --- merging ---------------------------------------------------------------------------


def test_build_config_precedence(tmp_path: Path) -> None:
    """Defaults < TOML file < command line, key by key."""
    path = write(tmp_path, 'channel_size = 3000\nbatch_size = 10\nrate = "1ms"\n')
    config = build_config(path, {"batch_size": 20, "sink": "stdout"})
    assert config.channel_size == 3000  # file
    assert config.batch_size == 20  # command line over file
    assert config.rate == 0.001  # file
    assert config.sink == "stdout"  # command line
    assert config.max_workers == 10  # default


def test_build_config_skips_none_overrides(tmp_path: Path) -> None:
    """An override of None means the flag was not given, so the file's value stays."""
    path = write(tmp_path, "channel_size = 3000\n")
    assert build_config(path, {"channel_size": None, "count": None}).channel_size == 3000


def test_build_config_without_file() -> None:
    """With no file, overrides apply over defaults; flag-style keys are accepted."""
    config = build_config(overrides={"max-workers": 3})
    assert config.max_workers == 3
    assert build_config() == PipelineConfig()


def test_build_config_command_line_can_fix_file_cross_rule(tmp_path: Path) -> None:
    """A file's min_workers above the default max is fine when --max-workers raises the max."""
    path = write(tmp_path, "min_workers = 20\n")
    assert build_config(path, {"max_workers": 30}).min_workers == 20
    with pytest.raises(ConfigError, match="^--max-workers: 10 is below --min-workers, which is 20"):
        build_config(path)


def test_build_config_unknown_override() -> None:
    """An override with no matching option is an error naming it."""
    with pytest.raises(ConfigError, match="^bogus: unknown option"):
        build_config(overrides={"bogus": 1})


def test_build_config_file_errors_propagate(tmp_path: Path) -> None:
    """A bad file fails the build with the file's one-line message."""
    path = write(tmp_path, 'rate = "10 parsecs"\n')
    with pytest.raises(ConfigError, match="rate: '10 parsecs' is not a duration"):
        build_config(path, {"channel_size": 10})


def test_scale_down_window_in_a_file_and_its_rule(tmp_path: Path) -> None:
    """scale-down-window = 3 in a file is read as 3; 0 or 2.5 is one line naming the file, key and rule."""
    assert build_config(write(tmp_path, "scale-down-window = 3\n")).scale_down_window == 3
    bad = write(tmp_path, "scale_down_window = 0\n", name="zero.toml")
    assert collect_toml_errors(bad) == [f"{bad}: scale_down_window: 0 is out of range (must be >= 1)"]
    half = write(tmp_path, "scale_down_window = 2.5\n", name="half.toml")
    assert collect_toml_errors(half) == [
        f"{half}: scale_down_window: 2.5 has the wrong type (must be an integer)"
    ]
