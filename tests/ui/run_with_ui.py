"""``logpipe run`` with the terminal UI wired as cli.py will wire it (until it does).

Usage: python run_with_ui.py [logpipe run flags...]. Builds the pipeline the
way ``logpipe.cli._run`` does, with :class:`TerminalUI` deciding the
Console's stream and wrapping ``pipeline.run()``. Not a test module.
"""

from __future__ import annotations

import signal
import sys

from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pipeline import Pipeline
from logpipe.cli import build_parser
from logpipe.domain.config import OPTIONS, build_config
from logpipe.infrastructure.deadletter import DeadLetter, default_dead_letter_path
from logpipe.infrastructure.registry import open_sink, open_source
from logpipe.infrastructure.sinks import StdoutSink
from logpipe.infrastructure.sources import SourceContext
from logpipe.infrastructure.ui import TerminalUI


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(["run", *argv])
    config = build_config(args.config, {option.name: getattr(args, option.name) for option in OPTIONS})
    metrics = Metrics()
    dead_letter = DeadLetter(config.dead_letter or default_dead_letter_path(config.state_dir))
    context = SourceContext(
        format=config.format,
        max_line=config.max_record_size,
        metrics=metrics,
        dead_letter=dead_letter,
        state_dir=config.state_dir,
        once=config.once,
        max_connections=config.max_connections,
    )
    source = open_source(config.source, settings=context)
    sink = open_sink(config.sink, settings=config)
    display = TerminalUI.for_run(config, source, records_on_stdout=isinstance(sink, StdoutSink))
    pipeline = Pipeline(
        config, sink, source=source, console=Console(display.stream, verbose=config.verbose), metrics=metrics
    )
    signal.signal(signal.SIGINT, lambda *_: pipeline.request_stop("signal"))
    signal.signal(signal.SIGTERM, lambda *_: pipeline.request_stop("signal"))
    try:
        with display.running(pipeline):
            report = pipeline.run()
    finally:
        dead_letter.close()
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
