"""SIGINT and SIGTERM for ``logpipe run``: one handler, from start-up to exit.

The entry point (logpipe._entry) installs it before importing anything
heavy, and it stays until the process exits. What a signal does depends on
how far the command has got:

* starting (imports, parsing, opening the source and sink): it is
  remembered, and :meth:`SignalHandler.checkpoint` raises
  :class:`Interrupted`, which becomes one line on stderr and exit code
  128 + signum (130 for SIGINT, 143 for SIGTERM). Checkpoints are the end
  of the imports, the start of ``logpipe run``, and every slice of a sliced
  wait (logpipe._waits: a NATS connect, say). Never raised from the handler
  itself: an exception in the middle of an import can crash a C extension's
  module init (orjson's segfaults), and pip's script wrapper runs code of
  its own between importing the entry point and calling it;
* holding (source and sink open, pipeline being built): it is remembered,
  and :meth:`SignalHandler.attach` stops the pipeline as soon as it exists;
* attached (the run): the first signal begins the shutdown, later ones
  print ``Still draining (...)`` and stop nothing;
* finished (the run is over, the report being written): ignored.

The handler takes no lock: CPython runs it in the main thread between two
bytecodes, possibly while that thread holds a lock the handler would need
(``threading.Event.set`` takes the Event's lock, which the main thread holds
while it enters or leaves ``Event.wait``). It only sets attributes and puts
on SimpleQueues, whose ``put`` is reentrant.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from queue import SimpleQueue

from logpipe._waits import join_thread, set_slice_hook

TYPE_CHECKING = False  # not typing's: this module is imported before anything heavy
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

__all__ = ["SIGNALS", "Interrupted", "SignalHandler", "checkpoint", "exit_interrupted"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PROG = "logpipe"

_STARTING, _HOLDING, _ATTACHED, _FINISHED = "starting", "holding", "attached", "finished"


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived before there was a run to stop: logpipe exits 128 + signum.

    A KeyboardInterrupt, so that code which handles Ctrl+C handles it too.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def exit_interrupted(exc: KeyboardInterrupt) -> int:
    """Say ``logpipe: interrupted`` (or ``terminated``) on stderr; return 128 + signum."""
    signum = getattr(exc, "signum", signal.SIGINT)
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    try:
        print(f"{PROG}: {word}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # no stderr: the exit code still says it
    return 128 + signum


def checkpoint() -> None:
    """While starting: raise Interrupted if a signal came (when logpipe's handler is installed)."""
    handler = signal.getsignal(signal.SIGINT)
    if isinstance(handler, SignalHandler):
        handler.checkpoint()


class SignalHandler:
    """The SIGINT / SIGTERM handler; see the module's docstring for its phases."""

    def __init__(self, *, starting: bool = True) -> None:
        self._phase = _STARTING if starting else _HOLDING
        self._pipeline: Any = None
        self._display: Any = None
        self.signals = 0
        self._first = 0  # the first signal's number
        self._notices: SimpleQueue[int | None] = SimpleQueue()
        self._notifier: threading.Thread | None = None

    @classmethod
    def install_for_process(cls) -> SignalHandler:
        """Install a starting handler for good (the entry point's); sliced waits check it."""
        handler = cls()
        for signum in SIGNALS:
            signal.signal(signum, handler)
        set_slice_hook(handler.checkpoint)
        return handler

    def checkpoint(self) -> None:
        """While starting, on the main thread: raise Interrupted if a signal came."""
        if (
            self._phase == _STARTING
            and self.signals
            and threading.current_thread() is threading.main_thread()
        ):
            self._phase = _FINISHED  # one way out: nothing may interrupt it
            raise Interrupted(self._first)

    @classmethod
    def install(cls) -> tuple[SignalHandler, dict[int, Any] | None]:
        """The handler in place (the entry point's), or a new one installed now.

        Returns it and the handlers it replaced (to restore with
        :meth:`uninstall`), or None when it was in place already.
        """
        current = signal.getsignal(signal.SIGINT)
        if isinstance(current, SignalHandler):
            return current, None
        handler = cls(starting=False)  # installed by the run itself: the source and sink are open
        return handler, {signum: signal.signal(signum, handler) for signum in SIGNALS}

    @staticmethod
    def uninstall(previous: dict[int, Any] | None) -> None:
        """Put back the handlers :meth:`install` replaced."""
        for signum, old in (previous or {}).items():
            signal.signal(signum, old)

    def hold(self) -> None:
        """The source and sink are open: a signal (even one already come) now stops the run once started."""
        if self._phase == _STARTING:
            self._phase = _HOLDING

    def attach(self, pipeline: Any, display: Any = None) -> None:
        """Handle signals for ``pipeline`` (stopping it now if one came already)."""
        self._pipeline = pipeline
        self._display = display
        # Prints the draining notices: pending() takes locks the interrupted
        # main thread may hold, so the handler must not call it itself.
        self._notifier = threading.Thread(target=self._notify, name="logpipe-signal", daemon=True)
        self._notifier.start()
        self._phase = _ATTACHED
        if self.signals:
            pipeline.request_stop("signal")

    def finish(self, timeout: float = 1.0) -> None:
        """The run is over: later signals are ignored; notices already due are printed."""
        self._phase = _FINISHED
        if self._notifier is not None:
            self._notices.put(None)
            join_thread(self._notifier, timeout)
            self._notifier = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self._first = self._first or signum
        phase = self._phase
        if phase != _ATTACHED:
            return  # starting: checkpoint() raises; holding: attach() stops the run; finished: nothing to stop
        pipeline = self._pipeline
        if self.signals == 1 and not pipeline.draining:
            pipeline.request_stop("signal")  # takes no lock
            return
        self._notices.put(signum)

    def _notify(self) -> None:
        while self._notices.get() is not None:
            self._say_draining()

    def _say_draining(self) -> None:
        line = (
            f"Still draining ({self._pipeline.pending()} records left); "
            "logpipe exits when every record is flushed.\n"
        )
        if self._display is not None and self._display.notice(line.rstrip("\n")):
            return  # shown in the live view, which would draw over a raw write
        try:
            # Straight to the fd: shown at once, whatever sys.stderr buffers.
            os.write(sys.stderr.fileno(), line.encode())
        except (OSError, ValueError):
            pass  # no stderr to tell: keep draining
