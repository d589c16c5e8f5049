"""The traffic generator without Kafka: valid records, recorded incidents, and a background that the
rules themselves (run in-process over the generated records) never alert on."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest

from streamapp.cli.traffic import generate as generate_command
from streamapp.models import (
    Alert,
    parse_login,
    parse_sensor_reading,
    parse_stock_price,
    parse_transaction,
)
from streamapp.ops.generate import SCENARIOS, Record, TrafficGenerator
from streamapp.rules import account_takeover, card_fraud, sliding_count, temperature
from streamapp.rules.brute_force import BRUTE_FORCE
from streamapp.settings import Thresholds

T0 = 1_767_225_600.25  # 2026-01-01, off the 10-s grid on purpose
PARSERS = {
    "logins": parse_login,
    "sensor-readings": parse_sensor_reading,
    "transactions": parse_transaction,
    "stock-prices": parse_stock_price,
}
KEY_FIELDS = {
    "logins": "ip",
    "sensor-readings": "sensor_id",
    "transactions": "card_id",
    "stock-prices": "symbol",
}


def run(scenario: str, seconds: int, per_second: int, seed: int) -> tuple[TrafficGenerator, list[Record]]:
    gen = TrafficGenerator(rng=random.Random(seed))
    records: list[Record] = []
    for second in range(seconds):
        for make in SCENARIOS[scenario]:
            records.extend(make(gen, T0 + second, per_second, second))
    return gen, records


class Rules:
    """The detection rules with default thresholds, applied as the agents apply them."""

    def __init__(self) -> None:
        self.limits = Thresholds()
        self.temperature = temperature.TemperatureThresholds()
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.newest = 0.0
        self.alerts: list[Alert] = []

    def state(self, table: str, key: str, new: Any) -> dict[str, Any]:
        return self.states.setdefault((table, key), new())

    def apply(self, record: Record) -> None:
        event = PARSERS[record.topic](record.value, None)
        self.newest = max(self.newest, event.ts)
        horizon = self.newest - 3600
        found: list[Alert] = []
        if record.topic == "logins":
            if not event.success:
                ips = self.state("ips", event.ip, sliding_count.new_state)
                found += BRUTE_FORCE.record(
                    ips, event.ip, event.ts, self.limits.brute_force_failures, horizon, 3600
                )[1]
            users = self.state("users", event.user, account_takeover.new_state)
            found += account_takeover.record_login(
                users, event.user, event.ts, event.success, self.limits.account_takeover_failures, horizon
            )[1]
        elif record.topic == "sensor-readings":
            sensor = self.state("sensors", event.sensor_id, temperature.new_state)
            found += temperature.record_reading(
                sensor, event.sensor_id, event.ts, event.temperature, self.temperature, horizon
            )[1]
            found += temperature.judge_readings(sensor, event.sensor_id, math.inf, self.temperature, horizon)
        elif record.topic == "transactions":
            card = self.state("cards", event.card_id, card_fraud.new_state)
            limits = self.limits
            found += card_fraud.CARD_VELOCITY.record(
                card, event.card_id, event.ts, limits.card_velocity_transactions, horizon, 3600
            )[1]
            card_fraud.hold_amount(card, event.txn_id, event.ts, event.amount)
            found += card_fraud.judge_amounts(
                card, event.card_id, math.inf, limits.amount_spike_factor,
                limits.amount_spike_min_transactions,
            )  # fmt: skip
        self.alerts += found


def test_every_record_is_a_valid_event_keyed_by_its_entity():
    _, records = run("all", seconds=70, per_second=20, seed=1)
    assert {r.topic for r in records} == set(PARSERS)
    for record in records:
        PARSERS[record.topic](record.value, None)  # raises InvalidEvent if not valid
        assert record.key == record.value[KEY_FIELDS[record.topic]]
    txn_ids = [r.value["txn_id"] for r in records if r.topic == "transactions"]
    assert len(set(txn_ids)) == len(txn_ids)
    assert len({r.value["symbol"] for r in records if r.topic == "stock-prices"}) == 10


def test_background_stays_realistic():
    _, records = run("all", seconds=60, per_second=50, seed=2)
    temps = [r.value["temperature"] for r in records if r.topic == "sensor-readings"]
    assert sum(19 <= t <= 21 for t in temps) / len(temps) > 0.97
    amounts = [r.value["amount"] for r in records if r.topic == "transactions"]
    assert sum(5 <= a <= 80 for a in amounts) / len(amounts) > 0.97
    logins = [r.value for r in records if r.topic == "logins"]
    assert len({v["ip"] for v in logins}) > 0.9 * len(logins)
    assert 0.01 < sum(not v["success"] for v in logins) / len(logins) < 0.2


@pytest.mark.parametrize("seed", [3, 11])
def test_rules_alert_exactly_on_the_injected_incidents(seed):
    gen, records = run("all", seconds=400, per_second=40, seed=seed)
    rules = Rules()
    for record in records:
        rules.apply(record)
    alerted = Counter((a.kind, a.key) for a in rules.alerts)
    injected = Counter((i.kind, i.key) for i in gen.incidents)
    # every incident fires exactly once, and nothing else does
    assert alerted == injected
    kinds = Counter(i.kind for i in gen.incidents)
    assert kinds == {
        "brute_force": 40,
        "account_takeover": 27,  # begun at 5, 20, ..., 395; the last success is due at 398
        "high_temperature": 20,
        "temperature_anomaly": 19,  # from 36 s on, every 20 s
        "card_velocity": 27,  # begun at 7, 22, ..., 397; the last 6th purchase is due at 399
        "amount_spike": 20,
    }, kinds


def test_incidents_are_recorded_when_their_decisive_record_is_emitted():
    gen, records = run("all", seconds=10, per_second=10, seed=5)
    # by second 9: the brute force at 3, the takeover begun at 5 (success at 8.5), the velocity
    # burst begun at 7 (6th purchase at 9.0); not yet the heat of the sensor that joined at 2 (10.5)
    # nor the spike of the card whose history came at 9 (11.0)
    assert sorted(i.kind for i in gen.incidents) == ["account_takeover", "brute_force", "card_velocity"]
    for incident in gen.incidents:
        assert any(r.value["ts"] == incident.at and incident.key in r.value.values() for r in records)
    takeover = next(i for i in gen.incidents if i.kind == "account_takeover")
    attempts = [r.value for r in records if r.topic == "logins" and r.value["user"] == takeover.key]
    assert [v["success"] for v in attempts] == [False] * 4 + [True]
    assert len({v["ip"] for v in attempts[:4]}) == 4
    assert attempts[-1]["ts"] == takeover.at


def test_a_first_anomaly_shows_within_a_minute():
    gen, _ = run("sensors", seconds=60, per_second=5, seed=7)
    anomalies = [i for i in gen.incidents if i.kind == "temperature_anomaly"]
    assert anomalies and anomalies[0].at - T0 <= 40


def test_seed_makes_traffic_reproducible_and_fresh_keys_differ_between_seeds():
    _, a = run("all", seconds=30, per_second=8, seed=42)
    _, b = run("all", seconds=30, per_second=8, seed=42)
    assert a == b
    gen_c, _ = run("logins", seconds=30, per_second=8, seed=43)
    gen_a, _ = run("logins", seconds=30, per_second=8, seed=42)
    assert {i.key for i in gen_a.incidents}.isdisjoint({i.key for i in gen_c.incidents})


def test_stocks_only_random_walk_without_incidents():
    gen, records = run("stocks", seconds=120, per_second=20, seed=9)
    assert gen.incidents == []
    prices: dict[str, list[float]] = {}
    for r in records:
        prices.setdefault(r.value["symbol"], []).append(r.value["price"])
    for series in prices.values():
        steps = [abs(b / a - 1) for a, b in zip(series, series[1:], strict=False)]
        assert max(steps) < 0.01 and len(set(series)) > 1


def test_cli_scenario_choices_are_the_generator_scenarios():
    scenario = next(p for p in generate_command.params if p.name == "scenario")
    assert set(scenario.type.choices) == set(SCENARIOS)  # type: ignore[attr-defined]
    assert {p.name for p in generate_command.params} >= {"seed", "incidents", "rate", "duration", "keys"}
