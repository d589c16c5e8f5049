"""Every detection rule on the real broker: just over fires once, at threshold not, bursts capped.

Records are produced without keys, round robin over all the partitions of the topic and in a
shuffled order, as a producer that does not know the entity sends them: the worker re-keys them
and each entity's events reach its rule out of event-time order. Within the grace
(STREAMAPP_GRACE_SECONDS) the answers must be those of event-time order; events of one entity
that span more than the grace are sent in event-time steps, as they happen.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from tests.integration.conftest import Worker
from tests.integration.kafka_io import (
    produce_spread,
    produce_spread_in_steps,
    read_all,
    read_until,
    shuffled,
)

pytestmark = pytest.mark.integration

#: grace of the tests with held rules (amount_spike, temperature_anomaly): their alerts come
#: after this many seconds of quiet wall time
HELD_GRACE = 30
#: event-time width of one production step when an entity's events span more than that grace
STEP = 25


def _minute(ago: float) -> float:
    """The start of an epoch-aligned minute about ``ago`` seconds back."""
    return (time.time() - ago) // 60 * 60


def _partitions(worker: Worker) -> int:
    """The partition count the worker creates its input topics with."""
    return int(worker.env["STREAMAPP_PARTITIONS"])


async def _alerts(bootstrap: str, topic: str, expected: int, within: float = 60.0) -> Counter:
    await read_until(bootstrap, topic, lambda recs: len(recs) >= expected, within=within)
    records = await read_all(bootstrap, topic, settle=3.0)
    return Counter((orjson.loads(r.value)["kind"], r.key.decode()) for r in records)


def _views_count(
    worker: Worker, field: str, path: str, count: Callable[[dict], int]
) -> Callable[[list[dict]], None]:
    """Wait until every entity's view counts the events sent so far."""

    def applied(sent: list[dict]) -> None:
        for entity, n in Counter(e[field] for e in sent).items():
            worker.wait_for(path.format(entity), lambda s, b, n=n: s == 200 and count(b) == n, timeout=90)

    return applied


async def test_logins_brute_force_and_account_takeover(kafka_bootstrap, names, worker_factory):
    # a grace of 10 minutes: the old failures below (361 s before their success) may arrive in
    # any order too; the rules that use it here judge at once, so it costs no latency
    worker = worker_factory(STREAMAPP_GRACE_SECONDS="600")
    base = _minute(600)

    def login(ip: str, user: str, ts: float, success: bool = False) -> dict:
        return {"ts": ts, "ip": ip, "user": user, "success": success}

    logins = (
        # brute_force: 6 failures, 5, 200 in 30 s
        [login("10.9.0.6", f"bf6-{i}", base + i) for i in range(6)]
        + [login("10.9.0.5", f"bf5-{i}", base + i) for i in range(5)]
        + [login("10.9.0.200", f"bf200-{i % 7}", base + i * 0.15) for i in range(200)]
        # account_takeover: 3 failures then success; 2 then success; 50 then success
        + [login(f"10.8.1.{i}", "ato-3", base + i * 10) for i in range(3)]
        + [login("10.8.2.1", "ato-3", base + 40, success=True)]
        + [login(f"10.8.3.{i}", "ato-2", base + i * 10) for i in range(2)]
        + [login("10.8.4.1", "ato-2", base + 40, success=True)]
        + [login(f"10.7.{i // 250}.{i % 250}", "ato-50", base + i) for i in range(50)]
        + [login("10.8.5.1", "ato-50", base + 55, success=True)]
        # the lookback is 5 minutes of event time: 3 failures 6 minutes before a success do not
        # count, whether they arrive before or after it
        + [login(f"10.8.6.{i}", "ato-old", base - 360 + i) for i in range(3)]
        + [login("10.8.7.1", "ato-old", base + 1, success=True)]
    )
    await produce_spread(kafka_bootstrap, names.topic("logins"), shuffled(logins, 1), _partitions(worker))

    alerts = await _alerts(kafka_bootstrap, names.topic("alerts"), expected=4)
    assert alerts == Counter(
        {
            ("brute_force", "10.9.0.6"): 1,
            ("brute_force", "10.9.0.200"): 1,
            ("account_takeover", "ato-3"): 1,
            ("account_takeover", "ato-50"): 1,
        }
    )
    ips = worker.wait_for("/ips/10.9.0.200", lambda s, b: s == 200)
    assert sum(w["failed"] for w in ips["windows"]) == 200
    # every event counted: none was later than the grace
    worker.wait_for_metric("streamapp_events_total", lambda v: v == len(logins), topic="logins")
    assert worker.metric("streamapp_late_events_total", topic=names.topic("logins")) == 0


