"""The live page in headless Chromium: alerts and sensor windows appear as events arrive."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.chromium import Browser
from tests.integration.conftest import Names
from tests.integration.kafka_io import produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

_ALERT_ROWS = (
    "[...document.querySelectorAll('tr.alert-row')].map(tr => tr.dataset.kind + ' ' + tr.dataset.key)"
)
_SENSOR_ROWS = "[...document.querySelectorAll('tr.sensor-row')].map(tr => tr.dataset.sensorId)"


def _at_least(expression: str, count: int) -> str:
    """A JavaScript expression: the list, once it has ``count`` items, else null."""
    return f"(() => {{ const rows = {expression}; return rows.length >= {count} ? rows : null; }})()"


async def test_alert_rows_appear_in_chromium(
    kafka_bootstrap: str, names: Names, worker_factory, tmp_path: Path
) -> None:
    worker = worker_factory()
    async with Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log") as browser:
        page = await browser.open(worker.url + "/")
        await page.wait_for("document.getElementById('status').textContent.startsWith('updated')")
        assert await page.evaluate(_ALERT_ROWS) == []

        base = (time.time() // 60) * 60 - 120
        logins = [
            {"ts": base + i, "ip": ip, "user": f"u{i}", "success": False}
            for ip in ("192.0.2.10", "192.0.2.11")
            for i in range(7)
        ]
        readings = [
            {"ts": base + i, "sensor_id": sensor, "temperature": t}
            for sensor, temps in (("boiler-1", (90.0, 95.0, 140.0)), ("room-7", (21.0, 21.5, 22.0)))
            for i, t in enumerate(temps)
        ]
        await produce(kafka_bootstrap, names.topic("logins"), logins)
        await produce(kafka_bootstrap, names.topic("sensor-readings"), readings, key=lambda r: r["sensor_id"])

        # the page was loaded once, before the events: the rows come from its own polling
        alerts = await page.wait_for(_at_least(_ALERT_ROWS, 3), within=90)
        assert sorted(alerts) == [
            "brute_force 192.0.2.10",
            "brute_force 192.0.2.11",
            "high_temperature boiler-1",
        ]
        sensors = await page.wait_for(_at_least(_SENSOR_ROWS, 2), within=30)
        assert sorted(sensors) == ["boiler-1", "room-7"]
        boiler = await page.evaluate(
            "[...document.querySelector('tr[data-sensor-id=\"boiler-1\"]').cells].map(td => td.textContent)"
        )
        assert boiler[2:] == ["3", "90.0", "108.3", "140.0", "140.0"], boiler  # n, min, mean, max, last
        status = await page.evaluate("document.getElementById('status').textContent")
        assert status.startswith("updated") and "1 worker" in status

        screenshot = await page.screenshot(ARTIFACTS / "live-page.png")
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_sensors_lists_every_workers_sensors(
    kafka_bootstrap: str, names: Names, worker_factory
) -> None:
    first = worker_factory()
    second = worker_factory()
    # both workers own partitions once the rebalance settles
    first.wait_for("/sensors", lambda s, b: s == 200 and len(b["workers"]) == 2, timeout=60)
    base = (time.time() // 60) * 60 - 60
    sensor_ids = [f"probe-{i}" for i in range(12)]
    readings = [{"ts": base + 1, "sensor_id": s, "temperature": 20.0 + i} for i, s in enumerate(sensor_ids)]
    await produce(kafka_bootstrap, names.topic("sensor-readings"), readings, key=lambda r: r["sensor_id"])

    for worker in (first, second):
        body = worker.wait_for("/sensors", lambda s, b: s == 200 and len(b["sensors"]) == 12, timeout=60)
        assert sorted(s["sensor_id"] for s in body["sensors"]) == sorted(sensor_ids)
        assert set(body["workers"].values()) == {"ok"}
        assert {s["worker"] for s in body["sensors"]} == {first.url, second.url}
        probe = next(s for s in body["sensors"] if s["sensor_id"] == "probe-3")
        assert probe["last"]["temperature"] == 23.0
        assert probe["window"]["count"] == 1 and probe["window"]["end"] - probe["window"]["start"] == 60
    local = first.get("/sensors?scope=local")[1]["sensors"]
    assert 0 < len(local) < 12, "each worker owns only some of the sensors"

    # pages of 5 by sensor id, across both workers: every sensor once, then no next page
    for worker in (first, second):
        listed, cursor, pages = [], None, 0
        while True:
            status, body = worker.get("/sensors?limit=5" + (f"&cursor={cursor}" if cursor else ""))
            assert status == 200 and len(body["sensors"]) <= 5 and set(body["workers"].values()) == {"ok"}
            listed += [s["sensor_id"] for s in body["sensors"]]
            pages += 1
            cursor = body["next"]
            if cursor is None:
                break
        assert listed == sorted(sensor_ids) and pages <= 4
    assert first.get("/sensors?limit=1001")[0] == 400
    assert first.get("/sensors?cursor=!!")[0] == 400
