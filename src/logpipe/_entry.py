"""The ``logpipe`` command's entry point (the console script and ``python -m logpipe``).

It installs the stop-signal handler first, then imports the command, which
takes some 30-50 ms on the project's 2-CPU VM (argparse, the config, the
registry; more when Python cannot cache bytecode); a run then imports the
ring buffer and the pipeline (20-35 ms). The registry imports a source's or sink's module only when a
spec names it (the generator's too), and tomllib, difflib, hashlib,
tempfile, shutil, decimal, random, the checkpoint store and the report
exporter wait for the features that use them. The heavy optional modules
are imported later, only by a run that uses them: asyncio and nats-py for a NATS sink or
source, prometheus_client for ``--metrics-addr``, rich for ``--ui`` or a
progress bar on a terminal, numpy for the generator (see
tests/cli/test_cli_startup_imports.py). A Ctrl+C during the imports is
remembered and, once they are done, is one line on stderr and exit code 130
(143 for SIGTERM) instead of a traceback from inside importlib. Keep this
module and what it imports small: until it has run, Python's default
handler is in place.

The garbage collector is kept from walking objects that live until the
process exits. While :func:`main` imports the command it is paused: the
imports make some 16,000 objects and leave some 50 of them as garbage,
and the ~14 collections they would set off cost ~4 ms; what they made is
then frozen (``gc.freeze``: out of every later collection) and the
collector runs as usual for the rest. When the command is over,
everything is frozen again before main() returns: the interpreter's
teardown would otherwise walk it all in its final collections, ~8 ms
(both on a one-line file run; docs/benchmarks.md, Start-up).
"""

from __future__ import annotations

import gc

from logpipe._blas import limit_blas_threads
from logpipe._signals import SignalHandler, exit_interrupted

__all__ = ["main"]

# At import, not in main(): pip's script wrapper runs code of its own
# (``re.sub`` on argv[0]) between importing this module and calling main().
# The handler stays installed until the process exits.
_HANDLER = SignalHandler.install_for_process()


def main() -> int:
    """Run the ``logpipe`` command with sys.argv; return its exit code."""
    limit_blas_threads()  # before the generator imports numpy: see logpipe._blas
    try:
        gc.disable()  # until the command is imported: see the module docstring
        try:
            from logpipe.cli import main as run_command
        finally:
            gc.freeze()
            gc.enable()
        _HANDLER.checkpoint()  # a signal during the imports ends it here
        code = run_command()
    except KeyboardInterrupt as exc:  # cli.main handles its own; this is for the import
        code = exit_interrupted(exc)
    # The process exits next, and the exit frees what is still alive: no
    # collection needs to walk it. (Python never promised to finalize the
    # objects alive at exit, and by now the run has closed its files,
    # flushed its sink and written its report.)
    gc.freeze()
    return code
