"""The Grafana dashboard: every query names a metric the worker exposes; the panels the ops need."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import generate_latest

from tests.dashboard import dashboard_queries, exposed_metric_names, metric_names


@pytest.fixture(scope="module")
def worker_exposition() -> str:
    """What a worker's /metrics serves: the contract metrics and faust's sensors, one registry."""
    import streamapp.monitoring  # noqa: F401  # installs faust's sensors, as the worker does

    return generate_latest().decode()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum by (topic) (rate(streamapp_events_total[1m]))", {"streamapp_events_total"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(x_bucket{job="a", le!="+Inf"}[5m])))',
            {"x_bucket"},
        ),
        ("max(a) or vector(0)", {"a"}),
        ("sum(rate(a[1m])) / ignoring(kind) group_left sum(b) > 1e3", {"a", "b"}),
        ("count(streamapp_ready == 0) unless on(instance) up offset 5m", {"streamapp_ready", "up"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_dashboard_query_names_a_metric_the_worker_exposes(worker_exposition: str) -> None:
    exposed = exposed_metric_names(worker_exposition)
    queries = dashboard_queries()
    assert len(queries) >= 10
    for query in queries:
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= exposed, f"{query!r} names {sorted(names - exposed)}, which no worker exposes"


def test_the_contract_metrics_are_all_on_the_dashboard() -> None:
    used = {name for query in dashboard_queries() for name in metric_names(query)}
    for name in (
        "streamapp_events_total",
        "streamapp_alerts_total",
        "streamapp_dead_letters_total",
        "streamapp_event_lag_seconds_bucket",
        "streamapp_consumer_lag",
        "streamapp_ready",
    ):
        assert name in used, name
    queries = " ".join(dashboard_queries())
    assert "histogram_quantile(0.5," in queries and "histogram_quantile(0.99," in queries


def test_promtool_accepts_the_worker_exposition(worker_exposition: str) -> None:
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=worker_exposition, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
