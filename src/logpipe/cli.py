"""The ``logpipe`` command.

``logpipe run [flags]`` runs the pipeline: one flag per parameter of
:data:`logpipe.domain.config.OPTIONS`, plus ``--config FILE.toml`` (flags
override the file) and ``--dry-run`` (print the resolved configuration as
TOML and exit). ``logpipe validate CONFIG`` lists every problem in a config
file.

Exit codes: 0 the run ended with every record delivered (lost = 0); 1 records
were lost, the sink failed, or ``validate`` found problems; 2 a usage or
configuration error, always reported as one line on stderr:
``logpipe: error: --rate: '10 parsecs' is not a duration (...)``; 130 / 143
SIGINT / SIGTERM before the run started (see logpipe._signals).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from logpipe._signals import SignalHandler, exit_interrupted
from logpipe._signals import checkpoint as signal_checkpoint
from logpipe._version import __version__
from logpipe.domain.config import (
    OPTIONS,
    Option,
    PipelineConfig,
    build_config,
    collect_toml_errors,
    load_toml,
)
from logpipe.domain.durations import format_duration
from logpipe.exceptions import ConfigError, LogpipeError
from logpipe.infrastructure.registry import (
    SINKS,
    SOURCES,
    Spec,
    open_sink,
    open_source,
    parse_sink,
    parse_source,
)

__all__ = ["build_parser", "format_config", "main"]

PROG = "logpipe"

_METAVARS = {"duration": "DURATION", "int": "N", "float": "X", "str": "TEXT"}
_SPEC_HELP = {  # the registry knows the schemes better than a help string
    "sink": f"where records go: {SINKS.known()}",
    "source": f"where records come from: {SOURCES.known()}",
}


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size().columns`` says: $COLUMNS, else the terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, without importing shutil for its width.

    argparse builds a formatter on every ``add_argument`` (to check the
    metavar), and the default one imports shutil (~3 ms, on every run) only
    to ask the terminal's width.
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:  # fmt: skip
        super().__init__(prog, indent_increment, max_help_position, width or _terminal_columns() - 2)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``logpipe: error: --flag: why``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)  # the subcommands' parsers too
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {_one_line(message)}\n")


def _one_line(message: str) -> str:
    """argparse's ``argument --rate: --rate: 'x' is...`` as ``--rate: 'x' is...``, on one line."""
    match = re.match(r"argument (\S+): (.*)", message, re.DOTALL)
    if match:
        name, why = match.groups()
        message = f"{name}: {why.removeprefix(name + ': ')}"
    return " ".join(message.split())


def _option_type(option: Option) -> Callable[[str], Any]:
    """The argparse ``type=`` for an option; keeps Option.parse's message."""

    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option.kind
    return parse


def _option_help(option: Option) -> str:
    text = _SPEC_HELP.get(option.name, option.help)
    if option.default is None:
        return f"{text} (default: {option.unset})"
    if option.kind == "bool":
        return text
    return f"{text} (default: {option.show(option.default)})".replace("%", "%%")


def _metavar(option: Option) -> str:
    if option.name in _SPEC_HELP:
        return "SPEC"
    choices = getattr(option, "choices", None)
    if choices:
        return "{" + ",".join(choices) + "}"
    return _METAVARS[option.kind]


