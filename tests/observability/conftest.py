"""Shared helpers for the observability tests: scraping and parsing /metrics,
in-process runs on a background thread, and sinks to break on purpose."""

from __future__ import annotations

import io
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from logpipe.application.console import Console
from logpipe.application.metrics import Metrics
from logpipe.application.pipeline import Pipeline, Report
from logpipe.domain.config import PipelineConfig

JOIN = 20.0  # the longest any run or thread in these tests may take to end


@dataclass
class Scrape:
    """One scrape of /metrics, parsed: every sample by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}; have {sorted(n for n, _ in self.samples)}"
        return self.samples[key]

    def has(self, name: str, **labels: str) -> bool:
        return (name, frozenset(labels.items())) in self.samples

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """A histogram's (le, cumulative count) pairs, by increasing le."""
        pairs = [
            (float(dict(labels)["le"]), value)
            for (sample, labels), value in self.samples.items()
            if sample == f"{name}_bucket"
        ]
        return sorted(pairs)


def parse(text: str) -> Scrape:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scrape(samples, types)


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET url: (status, body), for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def scrape(url: str) -> Scrape:
    status, body = get(url)
    assert status == 200, body
    return parse(body)


class Background:
    """A Pipeline running on a thread; ``finish()`` stops it and returns its report."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.report: Report | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-pipeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.report = self.pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def finish(self, *, stop: bool = True) -> Report:
        if stop:
            self.pipeline.request_stop()
        self._thread.join(JOIN)
        assert not self._thread.is_alive(), "the pipeline did not end"
        assert self.error is None, repr(self.error)
        assert self.report is not None
        return self.report


@pytest.fixture
def background() -> Iterator[Callable[..., tuple[Background, io.StringIO]]]:
    """Start Pipeline(PipelineConfig(**config), sink, metrics=..., source=...) on a thread; always ended after the test."""
    started: list[Background] = []

    def start(
        sink: object, *, metrics: Metrics | None = None, source: object = None, **config: object
    ) -> tuple[Background, io.StringIO]:
        out = io.StringIO()
        pipeline = Pipeline(
            PipelineConfig(**config),
            sink,  # type: ignore[arg-type]
            source=source,  # type: ignore[arg-type]
            console=Console(out),
            metrics=metrics,
        )
        run = Background(pipeline)
        started.append(run)
        return run, out

    yield start
    for run in started:
        run.pipeline.request_stop()
        run._thread.join(JOIN)
        assert not run._thread.is_alive(), "a pipeline outlived its test"


@pytest.fixture
def http_get() -> Callable[..., tuple[int, str]]:
    """GET a URL: (status, body), error statuses included."""
    return get


@pytest.fixture
def scrape_metrics() -> Callable[[str], Scrape]:
    """GET a /metrics URL (must be 200) and parse the text format."""
    return scrape


@pytest.fixture
def parse_metrics() -> Callable[[str], Scrape]:
    """Parse Prometheus text into a Scrape."""
    return parse
