"""With no shipped detection of the worker's own (STREAMAPP_RULES=none) and the shipped temperature
and card specs applied, `/sensors/{id}`, `/sensors`, `/cards/{id}` and the sinks'
`<app>-sensor-windows` answer from the specs' states what the rule modules' states (streamapp.rules)
give on the same events (issue 17).

Two workers (each answers for the other's keys); readings and transactions with hostile-looking
ids produced unkeyed over every partition, shuffled within the grace.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from streamapp.rules import card_fraud, temperature
from tests.integration.conftest import Names, Worker
from tests.integration.kafka_io import produce_spread_in_steps, read_all
from tests.integration.test_shipped_specs import HOSTILE, _distinct_times, _transactions, _ts, _wait_running
from tests.unit.detections.test_shipped_specs import by_rule_run

pytestmark = pytest.mark.integration

PARTITIONS = 4
SENSOR_SPECS = ("high_temperature", "temperature_anomaly")
CARD_SPECS = ("card_velocity", "amount_spike")
SPAN = 420.0
STEP = 45.0  # narrower than the specs' grace (60 s)


def _readings(base: float, rnd: random.Random) -> list[dict[str, Any]]:
    """Readings of a dozen sensors over several 60-s windows; binary fractions, so that every
    window's sum (and mean) is exact in any order."""
    sensors = [f"boiler-{i}" for i in range(8)] + HOSTILE[:4]
    palette = [19.5, 20.0, 21.25, 22.75, 101.5]
    events = [
        {"ts": _ts(rnd, base, 0, SPAN), "sensor_id": sensor, "temperature": rnd.choice(palette)}
        for sensor in sensors
        for _ in range(rnd.randrange(5, 30))
    ]
    return _distinct_times(events)


def _applied(workers: list[Worker], names: tuple[str, ...], count: int) -> Callable[[list[Any]], None]:
    def wait(sent: list[Any]) -> None:
        deadline = time.monotonic() + 30
        while any(
            sum(w.metric("streamapp_detection_events_total", detection=n) for w in workers) < len(sent)
            for n in names
        ):
            assert time.monotonic() < deadline, f"not every event of {names} applied"
            time.sleep(0.2)

    return wait


def test_views_and_sensor_windows_come_from_the_applied_specs_states(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker]
) -> None:
    env = {"STREAMAPP_RULES": "none"}
    workers = [worker_factory(ready=False, **env), worker_factory(ready=False, **env)]
    for worker in workers:
        worker.wait_ready()
    specs = SENSOR_SPECS + CARD_SPECS
    applied = workers[0].detections("apply", *(f"detections/{name}.yaml" for name in specs))
    assert applied.returncode == 0, applied.stderr
    _wait_running(workers, specs)

    seed = random.randrange(1_000_000)
    rnd = random.Random(seed)
    base = (time.time() - 2700) // 60 * 60 + rnd.randrange(60)
    readings, txns = _readings(base, rnd), _transactions(base, rnd)

    async def produce() -> None:
        await produce_spread_in_steps(
            kafka_bootstrap, names.topic("sensor-readings"), readings, PARTITIONS, STEP,
            _applied(workers, SENSOR_SPECS, len(readings)), seed,
        )  # fmt: skip
        await produce_spread_in_steps(
            kafka_bootstrap, names.topic("transactions"), txns, PARTITIONS, STEP,
            _applied(workers, CARD_SPECS, len(txns)), seed,
        )  # fmt: skip

    asyncio.run(produce())
    context = f"seed {seed}, base {base}"

    # the rule modules' states on the same events, in event-time order
    sensors = by_rule_run("high_temperature", sorted(readings, key=lambda e: e["ts"]))[2]
    cards = by_rule_run("amount_spike", sorted(txns, key=lambda e: e["ts"]))[2]
    assert set(HOSTILE[:4]) <= set(sensors) and set(HOSTILE) <= set(cards), context

    for sensor, state in sensors.items():
        ts, reading = state["last"]
        expected = {"sensor_id": sensor, "last": {"ts": ts, "temperature": reading},
                    "windows": temperature.window_view(state, float("-inf"))}  # fmt: skip
        assert len(expected["windows"]) >= 2, context
        for worker in workers:
            status, body = worker.get(f"/sensors/{quote(sensor, safe='')}")
            assert (status, body) == (200, expected), (sensor, context)
    for card, state in cards.items():
        count, total = card_fraud.card_totals(state)
        # the events are 45 minutes old: none in the last 60 s
        expected = {"card_id": card, "transactions_60s": 0, "count": count, "mean_amount": total / count}
        for worker in workers:
            status, body = worker.get(f"/cards/{quote(card, safe='')}")
            assert (status, body) == (200, expected), (card, context)
    for worker in workers:
        assert worker.get("/sensors/never-seen")[0] == 404
        assert worker.get("/cards/never-seen")[0] == 404

    # the list: every sensor once, from both workers, with its newest window
    status, body = workers[0].get("/sensors?limit=1000")
    assert status == 200 and set(body["workers"].values()) == {"ok"} and len(body["workers"]) == 2, body
    assert [s["sensor_id"] for s in body["sensors"]] == sorted(sensors, key=str.encode), context
    for listed in body["sensors"]:
        assert listed["window"] == temperature.window_view(sensors[listed["sensor_id"]], float("-inf"))[0]
    assert {listed["worker"] for listed in body["sensors"]} == {w.url for w in workers}

    # the sinks' feed: each window's last record is the window as the rule module's state has it
    records = asyncio.run(read_all(kafka_bootstrap, f"{names.app_id}-sensor-windows", settle=2))
    last: dict[tuple[str, float], dict[str, Any]] = {}
    for record in records:
        window = orjson.loads(record.value)
        assert record.key == window["sensor_id"].encode()
        last[(window["sensor_id"], window["start"])] = window
    expected_windows = {
        (sensor, w["start"]): w
        for sensor, state in sensors.items()
        for w in temperature.window_records(state, sensor, {w[0] for w in state["windows"]})
    }
    assert last == expected_windows, context
