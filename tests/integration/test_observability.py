"""Observability end to end: a real Prometheus scrapes a real worker, JSON logs without secrets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from streamapp.dev.prometheus import DevPrometheus
from tests.dashboard import alert_rule_queries, dashboard_queries, exposed_metric_names, metric_names
from tests.integration.conftest import Names, Worker, free_port
from tests.integration.kafka_io import produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def _failed_logins(ip: str, base: float, count: int) -> list[dict]:
    return [{"ts": base + i, "ip": ip, "user": f"u{i}", "success": False} for i in range(count)]


def _metrics_text(worker: Worker) -> str:
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as response:
        return response.read().decode()


def _samples(text: str, name: str) -> dict[str, float]:
    """{label text: value} of every sample of ``name`` in a Prometheus text exposition."""
    pattern = rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$"
    return {m.group(1) or "": float(m.group(2)) for m in re.finditer(pattern, text, re.MULTILINE)}


def _streamapp(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STREAMAPP_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "streamapp.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _wait_for_query(prometheus: DevPrometheus, expr: str, expected: float, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    result: list = []
    while time.monotonic() < deadline:
        result = prometheus.query(expr)
        if result and float(result[0]["value"][1]) == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{expr} never answered {expected}; last {result}")


def _promtool_check_metrics(text: str) -> None:
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _wait_for_caught_up_lag(worker: Worker, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """One streamapp_consumer_lag sample per partition of ``topic``, all 0."""
    deadline = time.monotonic() + timeout
    lags: dict[str, float] = {}
    while time.monotonic() < deadline:
        samples = _samples(_metrics_text(worker), "streamapp_consumer_lag")
        lags = {labels: value for labels, value in samples.items() if f'topic="{topic}"' in labels}
        if len(lags) == partitions and not any(lags.values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"consumer lag of {topic}: {lags}")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_prometheus_scrapes_the_worker_and_promtool_accepts_its_metrics(
    kafka_bootstrap: str, names: Names, worker_factory, tmp_path: Path
) -> None:
    worker = worker_factory()
    base = (time.time() // 10) * 10 - 30
    logins = _failed_logins("203.0.113.66", base, 7) + [
        {"ts": base + i, "ip": "203.0.113.67", "user": "ok", "success": True} for i in range(5)
    ]
    await produce(kafka_bootstrap, names.topic("logins"), [*logins, b"{not json"])
    # a new app's first records wait for its topics and partitions: allow a loaded machine time
    worker.wait_for_metric("streamapp_alerts_total", lambda v: v == 1, timeout=90, kind="brute_force")
    worker.wait_for_metric("streamapp_events_total", lambda v: v == 12, topic="logins")
    worker.wait_for_metric("streamapp_dead_letters_total", lambda v: v == 1, topic=names.topic("logins"))
    # the default log format is readable text; the alert is logged once, with its key
    alert_lines = [line for line in worker.log_text().splitlines() if "alert brute_force" in line]
    assert len(alert_lines) == 1 and "key=203.0.113.66" in alert_lines[0], alert_lines
    assert not alert_lines[0].lstrip().startswith("{")

    # consumer lag: one sample per partition of the consumed input topic, 0 once caught up
    _wait_for_caught_up_lag(worker, names.topic("logins"), partitions=4)

    # promtool accepts what the worker serves
    text = _metrics_text(worker)
    _promtool_check_metrics(text)
    # every metric the dashboard queries is served by the worker
    queried = {name for query in dashboard_queries() + alert_rule_queries() for name in metric_names(query)}
    missing = queried - exposed_metric_names(text)
    assert not missing, f"the dashboard queries metrics the worker does not expose: {sorted(missing)}"

    home = tmp_path / "home"
    port = free_port()
    prometheus = DevPrometheus(home=home, port=port)
    target = f"127.0.0.1:{worker.web_port}"
    up = _streamapp("prometheus", "up", "--port", str(port), "--target", target, home=home)
    try:
        assert up.returncode == 0, up.stderr
        assert "ready" in up.stdout
        status = _streamapp("prometheus", "status", "--port", str(port), home=home)
        assert status.returncode == 0 and f"127.0.0.1:{worker.web_port}" in status.stdout

        logins_topic = names.topic("logins")
        _wait_for_query(prometheus, 'sum(streamapp_events_total{topic="logins"})', 12)
        _wait_for_query(prometheus, 'sum(streamapp_alerts_total{kind="brute_force"})', 1)
        _wait_for_query(prometheus, f'sum(streamapp_dead_letters_total{{topic="{logins_topic}"}})', 1)
        _wait_for_query(prometheus, "sum(streamapp_ready)", 1)
        _wait_for_query(prometheus, f'count(streamapp_consumer_lag{{topic="{logins_topic}"}})', 4)
        # every dashboard and alert-rule query is valid PromQL for this Prometheus
        for query in dashboard_queries() + alert_rule_queries():
            prometheus.query(query)

        pid = prometheus.status().pid
        assert pid is not None
        scrape = prometheus.query('scrape_duration_seconds{job="streamapp"}')
        figures = {
            "metrics_bytes": len(text.encode()),
            "metrics_samples": sum(1 for line in text.splitlines() if line and not line.startswith("#")),
            "scrape_duration_seconds": float(scrape[0]["value"][1]),
            "prometheus_rss_kib": _rss_kib(pid),
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "observability-figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        down = _streamapp("prometheus", "down", "--port", str(port), home=home)
    assert down.returncode == 0, down.stderr
    assert not prometheus.status().running


async def test_json_logs_carry_keys_and_never_secrets(
    kafka_bootstrap: str, names: Names, worker_factory
) -> None:
    token, sasl, pg = (f"{kind}-{uuid.uuid4().hex}" for kind in ("token", "sasl", "pg"))
    worker = worker_factory(
        STREAMAPP_LOG_FORMAT="json",
        STREAMAPP_WEB_TOKEN=token,
        STREAMAPP_SASL_PASSWORD=sasl,
        STREAMAPP_POSTGRES_DSN=f"postgresql://streamapp:{pg}@127.0.0.1:1/streamapp",
    )
    base = (time.time() // 10) * 10 - 30
    await produce(kafka_bootstrap, names.topic("logins"), _failed_logins("198.51.100.99", base, 6))
    # records that cannot be processed, keyed by the secrets: the dead-letter log line names the
    # key, so only the redacting filter keeps them out of the log
    await produce(kafka_bootstrap, names.topic("logins"), [b"{bad"])
    for secret in (token, sasl, pg):
        await _produce_keyed(kafka_bootstrap, names.topic("logins"), secret.encode(), b"{bad")
    # a new app's first records wait for its topics and partitions: allow a loaded machine time
    worker.wait_for_metric("streamapp_alerts_total", lambda v: v == 1, timeout=90, kind="brute_force")
    worker.wait_for_metric("streamapp_dead_letters_total", lambda v: v == 4, topic=names.topic("logins"))
    await asyncio.sleep(0.5)

    log = worker.log_text()
    for secret in (token, sasl, pg):
        assert secret not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert len(lines) > 20
    entries, not_json = [], []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            not_json.append(line)
    assert not not_json, f"{len(not_json)} lines are not JSON, e.g. {not_json[:3]}"
    assert all({"ts", "level", "logger", "message"} <= set(entry) for entry in entries)

    alerts = [e for e in entries if e["logger"] == "streamapp.pipeline.alerting"]
    assert len(alerts) == 1, alerts
    assert alerts[0]["kind"] == "brute_force" and alerts[0]["key"] == "198.51.100.99"
    assert alerts[0]["level"] == "info" and "198.51.100.99" in alerts[0]["message"]

    ingest = "streamapp.pipeline.ingest"
    dead = [e for e in entries if e["logger"] == ingest and "dead letter" in e["message"]]
    assert len(dead) == 4, dead
    assert sorted(str(e["key"]) for e in dead) == ["***", "***", "***", "None"]
    assert all(e["topic"] == names.topic("logins") and "offset" in e for e in dead)


async def _produce_keyed(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def test_live_stays_200_under_traffic_and_when_idle_under_exactly_once(
    kafka_bootstrap: str, names: Names, worker_factory
) -> None:
    """The liveness watchdog on a real worker: no false stall while records flow, nor after, when
    exactly-once leaves a commit marker past the last record of every internal partition."""
    token = "live-" + uuid.uuid4().hex
    worker = worker_factory(
        STREAMAPP_STALL_SECONDS="10", STREAMAPP_PROCESSING_GUARANTEE="exactly_once", STREAMAPP_WEB_TOKEN=token
    )
    assert worker.get("/live") == (200, {"status": "live"})  # an open path: no token needed
    base = (time.time() // 10) * 10 - 30
    for round_ in range(8):  # about 20 s of traffic on two topics, brute force from one IP
        ip = f"198.51.100.{round_}"
        await produce(
            kafka_bootstrap, names.topic("logins"), _failed_logins(ip, base, 7), key=lambda r: r["ip"]
        )
        readings = [{"ts": base + i, "sensor_id": f"s{i}", "temperature": 20.0} for i in range(20)]
        await produce(kafka_bootstrap, names.topic("sensor-readings"), readings, key=lambda r: r["sensor_id"])
        assert worker.get("/live") == (200, {"status": "live"}), worker.log_tail()
        await asyncio.sleep(2.5)
    worker.wait_for_metric("streamapp_alerts_total", lambda v: v >= 8, kind="brute_force")
    deadline = time.monotonic() + 25  # idle for more than twice STREAMAPP_STALL_SECONDS
    while time.monotonic() < deadline:
        assert worker.get("/live") == (200, {"status": "live"}), worker.log_tail()
        await asyncio.sleep(1)
    text = _metrics_text(worker)
    assert not _samples(text, "streamapp_partition_stalled")
    assert "stalled:" not in worker.log_text()