async def test_sensor_rules_and_window_view(kafka_bootstrap, names, worker_factory):
    worker = worker_factory(STREAMAPP_GRACE_SECONDS=str(HELD_GRACE))
    base = _minute(900)
    history = [19.5, 20.5] * 15  # mean 20, std 0.5 exactly

    def reading(sensor: str, ts: float, temperature: float) -> dict:
        return {"ts": ts, "sensor_id": sensor, "temperature": temperature}

    history_of = {"anom-6sd": 30, "anom-4sd": 30, "anom-29": 29, "anom-burst": 30}
    readings = (
        # the anomaly rule compares a reading with the readings before it: 30 of the five minutes
        [
            reading(sensor, base - 300 + i * 10, t)
            for sensor, n in history_of.items()
            for i, t in enumerate(history[:n])
        ]
        # high_temperature: 100.5 fires, 100 does not, 30 hot readings in one minute fire once,
        # and hot readings in two minutes fire twice
        + [reading("hot-1", base + 1, 100.5)]
        + [reading("hot-at", base + 1, 100.0)]
        + [reading("hot-30", base + i, 150.0) for i in range(30)]
        + [reading("hot-2min", base + 1, 101.0), reading("hot-2min", base + 61, 101.0)]
        # temperature_anomaly: after the 30 readings of the five minutes before
        + [reading("anom-6sd", base + 5, 23.0)]
        + [reading("anom-4sd", base + 5, 22.0)]  # exactly 4 standard deviations: not more
        + [reading("anom-29", base + 5, 40.0)]  # far out, but only 29 readings before it
        + [reading("anom-burst", base + 5 + i, 60.0) for i in range(10)]
    )
    # five minutes of history: sent as it happens, in steps shorter than the grace
    await produce_spread_in_steps(
        kafka_bootstrap, names.topic("sensor-readings"), readings, _partitions(worker), STEP,
        _views_count(worker, "sensor_id", "/sensors/{}", lambda b: sum(w["count"] for w in b["windows"])),
    )  # fmt: skip
    # temperature_anomaly judges a reading once the sensor is quiet for the grace
    alerts = await _alerts(kafka_bootstrap, names.topic("alerts"), expected=6, within=HELD_GRACE + 90)
    assert alerts == Counter(
        {
            ("high_temperature", "hot-1"): 1,
            ("high_temperature", "hot-30"): 1,
            ("high_temperature", "hot-2min"): 2,
            ("temperature_anomaly", "anom-6sd"): 1,
            ("temperature_anomaly", "anom-burst"): 1,
        }
    )

    # exact window values: 30 readings of 19.5/20.5 at 10-s steps span five minutes
    body = worker.wait_for("/sensors/anom-4sd", lambda s, b: s == 200)
    assert body["last"] == {"ts": base + 5, "temperature": 22.0}
    windows = body["windows"]
    assert [w["start"] for w in windows] == [base - 60 * i for i in range(6)]  # newest first
    assert windows[0] == {"start": base, "end": base + 60, "count": 1, "min": 22.0, "max": 22.0, "mean": 22.0}
    assert windows[1] == {
        "start": base - 60, "end": base, "count": 6, "min": 19.5, "max": 20.5, "mean": 20.0,
    }  # fmt: skip
    assert sum(w["count"] for w in windows) == 31
    assert worker.metric("streamapp_late_events_total", topic=names.topic("sensor-readings")) == 0


