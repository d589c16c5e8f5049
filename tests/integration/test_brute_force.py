"""brute_force end to end: logins produced to the real broker, alerts read back from `alerts`.

Logins are produced without keys, round robin over all partitions and shuffled, as a producer
that does not know the IP sends them (the keyed, newest-first case is in test_event_time).
"""

from __future__ import annotations

import time

import orjson
import pytest

from tests.integration.kafka_io import produce_spread, read_all, read_until, shuffled

pytestmark = pytest.mark.integration


def _failed(ip: str, ts: float, user: str = "root") -> dict:
    return {"ts": ts, "ip": ip, "user": user, "success": False}


async def test_burst_over_threshold_alerts_once_and_threshold_does_not(
    kafka_bootstrap, names, worker_factory
):
    worker = worker_factory()
    # all events inside one aligned 10-s bucket, so every 60-s window sees all of them
    base = (time.time() // 10) * 10 - 60
    at_threshold = [_failed("198.51.100.5", base + i * 0.5) for i in range(5)]
    over = [_failed("198.51.100.6", base + i * 0.5) for i in range(6)]
    far_over = [_failed("198.51.100.7", base + i * 0.1) for i in range(60)]
    noise = [
        {"ts": base + i * 0.1, "ip": "198.51.100.8", "user": f"u{i}", "success": True} for i in range(40)
    ]
    logins = shuffled(at_threshold + noise + over + far_over, 9)
    await produce_spread(
        kafka_bootstrap, names.topic("logins"), logins, int(worker.env["STREAMAPP_PARTITIONS"])
    )

    # the at-threshold IP was processed (5 failures counted) ...
    worker.wait_for("/ips/198.51.100.5", lambda s, b: s == 200 and b["windows"][0]["failed"] == 5)
    worker.wait_for("/ips/198.51.100.7", lambda s, b: s == 200 and b["windows"][0]["failed"] == 60)
    # ... successes are not failures
    assert worker.get("/ips/198.51.100.8")[0] == 404

    await read_until(kafka_bootstrap, names.topic("alerts"), lambda recs: len(recs) >= 2)
    alerts = [orjson.loads(r.value) for r in await read_all(kafka_bootstrap, names.topic("alerts"))]
    by_ip = {a["key"]: a for a in alerts}
    assert sorted(a["key"] for a in alerts) == ["198.51.100.6", "198.51.100.7"], alerts
    alert = by_ip["198.51.100.6"]
    assert alert["kind"] == "brute_force"
    assert alert["value"] == 6 and alert["threshold"] == 5
    assert alert["window_end"] - alert["window_start"] == 60
    assert alert["window_start"] <= base < alert["window_end"]
    assert len(alert["alert_id"]) == 20


async def test_alert_record_is_keyed_by_ip_and_worker_answers_health(kafka_bootstrap, names, worker_factory):
    worker = worker_factory()
    assert worker.get("/health") == (200, {"status": "ok"})
    base = (time.time() // 10) * 10 - 30
    logins = shuffled([_failed("192.0.2.44", base + i) for i in range(7)], 3)
    await produce_spread(
        kafka_bootstrap, names.topic("logins"), logins, int(worker.env["STREAMAPP_PARTITIONS"])
    )
    records = await read_until(kafka_bootstrap, names.topic("alerts"), lambda recs: len(recs) >= 1)
    assert records[0].key == b"192.0.2.44"
    alert = orjson.loads(records[0].value)
    assert set(alert) == {
        "alert_id", "kind", "key", "ts", "window_start", "window_end", "value", "threshold",
        "detail",
    }  # fmt: skip
    assert alert["key"] == "192.0.2.44" and alert["value"] == 6
    status, body = worker.get("/ips/192.0.2.99")
    assert status == 404 and "error" in body
