"""What the NATS sink and the NATS source share of their nats-py client.

nats-py is asyncio; logpipe's workers and sources are threads. Each of the
two runs one event loop in a daemon thread (:class:`LoopThread`: start it,
run a coroutine on it and wait in slices, so the main thread still sees its
signals, and stop it, cancelling whatever it still runs), and connects the
same way (:func:`connect`: an unreachable server at start-up is an error
with the first reason the client saw, never nats-py's endless retries;
once connected, it reconnects for ever).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from logpipe._waits import join_thread, wait_future

__all__ = ["LoopThread", "connect", "describe"]

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


def describe(exc: BaseException) -> str:
    """An exception as one short line: ``ConnectionRefusedError: [Errno 111] ...``."""
    text = " ".join(str(exc).split())
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind


async def connect(
    nc: Any,
    url: str,
    *,
    client_name: str,
    connect_timeout: float,
    reconnect_wait: float,
    on_error: Callable[[str], None],
    cannot_connect: Callable[[str], Exception],
    **callbacks: Any,
) -> None:
    """Connect ``nc`` (a ``nats.NATS()``) to ``url``, or raise ``cannot_connect(reason)``.

    Args:
        client_name: the name the server shows for this connection.
        on_error: told every error the client reports, as one line (a
            sink's or source's ``last_error``).
        cannot_connect: builds the exception for a server that cannot be
            reached within ``connect_timeout``, from a message.
        callbacks: nats-py's other callbacks (``reconnected_cb``, ...).
    """
    first_error: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def error_cb(exc: Exception) -> None:
        on_error(describe(exc))
        if not first_error.done():
            first_error.set_result(exc)

    attempt = asyncio.ensure_future(
        nc.connect(
            servers=[url],
            name=client_name,
            error_cb=error_cb,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # once connected, never give up
            reconnect_time_wait=reconnect_wait,
            connect_timeout=connect_timeout,
            **callbacks,
        )
    )
    done, _ = await asyncio.wait(
        {attempt, first_error}, timeout=connect_timeout, return_when=asyncio.FIRST_COMPLETED
    )
    if attempt not in done:
        # Unreachable at start-up is an error: nats-py would retry for ever.
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1)
        reason = describe(first_error.result()) if first_error.done() else f"no answer within {connect_timeout:g}s"
        raise cannot_connect(f"cannot connect to the NATS server ({reason}); is nats-server running?")
    try:
        attempt.result()
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 1)
        raise