async def test_card_rules_and_card_view(kafka_bootstrap, names, worker_factory):
    worker = worker_factory(STREAMAPP_GRACE_SECONDS=str(HELD_GRACE))
    base = _minute(1200)

    def txn(card: str, n: int, ts: float, amount: float) -> dict:
        return {"ts": ts, "txn_id": f"{card}-{n}", "card_id": card, "amount": amount, "merchant": "m"}

    transactions = (
        # amount_spike compares with the mean of the transactions before it in event time
        [txn("spike", i, base + i * 15, 10.0) for i in range(5)]
        + [txn("spike-at", i, base + i * 15, 10.0) for i in range(5)]
        + [txn("spike-4", i, base + i * 15, 10.0) for i in range(4)]
        + [txn("spike-many", i, base + i * 15, 10.0) for i in range(5)]
        # card_velocity: 6 in 10 s fires, 5 does not, 50 in 20 s fires once
        + [txn("vel-6", i, base + i, 20.0) for i in range(6)]
        + [txn("vel-5", i, base + i, 20.0) for i in range(5)]
        + [txn("vel-50", i, base + i * 0.4, 20.0) for i in range(50)]
        # amount_spike (transactions 15 s apart: never a velocity burst)
        + [txn("spike", 5, base + 75, 100.01)]  # just over 10 x the mean of 10
        + [txn("spike-at", 5, base + 75, 100.0)]  # exactly 10 x: not above
        + [txn("spike-4", 4, base + 60, 1000.0)]  # only 4 earlier transactions
        + [txn("spike-many", 5 + i, base + 75 + i * 15, 1000.0) for i in range(20)]
    )
    # spike-many spans five minutes: sent as it happens, in steps shorter than the grace
    await produce_spread_in_steps(
        kafka_bootstrap, names.topic("transactions"), transactions, _partitions(worker), STEP,
        _views_count(worker, "card_id", "/cards/{}", lambda b: b["count"]),
    )  # fmt: skip
    # amount_spike judges a transaction once the card is quiet for the grace
    alerts = await _alerts(kafka_bootstrap, names.topic("alerts"), expected=4, within=HELD_GRACE + 90)
    assert alerts == Counter(
        {
            ("card_velocity", "vel-6"): 1,
            ("card_velocity", "vel-50"): 1,
            ("amount_spike", "spike"): 1,
            ("amount_spike", "spike-many"): 1,
        }
    )
    # recent transactions for the view's 60-s count, stamped just before they are sent (stamps
    # taken at the test's start could be older than 60 s by the time the view is read)
    sent = time.time()
    recent = [txn("recent", i, sent - 5 + i, 10.0 * (i + 1)) for i in range(4)]
    await produce_spread(
        kafka_bootstrap, names.topic("transactions"), shuffled(recent, 7), _partitions(worker)
    )
    body = worker.wait_for("/cards/recent", lambda s, b: s == 200 and b["count"] == 4)
    assert body == {"card_id": "recent", "transactions_60s": 4, "count": 4, "mean_amount": 25.0}
    body = worker.wait_for("/cards/spike", lambda s, b: s == 200 and b["count"] == 6)
    assert body["mean_amount"] == pytest.approx((50 + 100.01) / 6)
    assert body["transactions_60s"] == 0  # all of them are 20 minutes old
    assert worker.get("/cards/no-such-card")[0] == 404
    assert worker.metric("streamapp_late_events_total", topic=names.topic("transactions")) == 0


