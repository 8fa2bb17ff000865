"""The ``logpipe`` command's entry point (the console script and ``python -m logpipe``).

It installs the stop-signal handler first, then imports the command, which
takes a few hundred milliseconds (numpy, rich, prometheus_client). A Ctrl+C
in that time raises inside importlib; caught here, it is one line on stderr
and exit code 130 (143 for SIGTERM) instead of a traceback. Keep this module
and what it imports small: until it has run, Python's default handler is in
place.
"""

from __future__ import annotations

from logpipe._signals import SignalHandler, exit_interrupted

__all__ = ["main"]


def main() -> int:
    """Run the ``logpipe`` command with sys.argv; return its exit code."""
    SignalHandler.install()  # stays in place until the process exits
    try:
        from logpipe.cli import main as run_command

        return run_command()
    except KeyboardInterrupt as exc:  # during the imports (cli.main handles its own)
        return exit_interrupted(exc)
