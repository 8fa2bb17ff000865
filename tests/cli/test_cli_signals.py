"""Tests for logpipe.cli's signal handling: first signal stops, later ones report the drain."""

from __future__ import annotations

import threading

from logpipe.cli import _SignalHandler

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


def wait_for_messages() -> None:
    for thread in threading.enumerate():
        if thread.name == "logpipe-signal":
            thread.join(5)


def test_first_signal_requests_stop_later_ones_say_still_draining(capfd):
    """Signal 1 calls request_stop('signal'); signals 2 and 3 print the draining line and stop nothing."""
    pipeline = FakePipeline()
    handler = _SignalHandler()
    handler.attach(pipeline)
    handler(2, None)
    assert pipeline.stops == ["signal"]
    assert capfd.readouterr().err == ""
    handler(2, None)
    handler(15, None)
    wait_for_messages()
    assert pipeline.stops == ["signal"]
    assert capfd.readouterr().err == DRAINING * 2


def test_signal_while_already_draining_only_reports(capfd):
    """A first signal after --duration already began the shutdown says it is draining."""
    pipeline = FakePipeline(draining=True)
    handler = _SignalHandler()
    handler.attach(pipeline)
    handler(2, None)
    wait_for_messages()
    assert pipeline.stops == []
    assert capfd.readouterr().err == DRAINING


def test_signal_before_the_pipeline_exists_stops_it_on_attach(capfd):
    """A Ctrl+C during start-up is remembered: attach() stops the new pipeline at once."""
    handler = _SignalHandler()
    handler(2, None)  # no pipeline yet: no exception, nothing printed
    pipeline = FakePipeline()
    handler.attach(pipeline)
    assert pipeline.stops == ["signal"]
    assert capfd.readouterr().err == ""
