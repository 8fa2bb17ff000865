"""The upstream lag of a consuming source: on the [METRICS] line and in Prometheus only when bound."""

from __future__ import annotations

from logpipe.application.metrics import Metrics, UpstreamLag, metrics_line
from logpipe.infrastructure.exporters.prometheus import MetricsCollector


def _samples(metrics: Metrics) -> dict[str, float]:
    return {s.name: s.value for family in MetricsCollector(metrics).collect() for s in family.samples}


def test_without_a_consuming_source_nothing_about_upstream_shows():
    """The generator, file, stdin and tcp runs keep the spec's line and exports as they were."""
    metrics = Metrics(queue_capacity=1500)
    snap = metrics.snapshot()
    assert snap.upstream is None
    assert "Upstream" not in metrics_line(snap, snap, 1.0)
    assert not any(name.startswith("logpipe_upstream") for name in _samples(metrics))


def test_a_bound_lag_ends_the_line_and_is_exported():
    """Once a source binds its lag, the line ends with it and Prometheus has the gauges and the counter."""
    lag = [UpstreamLag(48211, 640, 3)]
    metrics = Metrics(queue_capacity=1500)
    metrics.bind_upstream(lambda: lag[0])
    snap = metrics.snapshot()
    assert metrics_line(snap, snap, 1.0).endswith("| Workers=0 | Upstream pending=48211 ack_pending=640")
    samples = _samples(metrics)
    assert samples["logpipe_upstream_pending"] == 48211
    assert samples["logpipe_upstream_ack_pending"] == 640
    assert samples["logpipe_upstream_redelivered_total"] == 3
    lag[0] = UpstreamLag(0, 0, 3)
    assert metrics.snapshot().upstream == UpstreamLag(0, 0, 3)  # read live, not cached


def test_a_lag_not_known_yet_leaves_the_line_as_it_is():
    """A source that has not read its consumer's state yet returns None: nothing is shown."""
    metrics = Metrics(queue_capacity=1500)
    metrics.bind_upstream(lambda: None)
    snap = metrics.snapshot()
    assert "Upstream" not in metrics_line(snap, snap, 1.0)
    assert "logpipe_upstream_pending" not in _samples(metrics)
