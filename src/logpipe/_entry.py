"""The ``logpipe`` command's entry point (the console script and ``python -m logpipe``).

It installs the stop-signal handler first, then imports the command, which
takes some 40-60 ms (argparse, the config, the registry, the ring buffer
and the pipeline; more when Python cannot cache bytecode). The registry
imports a source's or sink's module only when a spec names it, and
tomllib, difflib, hashlib, tempfile and shutil wait for the features that
use them. The heavy optional modules are imported
later, only by a run that uses them: asyncio and nats-py for a NATS sink or
source, prometheus_client for ``--metrics-addr``, rich for ``--ui`` or a
progress bar on a terminal, numpy for the generator (see
tests/cli/test_cli_startup_imports.py). A Ctrl+C during the imports is
remembered and, once they are done, is one line on stderr and exit code 130
(143 for SIGTERM) instead of a traceback from inside importlib. Keep this
module and what it imports small: until it has run, Python's default
handler is in place.
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
