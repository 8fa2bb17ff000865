"""Helpers for the logpipe.logging tests: a private logger per test, and reading the sink's lines.

The NATS server fixture is the one the NATS sink tests use (tests/sinks_nats/conftest.py).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from sinks_nats.conftest import nats_server  # noqa: F401 - the fixture, re-exported

_names = itertools.count()


@pytest.fixture
def make_logger() -> Iterator[Callable[[logging.Handler], logging.Logger]]:
    """A fresh logger (level DEBUG, not propagating) with the given handler; the handler is closed after."""
    made: list[tuple[logging.Logger, logging.Handler]] = []

    def make(handler: logging.Handler) -> logging.Logger:
        logger = logging.getLogger(f"logpipe-test.{next(_names)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
        made.append((logger, handler))
        return logger

    yield make
    for logger, handler in made:
        logger.removeHandler(handler)
        handler.close()


def read_lines(*paths: Path) -> list[dict]:
    """Every line of the files, parsed as JSON (each line must be a JSON object)."""
    records = []
    for path in paths:
        data = path.read_bytes() if path.exists() else b""
        assert not data or data.endswith(b"\n"), f"{path} ends in a partial line"
        records.extend(orjson.loads(line) for line in data.splitlines())
    return records
