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

When the command is over, :func:`main` freezes the garbage collector's
objects (``gc.freeze``) before it returns: the process exits next, and the
interpreter's teardown would otherwise walk all of them, the modules
imported and what the run made, in its final collections: ~8 ms of the
~84 ms a one-line file run took over the interpreter's own start-up
(docs/benchmarks.md, Start-up).
"""

from __future__ import annotations

import gc

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
        code = run_command()
    except KeyboardInterrupt as exc:  # cli.main handles its own; this is for the import
        code = exit_interrupted(exc)
    # The process exits next. What is still alive needs no collection: the
    # exit frees it. (Python never promised to finalize objects that are
    # alive at exit, and by now the run has closed its files, flushed its
    # sink and written its report.) Frozen, the teardown's collections
    # skip them instead of walking every module's objects.
    gc.freeze()
    return code