def build_parser() -> argparse.ArgumentParser:
    """The ``logpipe`` argument parser, with its ``run`` and ``validate`` commands."""
    parser = _Parser(
        prog=PROG,
        description="A backpressure-aware, auto-scaling log pipeline for one host.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the pipeline until --duration, --count, or Ctrl+C",
        description="Run the pipeline: producer -> ring -> auto-scaled workers -> sink. "
        "Durations are Go style: 100us, 1.5ms, 2s, 1m30s.",
        allow_abbrev=False,
    )
    run.add_argument(
        "--config", metavar="FILE.toml", help="read parameters from a TOML file; flags override it"
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print the resolved configuration as TOML and exit"
    )
    for option in OPTIONS:
        if option.kind == "bool":
            run.add_argument(
                option.flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_option_help(option),
            )
        else:
            run.add_argument(
                option.flag,
                type=_option_type(option),
                default=None,
                metavar=_metavar(option),
                help=_option_help(option),
            )
    run.set_defaults(handler=_run)

    validate = commands.add_parser(
        "validate",
        help="check a TOML config file and list every problem in it",
        description="Check a TOML config file; list every problem, one per line.",
        allow_abbrev=False,
    )
    validate.add_argument("config", metavar="CONFIG", help="the TOML file to check")
    validate.set_defaults(handler=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``logpipe`` command; return its exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("choose a command: run or validate (see logpipe --help)")
        try:
            return int(args.handler(args))
        except ConfigError as exc:
            _say_error(exc)
            return 2
    except KeyboardInterrupt as exc:  # a signal before the run's pipeline existed
        return exit_interrupted(exc)


# --- run -----------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    overrides = {option.name: getattr(args, option.name) for option in OPTIONS}
    config = build_config(args.config, overrides)
    sink_label = _label(args, "sink")
    source_label = _label(args, "source")
    if args.dry_run:
        parse_sink(config.sink, label=sink_label, settings=config)
        parse_source(config.source, label=source_label)
        print(format_config(config))
        return 0

    from logpipe.application.console import Console
    from logpipe.application.metrics import Metrics
    from logpipe.application.pipeline import Pipeline
    from logpipe.infrastructure.sources import SourceContext
    from logpipe.infrastructure.ui import TerminalUI

    if config.metrics_addr is not None:  # prometheus_client: imported only when asked for
        from logpipe.infrastructure.exporters import prometheus

    if config.report_json is not None:  # its exporter: imported only when asked for
        from logpipe.infrastructure.exporters import check_report_path

        check_report_path(config.report_json)  # fail now, not after the run
    signal_checkpoint()  # a signal during the imports above ends the command here

    # One set of counters: the source counts rejected lines into it, the
    # pipeline everything else.
    metrics = Metrics()
    context = SourceContext.for_run(config, metrics)
    dead_letter = context.dead_letter
    source = open_source(config.source, label=source_label, settings=context)
    sink = open_sink(config.sink, label=sink_label, settings=config)
    # Records own stdout when they go there (--sink stdout, read off the
    # spec: other runs never import the stdout sink); status lines move to
    # stderr. --ui (and a finite input's progress bar) take that terminal if
    # it is one.
    records_on_stdout = Spec.parse(config.sink).scheme == "stdout"
    display = TerminalUI.for_run(config, source, records_on_stdout=records_on_stdout)
    # The entry point's handler, or (main() called in-process) one installed
    # now; from here on a signal is remembered until the pipeline exists.
    handler, previous = SignalHandler.install()
    handler.hold()
    server = None
    try:
        try:
            pipeline = Pipeline(
                config,
                sink,
                source=source,
                console=Console(display.stream, verbose=config.verbose),
                metrics=metrics,
            )
            if config.metrics_addr is not None:
                # Prints "Metrics: http://HOST:PORT/metrics" (the port chosen, for :0).
                server = prometheus.start(pipeline, config.metrics_addr)
        except BaseException:
            sink.close()  # never handed over; a pipeline closes its sink when it ends
            raise
        handler.attach(pipeline, display)
        with display.running(pipeline):
            report = pipeline.run()
    except ConfigError:
        raise  # e.g. --metrics-addr cannot listen: exit 2
    except LogpipeError as exc:  # the sink failed, e.g. its final fsync
        _say_error(exc)
        return 1
    finally:
        handler.finish()  # nothing left to stop: later signals are ignored
        if server is not None:
            server.stop()
        dead_letter.close()
        SignalHandler.uninstall(previous)
    if config.report_json is not None:
        from logpipe.infrastructure.exporters import write_report_json

        write_report_json(report, config.report_json)
    if dead_letter.count:
        print(f"{dead_letter.count} rejected lines written to {dead_letter.path}", file=sys.stderr)
    return 0 if report.ok else 1


def _say_error(exc: BaseException) -> None:
    print(f"{PROG}: error: {_one_line(str(exc))}", file=sys.stderr)


def _label(args: argparse.Namespace, name: str) -> str:
    """How errors about a spec name it: its flag, or the config file's key."""
    if getattr(args, name) is None and args.config is not None and name in load_toml(args.config):
        return f"{args.config}: {name}"
    return f"--{name}"


# --- dry run and validate ---------------------------------------------------------------


def format_config(config: PipelineConfig) -> str:
    """The configuration as TOML, one ``name = value`` per line, in OPTIONS order.

    Unset optional values are comments (TOML has no null), so the output can
    be saved and passed back with ``--config``.
    """
    lines = []
    for option in OPTIONS:
        value = getattr(config, option.name)
        if value is None:
            lines.append(f"# {option.name} = unset ({option.unset})")
        else:
            lines.append(f"{option.name} = {_toml_value(option, value)}")
    return "\n".join(lines)


def _toml_value(option: Option, value: Any) -> str:
    import json  # only --print-config writes TOML: ~1.5 ms of every other start-up

    if option.kind == "bool":
        return "true" if value else "false"
    if option.kind == "duration":
        return json.dumps(format_duration(value), ensure_ascii=False)
    if option.kind == "str":
        return json.dumps(value, ensure_ascii=False)  # JSON string escapes are TOML's
    return repr(value)


def _validate(args: argparse.Namespace) -> int:
    problems = collect_toml_errors(args.config)
    if not problems:
        values = load_toml(args.config)
        for name, parse in (("sink", parse_sink), ("source", parse_source)):
            if name in values:
                try:
                    parse(values[name], label=f"{args.config}: {name}")
                except ConfigError as exc:
                    problems.append(str(exc))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{args.config}: config OK")
    return 0
