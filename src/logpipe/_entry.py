"""The ``logpipe`` command's entry point (the console script and ``python -m logpipe``).

It installs the stop-signal handler first, then imports the command, which
takes a few hundred milliseconds (numpy, rich, prometheus_client). A Ctrl+C
in that time is remembered and, once the imports are done, is one line on
stderr and exit code 130 (143 for SIGTERM) instead of a traceback from
inside importlib. Keep this module and what it imports small: until it has
run, Python's default handler is in place.
"""

from __future__ import annotations

from logpipe._signals import SignalHandler, exit_interrupted

__all__ = ["main"]

# At import, not in main(): pip's script wrapper runs code of its own
# (``re.sub`` on argv[0]) between importing this module and calling main().
# The handler stays installed until the process exits.
_HANDLER = SignalHandler.install_for_process()


def main() -> int:
    """Run the ``logpipe`` command with sys.argv; return its exit code."""
    try:
        from logpipe.cli import main as run_command

        _HANDLER.checkpoint()  # a signal during the imports ends it here
        return run_command()
    except KeyboardInterrupt as exc:  # cli.main handles its own; this is for the import
        return exit_interrupted(exc)