async def test_stock_analytics_on_a_known_series(kafka_bootstrap, names, worker_factory):
    # the five ticks span 75 s: a grace of 2 minutes lets them arrive in any order
    worker = worker_factory(STREAMAPP_GRACE_SECONDS="120")
    base = _minute(300)
    prices = [10.0, 11.0, 12.0, 13.0]
    ticks = [{"ts": base + i * 10, "symbol": "ACME", "price": p} for i, p in enumerate(prices)]
    ticks.append({"ts": base + 75, "symbol": "ACME", "price": 14.0})  # pushes the first two out
    # the last tick first, then the others shuffled, spread over all partitions
    ordered = [ticks[-1], *shuffled(ticks[:-1], 4)]
    await produce_spread(kafka_bootstrap, names.topic("stock-prices"), ordered, _partitions(worker))

    # by hand: EWMA alpha 0.3; Holt alpha 0.3 beta 0.1, level starts at the first price, trend 0
    ewma, level, trend = 10.0, 10.0, 0.0
    for price in prices[1:] + [14.0]:
        ewma = 0.3 * price + 0.7 * ewma
        new_level = 0.3 * price + 0.7 * (level + trend)
        trend = 0.1 * (new_level - level) + 0.9 * trend
        level = new_level
    # the EWMA of all five ticks, in event-time order: wait_for fails if the view never shows it
    body = worker.wait_for("/stocks/ACME", lambda s, b: s == 200 and b["ewma"] == pytest.approx(ewma))
    assert body["symbol"] == "ACME" and body["ts"] == base + 75
    assert body["sma_60s"] == pytest.approx((12.0 + 13.0 + 14.0) / 3)  # ticks after base + 15
    assert body["forecast"] == pytest.approx(level + trend)
    assert worker.get("/stocks/NOPE")[0] == 404


async def test_alerts_view_lists_newest_first_with_filters(kafka_bootstrap, names, worker_factory):
    worker = worker_factory()
    base = _minute(600)
    logins = [
        {"ts": base + minute * 120 + i, "ip": f"10.1.1.{minute}", "user": "x", "success": False}
        for minute in range(3)
        for i in range(6)
    ]
    await produce_spread(kafka_bootstrap, names.topic("logins"), shuffled(logins, 5), _partitions(worker))
    body = worker.wait_for("/alerts?kind=brute_force", lambda s, b: s == 200 and len(b["alerts"]) == 3)
    assert [a["key"] for a in body["alerts"]] == ["10.1.1.2", "10.1.1.1", "10.1.1.0"]
    body = worker.get("/alerts?key=10.1.1.1")[1]
    assert [a["key"] for a in body["alerts"]] == ["10.1.1.1"]
    assert len(worker.get("/alerts?limit=2")[1]["alerts"]) == 2
    assert worker.get("/alerts?kind=card_velocity")[1] == {"alerts": []}
    assert worker.get("/alerts?limit=0")[0] == 400


async def test_a_rule_left_out_of_streamapp_rules_does_not_run(kafka_bootstrap, names, worker_factory):
    worker = worker_factory(STREAMAPP_RULES="brute_force")
    base = _minute(600)

    def login(ip: str, user: str, ts: float, success: bool = False) -> dict:
        return {"ts": ts, "ip": ip, "user": user, "success": success}

    # an account takeover of "ato-off" and a brute force (the alert this test waits for)
    logins = (
        [login(f"10.6.1.{i}", "ato-off", base + i) for i in range(4)]
        + [login("10.6.2.1", "ato-off", base + 10, success=True)]
        + [login("10.6.0.6", f"bf-{i}", base + 20 + i) for i in range(6)]
    )
    await produce_spread(kafka_bootstrap, names.topic("logins"), shuffled(logins, 6), _partitions(worker))

    # every login was routed before the alerts are counted
    worker.wait_for_metric("streamapp_events_total", lambda v: v == len(logins), topic="logins")
    alerts = await _alerts(kafka_bootstrap, names.topic("alerts"), expected=1)
    assert alerts == Counter({("brute_force", "10.6.0.6"): 1})
    # account takeover got nothing: it does not run, no event applied to it, no alert counted
    assert [row["name"] for row in worker.get("/detections")[1]["detections"]] == ["brute_force"]
    assert worker.metric("streamapp_detection_events_total", detection="account_takeover") == 0.0
    assert worker.metric("streamapp_alerts_total", kind="account_takeover") == 0.0
    assert worker.metric("streamapp_alerts_total", kind="brute_force") == 1.0
