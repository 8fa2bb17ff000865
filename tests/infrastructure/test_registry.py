"""Tests for logpipe.infrastructure.registry: specs to sinks and sources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from logpipe.domain.ports import Sink
from logpipe.exceptions import ConfigError
from logpipe.infrastructure import registry
from logpipe.infrastructure.registry import (
    SINKS,
    Registry,
    Spec,
    open_sink,
    open_source,
    parse_sink,
    parse_source,
)
from logpipe.infrastructure.sinks import FileSink, FileSinkConfig, NullSink, StdoutSink

KNOWN = "(known: file:PATH, nats://HOST:PORT/SUBJECT, null, stdout)"


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("text", "scheme", "target"),
    [
        ("null", "null", None),
        ("file:out.ndjson", "file", "out.ndjson"),
        ("file://out.ndjson", "file", "out.ndjson"),
        ("file:///tmp/out.ndjson", "file", "/tmp/out.ndjson"),
        ("FILE:/x", "file", "/x"),
        ("nats://host:4222/logs", "nats", "host:4222/logs"),
        ("file:", "file", ""),
    ],
)
def test_spec_parse(text, scheme, target):
    """A spec splits at the first colon; a leading // is dropped; the scheme is case-insensitive."""
    assert Spec.parse(text) == Spec(text=text, scheme=scheme, target=target)


def test_known_sinks_are_listed_sorted():
    """The registry lists its sinks by usage, sorted, as errors show them."""
    assert SINKS.known() == "file:PATH, nats://HOST:PORT/SUBJECT, null, stdout"
    assert SINKS.schemes == ("file", "nats", "null", "stdout")


def test_unknown_scheme_lists_the_known_ones():
    """An unknown sink names the flag, the spec and every known sink, on one line."""
    assert one_line_error(open_sink, "kafka://x") == f"--sink: unknown sink 'kafka://x' {KNOWN}"


def test_typo_gets_a_suggestion():
    """A near miss of a scheme suggests it."""
    message = one_line_error(open_sink, "nul")
    assert message == "--sink: unknown sink 'nul' (known: file:PATH, nats://HOST:PORT/SUBJECT, null, stdout; did you mean null?)"


def test_bare_path_suggests_the_file_scheme():
    """A bare path is not a sink, and the error shows how to write it."""
    message = one_line_error(open_sink, "out.ndjson")
    assert "did you mean file:out.ndjson?" in message


@pytest.mark.parametrize("spec", ["file:", "file://"])
def test_file_without_a_path(spec):
    """file: with nothing after it is refused, listing the known sinks."""
    assert one_line_error(open_sink, spec) == f"--sink: {spec!r} has no PATH {KNOWN}"


def test_scheme_without_target_refuses_one():
    """null and stdout take nothing after the scheme."""
    message = one_line_error(open_sink, "null:x")
    assert message == f"--sink: 'null:x' takes nothing after 'null' {KNOWN}"


def test_label_names_where_the_spec_came_from():
    """Errors name the label given, e.g. the config file's key."""
    message = one_line_error(open_sink, "kafka", label="conf.toml: sink")
    assert message.startswith("conf.toml: sink: unknown sink 'kafka'")


def test_missing_directory_is_a_config_error(tmp_path):
    """A file sink whose directory is missing fails at open with a one-line ConfigError."""
    path = tmp_path / "missing" / "out.ndjson"
    message = one_line_error(open_sink, f"file:{path}")
    assert message == (
        f"--sink: cannot open file:{path}: directory {str(tmp_path / 'missing')!r} "
        "does not exist (logpipe does not create it)"
    )


@pytest.mark.parametrize("prefix", ["file:", "file://"])
def test_file_specs_open_file_sinks(tmp_path, prefix):
    """file:PATH and file://PATH both open a FileSink on PATH."""
    path = tmp_path / "out.ndjson"
    sink = open_sink(prefix + str(path))
    try:
        assert isinstance(sink, FileSink)
        assert sink.path == str(path)
    finally:
        sink.close()


def test_null_and_stdout_specs():
    """null and stdout open their sinks, which satisfy the Sink Protocol."""
    null, stdout = open_sink("null"), open_sink("stdout")
    assert isinstance(null, NullSink) and isinstance(stdout, StdoutSink)
    assert isinstance(null, Sink) and isinstance(stdout, Sink)


def test_parse_sink_checks_without_opening(tmp_path):
    """parse_sink validates a spec and returns its config; no file is created."""
    path = tmp_path / "out.ndjson"
    assert parse_sink(f"file:{path}") == FileSinkConfig(path=str(path))
    assert not path.exists()


def test_generator_source_is_the_pipelines_own():
    """open_source('generator') is None, which Pipeline takes as its built-in producer."""
    assert open_source("generator") is None
    assert parse_source("generator") == registry.GeneratorSourceConfig()


def test_unknown_source_lists_the_known_ones():
    """An unknown source scheme gets one line listing the known ones."""
    assert one_line_error(open_source, "kafka://x") == "--source: unknown source 'kafka://x' (known: file:PATH, generator, nats://HOST:PORT/SUBJECT?stream=NAME&durable=NAME, stdin, tcp://HOST:PORT)"


