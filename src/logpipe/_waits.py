"""Blocking waits for the main thread, cut into slices of at most JOIN_SLICE.

CPython runs Python signal handlers only in the main thread, and only when
it runs bytecode. The kernel may deliver SIGINT or SIGTERM to any thread of
the process; when it picks another one, a main thread blocked on a lock
(``Event.wait``, ``Thread.join``, ``Future.result``...) is not interrupted,
and the handler runs only when that wait ends: with no timeout, never. Every
wait that can run on the main thread goes through these helpers, so a
handler runs within JOIN_SLICE whichever thread received the signal.

No imports beyond the standard library's smallest modules: the entry point
and every layer use this.
"""

from __future__ import annotations

import threading
import time

TYPE_CHECKING = False  # not typing's: the entry point imports this module before anything heavy
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from concurrent.futures import Future
    from typing import TypeVar

    _T = TypeVar("_T")

__all__ = ["JOIN_SLICE", "join_thread", "set_slice_hook", "slices", "wait_event", "wait_for", "wait_future"]

# How often a waiting main thread wakes to let signal handlers run.
JOIN_SLICE = 0.1

# Called between slices: the entry point raises a start-up signal there
# (logpipe._signals), so a Ctrl+C interrupts a wait such as a NATS connect.
_slice_hook: Callable[[], None] | None = None


def set_slice_hook(hook: Callable[[], None] | None) -> None:
    """Call ``hook`` before every slice of every sliced wait (None: no hook)."""
    global _slice_hook
    _slice_hook = hook


def slices(timeout: float | None) -> Iterator[float]:
    """Wait lengths of at most JOIN_SLICE that add up to ``timeout`` (None: forever)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if _slice_hook is not None:
            _slice_hook()
        if deadline is None:
            yield JOIN_SLICE
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return
        yield min(JOIN_SLICE, left)


def join_thread(thread: threading.Thread, timeout: float | None = None) -> bool:
    """``thread.join(timeout)`` in slices; True if the thread has ended."""
    for part in slices(timeout):
        thread.join(part)
        if not thread.is_alive():
            return True
    return not thread.is_alive()


def wait_event(event: threading.Event, timeout: float | None = None) -> bool:
    """``event.wait(timeout)`` in slices; True if the event is set."""
    for part in slices(timeout):
        if event.wait(part):
            return True
    return event.is_set()


def wait_for(condition: threading.Condition, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
    """``condition.wait_for(predicate, timeout)`` in slices (hold the condition's lock)."""
    result = predicate()
    for part in slices(timeout):
        if result:
            break
        condition.wait(part)
        result = predicate()
    return result


def wait_future(future: Future[_T], timeout: float | None = None) -> _T:
    """``future.result(timeout)`` in slices; raises TimeoutError like it."""
    for part in slices(timeout):
        try:
            return future.result(part)
        except TimeoutError:
            continue
    return future.result(0)
