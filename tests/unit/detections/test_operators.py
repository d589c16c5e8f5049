"""The operator vocabulary: what validate refuses, which operator a spec gets, and the engine's hook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streamapp.detections.engine import Engine
from streamapp.detections.operators import SENSOR_DETECTIONS, running_spec
from streamapp.detections.spec import SpecInvalid, load_file, load_text, operator_of

ROOT = Path(__file__).resolve().parents[3]
T = 1_699_999_980.0


def _shipped(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "detections" / f"{name}.yaml").read_text())
    return data


def _errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        load_text(orjson.dumps(data), "d.yaml")
    return [e.reason for e in caught.value.errors]


def test_each_shipped_spec_gets_its_rule_and_the_others_the_generic_engine() -> None:
    expected = {
        "brute_force": "stepped_count", "card_velocity": "stepped_count",
        "account_takeover": "eager_sequence", "high_temperature": "eager_max",
        "temperature_anomaly": "windowed_zscore", "amount_spike": "keyed_ratio",
        "port_scan": None, "silent_sensor": None,
    }  # fmt: skip
    for name, operator in expected.items():
        assert load_file(ROOT / "detections" / f"{name}.yaml").operator == operator, name
        assert (Engine(load_file(ROOT / "detections" / f"{name}.yaml")).operator is None) == (
            operator is None
        )


def test_the_shapes_of_specs_without_the_new_words_did_not_change() -> None:
    # (computed before operators existed: the states of applied specs must not start afresh)
    assert load_file(ROOT / "detections" / "port_scan.yaml").shape == "66b88631f688e5e4"
    assert load_file(ROOT / "detections" / "silent_sensor.yaml").shape == "e56f143b4a2f08c4"


def test_evaluate_and_the_alert_id_are_part_of_the_shape() -> None:
    eager = _shipped("high_temperature")
    held = {k: v for k, v in eager.items() if k != "evaluate"}
    assert load_text(orjson.dumps(eager)).shape != load_text(orjson.dumps(held)).shape
    keyed = _shipped("amount_spike")
    plain = {**keyed, "alert": {"text": "{key} {value}"}}
    assert load_text(orjson.dumps(keyed)).shape != load_text(orjson.dumps(plain)).shape


@pytest.mark.parametrize(
    ("name", "change", "reason"),
    [
        ("brute_force", {"window": {"type": "sliding", "size": 120, "step": 10}}, "60 s in 10-s steps"),
        ("brute_force", {"window": {"type": "hopping", "size": 60, "advance": 10, "step": 10}},
         "only a sliding"),
        ("brute_force", {"evaluate": "held"}, "add evaluate: eager"),
        ("brute_force", {"aggregate": {"fn": "sum", "field": "ts"}}, "aggregate fn count"),
        ("brute_force", {"condition": {"type": "threshold", "op": ">=", "value": 5}},
         "condition threshold >"),
        ("brute_force", {"throttle": 30}, "throttle is its size or absent"),
        ("account_takeover", {"throttle": 60}, "takes no throttle"),
        ("account_takeover", {"condition": {**_shipped("account_takeover")["condition"], "within": 600}},
         "looks back 300 s"),
        ("high_temperature", {"aggregate": {"fn": "mean", "field": "temperature"}}, "can only make true"),
        ("high_temperature", {"condition": {"type": "threshold", "op": "<", "value": 0}},
         "can only make true"),
        ("temperature_anomaly", {"window": {"type": "tumbling", "size": 30}}, "tumbling, 60 s"),
        ("temperature_anomaly", {"evaluate": "eager"}, "can only make true"),
        ("amount_spike", {"evaluate": "eager"}, "can only make true"),
        ("amount_spike", {"alert": {"id": "amount", "text": "x"}}, "must be a string field"),
        ("port_scan", {"alert": {"id": "src_ip", "text": "x"}}, "only a ratio condition takes an alert id"),
        ("amount_spike", {"alert": {"id": "txn_id", "text": "{sigmas}"}}, "unknown name {sigmas}"),
        ("port_scan", {"alert": {"text": "{mean}"}}, "unknown name {mean}"),
    ],
)  # fmt: skip
def test_validate_refuses_what_the_rules_do_not_implement(
    name: str, change: dict[str, Any], reason: str
) -> None:
    errors = _errors({**_shipped(name), **change})
    assert any(reason in e for e in errors), errors


def test_held_operators_texts_name_only_the_fields_they_keep() -> None:
    spike = _shipped("amount_spike")
    spike["source"]["fields"]["merchant"] = "string"
    spike["alert"]["text"] = "{merchant}"
    assert any("unknown name {merchant}" in e for e in _errors(spike))
    burst = _shipped("brute_force")  # an eager count alerts at the arriving event: every field
    burst["alert"]["text"] = "{user} {ip} {success}"
    assert load_text(orjson.dumps(burst)).operator == "stepped_count"


def test_operator_of_needs_no_validated_spec() -> None:
    assert operator_of({"condition": {"type": "zscore"}, "alert": {}}) is None
    assert operator_of({"condition": {"type": "ratio"}, "alert": {"id": "x"}}) == "keyed_ratio"


def test_a_redelivered_record_counts_once_and_state_is_the_rules() -> None:
    engine = Engine(load_file(ROOT / "detections" / "brute_force.yaml"))
    state = engine.new_state()
    assert {"buckets", "alerted", "shape", "clock"} <= set(state)
    fields = {"ts": T, "ip": "10.0.0.1", "user": "u", "success": False}
    for offset in range(5):
        assert (
            engine.offer(state, "10.0.0.1", T + offset, {**fields, "ts": T + offset}, src=(0, offset)) == []
        )
    assert engine.offer(state, "10.0.0.1", T + 4, {**fields, "ts": T + 4}, src=(0, 4)) is None  # again
    alerts = engine.offer(state, "10.0.0.1", T + 5, {**fields, "ts": T + 5}, src=(0, 5))
    assert isinstance(alerts, list)
    (alert,) = alerts
    assert (alert.kind, alert.value, alert.threshold) == ("brute_force", 6, 5)
    assert engine.offer(state, "10.0.0.1", T + 7, {**fields, "success": True}) is None  # where: failures only
    late = engine.offer(state, "10.0.0.1", T - 60, {**fields, "ts": T - 60})
    assert late is not None and not isinstance(late, list) and "behind the newest" in late.reason


def test_held_operators_are_ticked_by_the_watermark_and_settle() -> None:
    engine = Engine(load_file(ROOT / "detections" / "amount_spike.yaml"))
    state = engine.new_state()
    for i in range(6):
        txn = {"ts": T + i, "txn_id": f"t{i}", "card_id": "c", "amount": 10.0}
        assert engine.offer(state, "c", T + i, txn) == []
    big = {"ts": T + 10, "txn_id": "big", "card_id": "c", "amount": 1000.0}
    assert engine.offer(state, "c", T + 10, big) == []  # held for the grace
    summary = {"pending": state["pending"][:1]}  # what run-detections' tick index keeps
    assert not engine.needs_tick(summary, T) and engine.needs_tick(summary, T + 1)
    assert engine.tick(state, "c", T + 10) == []  # the six small ones judged: no spike
    (alert,) = engine.tick(state, "c", T + 11)
    assert (
        alert.detail == "transaction big of 1000.00 on card c is 100.0 x its mean 10.00 over 6 transactions"
    )
    assert state["pending"] == [] and state["settled"] == T + 10
    assert engine.offer(state, "c", T + 10, {**big, "txn_id": "again"}) is not None  # settled: late


def test_evaluate_held_written_out_keeps_the_shape() -> None:
    port_scan = yaml.safe_load((ROOT / "detections" / "port_scan.yaml").read_text())
    assert load_text(orjson.dumps({**port_scan, "evaluate": "held"})).shape == "66b88631f688e5e4"


def test_adopt_keeps_an_operator_state_as_it_is() -> None:
    # a card's held [ts, txn_id, amount] is the rule's layout: nothing may convert it as held events
    engine = Engine(load_file(ROOT / "detections" / "amount_spike.yaml"))
    state = engine.new_state()
    engine.offer(state, "c", T, {"ts": T, "txn_id": "t1", "card_id": "c", "amount": 10.0})
    stored = orjson.loads(orjson.dumps(state))
    assert stored["pending"] == [[T, "t1", 10.0]]
    assert engine.adopt(orjson.loads(orjson.dumps(state))) == stored


@pytest.mark.parametrize(
    ("running", "kept_by"),
    [
        ({"temperature_anomaly", "high_temperature"}, "high_temperature"),
        ({"temperature_anomaly"}, "temperature_anomaly"),
        ({"brute_force"}, None),
        (set(), None),
    ],
)
def test_a_view_is_kept_by_the_first_of_its_specs_that_runs(running, kept_by) -> None:
    assert running_spec(SENSOR_DETECTIONS, running) == kept_by
