"""Tests for logpipe._signals: the handler's phases, from start-up to the end of the run."""

from __future__ import annotations

import signal
import threading

import pytest

from logpipe._signals import Interrupted, SignalHandler, exit_interrupted
from logpipe._waits import JOIN_SLICE, join_thread, set_slice_hook, wait_event

DRAINING = "Still draining (1234 records left); logpipe exits when every record is flushed.\n"


class FakePipeline:
    def __init__(self, *, draining: bool = False) -> None:
        self.draining = draining
        self.stops: list[str] = []

    def request_stop(self, reason: str) -> None:
        self.stops.append(reason)
        self.draining = True

    def pending(self) -> int:
        return 1234


def attached(pipeline: FakePipeline) -> SignalHandler:
    handler = SignalHandler(starting=False)
    handler.attach(pipeline)
    return handler


def test_first_signal_requests_stop_later_ones_say_still_draining(capfd):
    """Signal 1 calls request_stop('signal'); signals 2 and 3 print the draining line and stop nothing."""
    pipeline = FakePipeline()
    handler = attached(pipeline)
    handler(2, None)
    assert pipeline.stops == ["signal"]
    assert capfd.readouterr().err == ""
    handler(2, None)
    handler(15, None)
    handler.finish()  # prints the notices already due
    assert pipeline.stops == ["signal"]
    assert capfd.readouterr().err == DRAINING * 2


def test_signal_while_already_draining_only_reports(capfd):
    """A first signal after --duration already began the shutdown says it is draining."""
    pipeline = FakePipeline(draining=True)
    handler = attached(pipeline)
    handler(2, None)
    handler.finish()
    assert pipeline.stops == []
    assert capfd.readouterr().err == DRAINING


def test_signal_before_the_pipeline_exists_stops_it_on_attach(capfd):
    """A Ctrl+C once source and sink are open is remembered: attach() stops the new pipeline at once."""
    handler = SignalHandler()
    handler.hold()
    handler(2, None)  # no pipeline yet: no exception, nothing printed
    pipeline = FakePipeline()
    handler.attach(pipeline)
    handler.finish()
    assert pipeline.stops == ["signal"]
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("signum", "code", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_signal_while_starting_is_raised_at_the_next_checkpoint(capfd, signum, code, word):
    """While starting, the handler only remembers (it may have interrupted an import); checkpoint() raises, once."""
    handler = SignalHandler()
    handler.checkpoint()  # no signal yet: nothing
    handler(signum, None)
    handler(signal.SIGINT, None)  # a second one changes nothing
    with pytest.raises(Interrupted) as caught:
        handler.checkpoint()
    handler.checkpoint()  # the first raise is the only one
    assert exit_interrupted(caught.value) == code
    assert capfd.readouterr().err == f"logpipe: {word}\n"


def test_a_sliced_wait_is_a_checkpoint():
    """A start-up wait (a sink connecting) is cut short by a signal: each slice checks the handler."""
    handler = SignalHandler()
    set_slice_hook(handler.checkpoint)
    try:
        threading.Timer(JOIN_SLICE / 2, handler, args=(signal.SIGINT, None)).start()
        with pytest.raises(Interrupted):
            wait_event(threading.Event(), 5 * JOIN_SLICE)
    finally:
        set_slice_hook(None)


def test_signal_after_the_run_is_ignored(capfd):
    """After finish() the run is over: a signal neither stops nor prints anything."""
    pipeline = FakePipeline()
    handler = attached(pipeline)
    handler.finish()
    handler(2, None)
    assert pipeline.stops == []
    assert capfd.readouterr().err == ""


def test_sliced_waits_end_on_time_and_as_soon_as_done():
    """join_thread and wait_event keep their timeouts while waking every JOIN_SLICE."""
    event = threading.Event()
    thread = threading.Thread(target=event.wait, daemon=True)
    thread.start()
    assert not join_thread(thread, 2.5 * JOIN_SLICE)
    assert not wait_event(event, 0)
    threading.Timer(JOIN_SLICE / 2, event.set).start()
    assert wait_event(event, None)
    assert join_thread(thread, None)