@dataclass(frozen=True)
class FakeNatsConfig:
    """What issue 4's NATS sink config will look like."""

    scheme: ClassVar[str] = "nats"
    usage: ClassVar[str] = "nats://HOST:PORT/SUBJECT"
    takes_target: ClassVar[bool] = True

    host: str
    port: int
    subject: str

    @classmethod
    def from_target(cls, target: str | None, settings: object = None) -> FakeNatsConfig:
        address, _, subject = (target or "").partition("/")
        host, _, port = address.partition(":")
        if not (host and port.isdigit() and subject):
            raise ValueError("is not HOST:PORT/SUBJECT")
        return cls(host, int(port), subject)

    def build(self, settings: object = None) -> Sink:
        raise OSError(111, "Connection refused")


def test_a_new_scheme_plugs_in():
    """A registered config class is parsed, listed, and its errors are one-line ConfigErrors."""
    sinks: Registry[Sink] = Registry("sink", "--sink")
    sinks.register(FakeNatsConfig)
    assert sinks.parse("nats://localhost:4222/logs") == FakeNatsConfig("localhost", 4222, "logs")
    assert sinks.known() == "nats://HOST:PORT/SUBJECT"
    message = one_line_error(sinks.parse, "nats://localhost/logs")
    assert message == "--sink: 'nats://localhost/logs' is not HOST:PORT/SUBJECT (use nats://HOST:PORT/SUBJECT)"
    assert one_line_error(sinks.parse, "nats:") == "--sink: 'nats:' has no HOST:PORT/SUBJECT (known: nats://HOST:PORT/SUBJECT)"
    message = one_line_error(sinks.open, "nats://localhost:4222/logs")
    assert message == "--sink: cannot open 'nats://localhost:4222/logs': Connection refused"


def test_a_scheme_registers_once():
    """Registering a second class for a scheme is a programming error."""
    with pytest.raises(ValueError, match="'file' is registered already"):
        SINKS.register(FileSinkConfig)


def test_settings_reach_the_config_class():
    """parse/open hand their settings to from_target, for options beyond the spec."""
    seen = []

    @dataclass(frozen=True)
    class Probe:
        scheme: ClassVar[str] = "probe"
        usage: ClassVar[str] = "probe"
        takes_target: ClassVar[bool] = False

        @classmethod
        def from_target(cls, target: str | None, settings: object = None) -> Probe:
            seen.append(settings)
            return cls()

        def build(self, settings: object = None) -> Sink:
            return NullSink()

    sinks: Registry[Sink] = Registry("sink", "--sink")
    sinks.register(Probe)
    marker = object()
    assert isinstance(sinks.open("probe", settings=marker), NullSink)
    sinks.parse("probe")
    assert seen == [marker, None]


# --- schemes registered by name ----------------------------------------------------


@pytest.mark.parametrize("kinds", [registry.SINKS, registry.SOURCES], ids=["sinks", "sources"])
def test_every_scheme_registered_by_name_loads_and_agrees(kinds):
    """Each built-in class says the scheme, usage and takes_target it was registered with."""
    lazy = 0
    for scheme in kinds.schemes:
        entry = kinds._configs[scheme]
        if isinstance(entry, registry.LazyConfig):
            lazy += 1
            loaded = entry.load()
            assert (loaded.scheme, loaded.usage, loaded.takes_target) == (
                entry.scheme, entry.usage, entry.takes_target,
            )  # fmt: skip
        assert kinds.config_class(scheme).scheme == scheme
    assert lazy == len(kinds.schemes)  # every built-in one, the generator too


def test_a_registration_that_disagrees_with_its_class_fails_on_first_use():
    """A lazy entry whose usage drifted from its class is caught, not shown to users."""
    probe = Registry("sink", "--sink")
    probe.register_lazy("file", "file:FILE", True, "logpipe.infrastructure.sinks.file:FileSinkConfig")
    assert probe.known() == "file:FILE"  # listing needs no import
    with pytest.raises(RuntimeError, match="FileSinkConfig says"):
        probe.parse("file:out.ndjson")


def test_lazy_schemes_are_imported_only_when_a_spec_names_them():
    """Parsing a file spec (or getting a bad spec's error) loads no other source's module."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = (
        "import sys\n"
        "from logpipe.exceptions import ConfigError\n"
        "from logpipe.infrastructure.registry import parse_source\n"
        "parse_source('file:/tmp/x.log')\n"
        "for bad in ('tcp:', 'kafka://x', 'stdin:x'):\n"
        "    try:\n"
        "        parse_source(bad)\n"
        "    except ConfigError:\n"
        "        pass\n"
        "names = ('tcp', 'stdin', 'nats_config')\n"
        "print(sorted(n for n in names if 'logpipe.infrastructure.sources.' + n in sys.modules))\n"
        "parse_source('tcp://127.0.0.1:9000')\n"
        "print('logpipe.infrastructure.sources.tcp' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]
