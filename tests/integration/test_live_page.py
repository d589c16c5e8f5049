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
        assert boiler[2:7] == ["3", "90.0", "108.3", "140.0", "140.0"], boiler  # n, min, mean, max, last
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


async def test_charts_show_alert_rates_sensor_history_and_forecasts(
    kafka_bootstrap: str, names: Names, worker_factory, tmp_path: Path
) -> None:
    worker = worker_factory()
    now = time.time()
    minute = (now // 60) * 60
    logins = [
        {"ts": minute - 120 + i, "ip": f"198.51.100.{n}", "user": f"u{i}", "success": False}
        for n in range(3)
        for i in range(7)
    ]
    # ten 60-s windows per sensor over the last ten minutes, one hot reading in the newest
    readings = [
        {"ts": minute - 600 + 60 * w + s, "sensor_id": sensor, "temperature": base + w + s / 10}
        for sensor, base in (("boiler-1", 80.0), ("room-7", 20.0))
        for w in range(10)
        for s in range(0, 50, 10)
    ] + [{"ts": minute + 1, "sensor_id": "boiler-1", "temperature": 130.0}]
    prices = [{"ts": now - 50 + i, "symbol": "ACME", "price": 100 + i * 0.5 + (i % 3)} for i in range(40)]
    await produce(kafka_bootstrap, names.topic("logins"), logins)
    await produce(kafka_bootstrap, names.topic("sensor-readings"), readings, key=lambda r: r["sensor_id"])
    await produce(kafka_bootstrap, names.topic("stock-prices"), prices, key=lambda r: r["symbol"])
    worker.wait_for("/sensors/boiler-1", lambda s, b: s == 200 and b["last"]["temperature"] == 130.0)
    worker.wait_for("/stocks/ACME", lambda s, b: s == 200 and b["last"] == prices[-1]["price"])
    worker.wait_for("/alerts", lambda s, b: s == 200 and {a["kind"] for a in b["alerts"]} >= {
        "brute_force", "high_temperature"})  # fmt: skip

    async with Browser(tmp_path / "chromium-profile", tmp_path / "chromium.log") as browser:
        page = await browser.open(worker.url + "/")
        # alert rate: bars for every kind that fired, with its count
        bars = await page.wait_for(
            "(() => { const b = [...document.querySelectorAll('rect.rate-bar')]"
            ".map(r => [r.dataset.kind, +r.dataset.count]); return b.length >= 2 ? b : null; })()",
            within=30,
        )
        by_kind: dict[str, int] = {}
        for kind, count in bars:
            by_kind[kind] = by_kind.get(kind, 0) + count
        published: dict[str, int] = {}
        for alert in worker.get("/alerts?limit=100")[1]["alerts"]:
            published[alert["kind"]] = published.get(alert["kind"], 0) + 1
        assert by_kind == published, bars
        assert by_kind["brute_force"] == 3 and by_kind["high_temperature"] == 1, bars

        # sensor sparkline: its last point is the newest window /sensors shows
        spark = await page.wait_for(
            "(() => { const s = document.querySelector('svg.spark[data-sensor-id=\"boiler-1\"]');"
            " return s && s.dataset.points ? {...s.dataset} : null; })()",
            within=30,
        )
        listed = next(s for s in worker.get("/sensors")[1]["sensors"] if s["sensor_id"] == "boiler-1")
        assert float(spark["lastMean"]) == listed["window"]["mean"]
        assert float(spark["lastStart"]) == listed["window"]["start"]
        assert int(spark["points"]) == len(worker.get("/sensors/boiler-1")[1]["windows"]) == 11

        # detail view of one sensor, on a click
        await page.evaluate("document.querySelector('tr.sensor-row[data-sensor-id=\"room-7\"]').click()")
        detail = await page.wait_for(
            "(() => { const s = document.getElementById('detail-chart');"
            " return s.dataset.sensorId === 'room-7' && s.dataset.points ? {...s.dataset} : null; })()"
        )
        assert int(detail["points"]) == 10
        assert not await page.evaluate("document.getElementById('sensor-detail').hidden")

        # stock chart: price ticks and the forecast point /stocks/ACME answers
        forecast = await page.wait_for(
            "document.querySelector('.stock[data-symbol=\"ACME\"] circle.forecast')?.dataset.value"
        )
        stock = worker.get("/stocks/ACME")[1]
        assert float(forecast) == stock["forecast"]
        ticks = await page.evaluate(
            "+document.querySelector('.stock[data-symbol=\"ACME\"] svg').dataset.ticks"
        )
        assert ticks == len([p for p in prices if p["ts"] > stock["ts"] - 60])
        assert (
            await page.evaluate("document.querySelectorAll('.stock[data-symbol=\"ACME\"] path.price').length")
            == 1
        )

        await page.send("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1,
                        mobile=False)  # fmt: skip
        screenshot = await page.screenshot(ARTIFACTS / "live-page-charts.png")
    assert screenshot.stat().st_size > 20_000
    # the README's first screen shows this page: kept current by this test
    (ROOT / "docs" / "live-page.png").write_bytes(screenshot.read_bytes())
