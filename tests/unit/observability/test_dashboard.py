"""The Grafana dashboard: every query names a metric the worker exposes; the panels the ops need."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.dashboard import (
    alert_rule_queries,
    alert_rules,
    dashboard_queries,
    exposed_metric_names,
    metric_names,
)

DATASOURCES = Path(__file__).resolve().parents[3] / "ops/grafana/provisioning/datasources/prometheus.yml"


@pytest.fixture(scope="module")
def worker_exposition() -> str:
    """What a worker's /metrics serves: the contract metrics and faust's sensors, one registry."""
    import streamapp.observability.monitoring  # noqa: F401  # installs faust's sensors, as the worker does
    import streamapp.sinks.base  # noqa: F401  # the sinks' metrics, which every worker serves

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


def test_the_sink_metrics_are_on_the_dashboard() -> None:
    used = {name for query in dashboard_queries() for name in metric_names(query)}
    for name in ("streamapp_sink_lag", "streamapp_sink_retries_total", "streamapp_sink_records_total"):
        assert name in used, name


def test_every_alert_rule_query_names_a_metric_the_worker_exposes(worker_exposition: str) -> None:
    exposed = exposed_metric_names(worker_exposition)
    queries = alert_rule_queries()
    assert len(queries) >= 3
    for query in queries:
        names = metric_names(query)
        assert names, f"no metric in {query!r}"
        assert names <= exposed, f"{query!r} names {sorted(names - exposed)}, which no worker exposes"


def test_alert_rules_cover_the_obvious_failures() -> None:
    watched = {name: rule for rule in alert_rules() for q in rule["data"] if "expr" in q["model"]
               for name in metric_names(q["model"]["expr"])}  # fmt: skip
    assert {"streamapp_ready", "streamapp_consumer_lag", "streamapp_dead_letters_total"} <= set(watched)
    not_ready = watched["streamapp_ready"]
    threshold = next(s for s in not_ready["data"] if s["refId"] == not_ready["condition"])
    assert threshold["model"]["conditions"][0]["evaluator"] == {"type": "lt", "params": [1]}
    uids = [rule["uid"] for rule in alert_rules()]
    assert len(uids) == len(set(uids))


def test_each_alert_rule_is_well_formed() -> None:
    datasources = DATASOURCES.read_text()
    for rule in alert_rules():
        steps = {step["refId"]: step for step in rule["data"]}
        assert rule["condition"] in steps, rule["title"]
        for step in steps.values():
            if step["datasourceUid"] == "__expr__":
                assert step["model"]["expression"] in steps, rule["title"]
            else:  # a query of the provisioned Prometheus data source
                assert f"uid: {step['datasourceUid']}" in datasources, rule["title"]
                assert step["model"]["instant"] is True
        assert rule["annotations"]["summary"] and rule["for"]
