"""An asyncio event loop in a thread of its own, for the asyncio-only NATS client.

nats-py is asyncio; logpipe's workers and sources are threads. The NATS sink
and the NATS source each run one loop in a daemon thread and hand it
coroutines from their own threads. This module is that shared piece: start
the loop, run a coroutine on it and wait (in slices, so the main thread
still sees its signals), and stop it, cancelling whatever it still runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from logpipe._waits import join_thread, wait_future

__all__ = ["LoopThread"]

_T = TypeVar("_T")

STOP_JOIN = 10.0  # seconds stop() waits for the loop's thread


class LoopThread:
    """One event loop, run forever by one daemon thread until :meth:`stop`.

    Args:
        thread_name: the thread's name (shown by ``py-spy``, in tracebacks).
        no_answer: builds the exception :meth:`call` raises when a coroutine
            does not finish in time, from a message.
    """

    def __init__(self, thread_name: str, no_answer: Callable[[str], Exception]) -> None:
        self.loop = asyncio.new_event_loop()
        self._no_answer = no_answer
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # Whatever is still scheduled (a reconnect loop, a pending
            # publish) is cancelled and allowed to unwind before the close.
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, _T], *, timeout: float, what: str) -> _T:
        """Run ``coro`` on the loop and return its result; ``no_answer`` after ``timeout`` s.

        Args:
            what: names the caller in the timeout's message (e.g. the sink's spec).
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return wait_future(future, timeout)  # in slices: the main thread's signals
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._no_answer(f"{what}: no answer from the client within {timeout:g}s") from None

    def stop(self) -> None:
        """Stop the loop (idempotent) and wait a bounded time for its thread."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        join_thread(self._thread, STOP_JOIN)
