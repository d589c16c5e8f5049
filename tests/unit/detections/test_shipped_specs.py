"""Differential tests: each shipped spec alerts exactly as its rule module, applied event by event.

The reference side runs each rule module (streamapp.rules) through the rules' per-event step
(streamapp.rules.base.step), keyed by its entity, with the default thresholds
(streamapp.settings.Thresholds), the default grace and a worker's event clock, then a quiet tick per
key (every held event judged, as after a quiet grace). The spec side is
streamapp.detections.testing.run, what `streamapp detections test` runs. Alerts are compared whole:
id, kind, key, time, window, value, threshold and text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.run_detections import _apply_key
from streamapp.cli import main
from streamapp.detections.engine import Engine
from streamapp.detections.events import parse_event
from streamapp.detections.spec import load_file
from streamapp.detections.testing import run
from streamapp.models import Alert, parse_login, parse_sensor_reading, parse_transaction
from streamapp.rules import account_takeover, card_fraud, sliding_count, temperature
from streamapp.rules.base import Apply, Judge, Late, State, step
from streamapp.rules.brute_force import BRUTE_FORCE
from streamapp.rules.windows import EventClock
from streamapp.settings import Settings
from streamapp.types import Envelope
from tests.unit.fakes import record

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = Settings()
LIMITS, GRACE, RETENTION = SETTINGS.thresholds, SETTINGS.grace_seconds, SETTINGS.retention_seconds
T = 1_699_999_980.0  # epoch-aligned to the minute, in the past (event times may not be in the future)


# -- the rule modules, each keyed by its entity ------------------------------------------------
@dataclass(frozen=True)
class Detector:
    #: a source record -> [(entity, typed event)]: the events of the rule, keyed by its entity
    route: Callable[[dict[str, Any]], list[tuple[str, Any]]]
    new_state: Callable[[], State]
    #: the worker's event clock -> the rule's apply
    apply: Callable[[EventClock], Apply]
    judge: Callable[[EventClock], Judge] | None = None


def _login_by_ip(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    login = parse_login(obj, None)
    return [] if login.success else [(login.ip, login)]


def _login_by_user(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    login = parse_login(obj, None)
    return [(login.user, login)]


def _txn_by_card(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    txn = parse_transaction(obj, None)
    return [(txn.card_id, txn)]


def _reading_by_sensor(obj: dict[str, Any]) -> list[tuple[str, Any]]:
    reading = parse_sensor_reading(obj, None)
    return [(reading.sensor_id, reading)]


def _brute_force(clock: EventClock) -> Apply:
    def apply(state: State, ip: str, login: Any) -> tuple[bool, list[Alert]]:
        return BRUTE_FORCE.record(
            state, ip, login.ts, LIMITS.brute_force_failures, clock.horizon, keep=RETENTION
        )

    return apply


def _takeover(clock: EventClock) -> Apply:
    def apply(state: State, user: str, login: Any) -> tuple[bool, list[Alert]]:
        return account_takeover.record_login(
            state, user, login.ts, login.success, LIMITS.account_takeover_failures, clock.horizon
        )

    return apply


def _card(clock: EventClock) -> Apply:
    def apply(state: State, card: str, txn: Any) -> tuple[bool, list[Alert]]:
        counted, alerts = card_fraud.CARD_VELOCITY.record(
            state, card, txn.ts, LIMITS.card_velocity_transactions, clock.horizon, keep=RETENTION
        )
        if counted:
            card_fraud.hold_amount(state, txn.txn_id, txn.ts, txn.amount)
        return counted, alerts

    return apply


def _card_judge(clock: EventClock) -> Judge:
    def judge(state: State, card: str, before: float) -> list[Alert]:
        return card_fraud.judge_amounts(
            state, card, before, LIMITS.amount_spike_factor, LIMITS.amount_spike_min_transactions
        )

    return judge


TEMPERATURE = temperature.TemperatureThresholds(
    high=LIMITS.high_temperature,
    sigmas=LIMITS.temperature_anomaly_sigmas,
    min_readings=LIMITS.temperature_anomaly_min_readings,
)


def _reading(clock: EventClock) -> Apply:
    def apply(state: State, sensor: str, reading: Any) -> tuple[bool, list[Alert]]:
        return temperature.record_reading(
            state, sensor, reading.ts, reading.temperature, TEMPERATURE, clock.horizon
        )

    return apply


def _reading_judge(clock: EventClock) -> Judge:
    def judge(state: State, sensor: str, before: float) -> list[Alert]:
        return temperature.judge_readings(state, sensor, before, TEMPERATURE, clock.horizon)

    return judge


BRUTE = Detector(_login_by_ip, sliding_count.new_state, _brute_force)
TAKEOVER = Detector(_login_by_user, account_takeover.new_state, _takeover)
CARDS = Detector(_txn_by_card, card_fraud.new_state, _card, _card_judge)
SENSORS = Detector(_reading_by_sensor, temperature.new_state, _reading, _reading_judge)
#: shipped spec -> the rule module whose alerts it raises
DETECTORS = {
    "brute_force": BRUTE,
    "card_velocity": CARDS,
    "account_takeover": TAKEOVER,
    "high_temperature": SENSORS,
    "amount_spike": CARDS,
    "temperature_anomaly": SENSORS,
}


def by_rule(name: str, events: list[dict[str, Any]]) -> tuple[list[bytes], list[int]]:
    """(the alerts of kind ``name`` as JSON, sorted; the indices of late events) of the rule module."""
    alerts, late, _ = by_rule_run(name, events)
    return alerts, late


def by_rule_run(name: str, events: list[dict[str, Any]]) -> tuple[list[bytes], list[int], dict[str, State]]:
    """The same, and the states of every key at the end."""
    detector = DETECTORS[name]
    clock = EventClock(RETENTION)
    apply, judge = detector.apply(clock), detector.judge(clock) if detector.judge else None
    states: dict[str, State] = {}
    alerts: list[Alert] = []
    late: list[int] = []
    for offset, obj in enumerate(events):
        for entity, event in detector.route(obj):
            state = states.setdefault(entity, detector.new_state())
            outcome = step(
                state, entity, Envelope("source", 0, offset, event), apply, judge, GRACE, clock.horizon
            )
            if isinstance(outcome, Late):
                late.append(offset)
            elif outcome is not None:
                alerts += outcome
                clock.observe(event.ts)
    for entity, state in states.items():  # a quiet grace: every key's held events are judged
        ticked = step(state, entity, None, apply, judge, GRACE, clock.horizon)
        assert not isinstance(ticked, Late)  # a tick is never late
        alerts += ticked or []
    return sorted(a.to_json() for a in alerts if a.kind == name), late, states


def by_spec(name: str, events: list[dict[str, Any]]) -> tuple[list[bytes], list[int]]:
    """The same of the shipped spec on the spec engine (streamapp detections test)."""
    outcome = run(load_file(ROOT / "detections" / f"{name}.yaml"), events)
    assert outcome.invalid == []
    return sorted(a.to_json() for a in outcome.alerts), [index for index, _ in outcome.late]


# -- random events, in an arrival order ----------------------------------------------------------
def _times(draw: st.DrawFn, n: int, span: int) -> list[float]:
    return [T + draw(st.integers(0, span)) + draw(st.sampled_from([0.0, 0.5])) for _ in range(n)]


@st.composite
def logins(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 80))
    return [
        {"ts": ts, "ip": draw(st.sampled_from(["10.0.0.1", "10.0.0.2"])),
         "user": draw(st.sampled_from(["ann", "bob"])), "success": draw(st.booleans())}
        for ts in _times(draw, n, 300)
    ]  # fmt: skip


@st.composite
def transactions(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 80))
    # whole amounts: sums are exact in any order, as they are for integral cents; 0 too (a mean of 0)
    amounts = st.sampled_from([0, 5, 10, 12, 20, 150, 400, 2000])
    return [
        {"ts": ts, "txn_id": f"t{i}", "card_id": draw(st.sampled_from(["c1", "c2"])),
         "amount": float(draw(amounts))}
        for i, ts in enumerate(_times(draw, n, 300))
    ]  # fmt: skip


@st.composite
def readings(draw: st.DrawFn) -> list[dict[str, Any]]:
    # enough readings of one sensor to pass the 30 of history, and palettes with rare outliers; a
    # flat one (std 0: any change is an anomaly) too
    n = draw(st.one_of(st.integers(0, 30), st.integers(60, 150)))
    palette = draw(
        st.sampled_from([[20] * 12 + [21], [19, 20, 20, 21, 20, 19, 21, 20] * 2 + [40], [18, 20, 22, 120]])
    )
    return [
        {"ts": ts, "sensor_id": draw(st.sampled_from(["s1", "s1", "s1", "s2"])),
         "temperature": float(draw(st.sampled_from(palette)))}
        for ts in _times(draw, n, 600)
    ]  # fmt: skip


@st.composite
def within_grace(draw: st.DrawFn, events: st.SearchStrategy[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Events in an arrival order whose disorder stays within the grace (each delayed up to it)."""
    drawn = draw(events)
    delays = [draw(st.floats(0, GRACE)) for _ in drawn]
    ties = draw(st.permutations(range(len(drawn))))
    order = sorted(range(len(drawn)), key=lambda i: (drawn[i]["ts"] + delays[i], ties[i]))
    return [drawn[i] for i in order]


@st.composite
def shuffled(draw: st.DrawFn, events: st.SearchStrategy[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Events in any arrival order at all (some later than the grace)."""
    return list(draw(st.permutations(draw(events))))


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(name: str, events: list[dict[str, Any]]) -> None:
    expected, expected_late = by_rule(name, events)
    got, got_late = by_spec(name, events)
    assert got == expected
    assert got_late == expected_late


@PROPERTY
@given(events=within_grace(logins()))
def test_brute_force_spec_alerts_as_the_rule(events: list[dict[str, Any]]) -> None:
    _same("brute_force", events)


@PROPERTY
@given(events=within_grace(transactions()))
def test_card_velocity_spec_alerts_as_the_rule(events: list[dict[str, Any]]) -> None:
    _same("card_velocity", events)


@PROPERTY
@given(events=within_grace(logins()))
def test_account_takeover_spec_alerts_as_the_rule(events: list[dict[str, Any]]) -> None:
    _same("account_takeover", events)


@PROPERTY
@given(events=within_grace(readings()))
def test_high_temperature_spec_alerts_as_the_rule(events: list[dict[str, Any]]) -> None:
    _same("high_temperature", events)


@PROPERTY
@given(events=within_grace(transactions()))
def test_amount_spike_spec_alerts_as_the_rule(events: list[dict[str, Any]]) -> None:
    _same("amount_spike", events)


@PROPERTY
@given(events=within_grace(readings()))
def test_temperature_anomaly_spec_alerts_as_the_rule(events: list[dict[str, Any]]) -> None:
    _same("temperature_anomaly", events)


@PROPERTY
@given(
    name=st.sampled_from(["brute_force", "card_velocity", "account_takeover", "high_temperature"]),
    data=st.data(),
)
def test_eager_specs_alert_and_refuse_as_the_rule_in_any_order(name: str, data: st.DataObject) -> None:
    # eager operators hold nothing: no watermark judges anything, so the late events are the same too
    source = {"card_velocity": transactions(), "high_temperature": readings()}.get(name, logins())
    _same(name, data.draw(shuffled(source)))


# -- fixed cases: the differential tests above are not vacuous ------------------------------------
def _burst() -> list[dict[str, Any]]:
    """Logins and transactions that raise every login and card alert at least once, newest first."""
    fails = [{"ts": T + 3 + i, "ip": "10.0.0.9", "user": "eve", "success": False} for i in range(7)]
    ok = [{"ts": T + 20, "ip": "10.0.0.9", "user": "eve", "success": True}]
    return list(reversed(fails + ok))


def _cards() -> list[dict[str, Any]]:
    small = [{"ts": T + i, "txn_id": f"t{i}", "card_id": "c9", "amount": 10.0} for i in range(7)]
    return [*small, {"ts": T + 30, "txn_id": "big", "card_id": "c9", "amount": 5000.0}]


def _sensor() -> list[dict[str, Any]]:
    flat = [{"ts": T + 2 * i, "sensor_id": "s9", "temperature": 20.0 + i % 2} for i in range(40)]
    return [*flat, {"ts": T + 100, "sensor_id": "s9", "temperature": 150.0}]


def test_each_shipped_spec_alerts_on_its_case_as_the_rule() -> None:
    cases = {
        "brute_force": (_burst(), 1), "account_takeover": (_burst(), 1),
        "card_velocity": (_cards(), 1), "amount_spike": (_cards(), 1),
        "high_temperature": (_sensor(), 1), "temperature_anomaly": (_sensor(), 1),
    }  # fmt: skip
    for name, (events, count) in cases.items():
        expected, _ = by_rule(name, events)
        got, _ = by_spec(name, events)
        assert len(expected) == count, name
        assert got == expected, name


def test_the_spec_text_is_the_rule_text() -> None:
    (alert,) = by_spec("amount_spike", _cards())[0]
    assert (
        json.loads(alert)["detail"]
        == "transaction big of 5000.00 on card c9 is 500.0 x its mean 10.00 over 7 transactions"
    )
    (alert,) = by_spec("temperature_anomaly", _sensor())[0]
    assert json.loads(alert)["detail"].startswith("sensor s9 read 150, ")


def test_cli_test_prints_the_rule_alerts(tmp_path: Path) -> None:
    events = tmp_path / "logins.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in _burst()))
    spec = ROOT / "detections" / "brute_force.yaml"
    result = CliRunner().invoke(main, ["detections", "test", str(spec), "--events", str(events)])
    assert result.exit_code == 0, result.output
    printed = [line for line in result.stdout.splitlines() if line.startswith("{")]
    expected, _ = by_rule("brute_force", _burst())
    assert [json.loads(line) for line in printed] == [json.loads(a) for a in expected]
    assert (
        json.loads(printed[0])["detail"] == "6 failed logins from 10.0.0.9 within 60 s (more than 5)"
    )  # newest first: at the 6th


def test_cli_validates_every_shipped_spec() -> None:
    files = sorted(str(p) for p in (ROOT / "detections").glob("*.yaml"))
    result = CliRunner().invoke(main, ["detections", "validate", *files])
    assert result.exit_code == 0, result.output
    for name in DETECTORS:
        assert f"{name} version 1: valid" in result.stdout


@pytest.mark.parametrize(
    ("name", "events"),
    [("brute_force", _burst()), ("account_takeover", _burst()), ("amount_spike", _cards()),
     ("temperature_anomaly", _sensor())],
)  # fmt: skip
def test_run_detections_batches_alert_as_the_rule(name: str, events: list[dict[str, Any]]) -> None:
    # what a worker's run-detections does with the spec (agents/run_detections.py): one key's
    # forwarded events in one batch, then a quiet spell's flush tick
    spec = load_file(ROOT / "detections" / f"{name}.yaml")
    engine = Engine(spec)
    by_key: dict[str, list[bytes]] = {}
    for offset, obj in enumerate(events):
        ts, fields = parse_event(spec, obj, None)
        if engine.where(fields):
            envelope = {"n": name, "src": [0, offset], "ts": ts, "f": fields, "raw": "{}"}
            by_key.setdefault(fields[spec.key], []).append(orjson.dumps(envelope))
    alerts: list[Alert] = []
    for entity, values in by_key.items():
        values.append(orjson.dumps({"tick": T + 10_000, "flush": True}))
        key = f"{name}\x00{entity}".encode()
        _, found, late, _, _ = _apply_key(engine, entity, None, [record("t", v, key) for v in values], False)
        assert late == []
        alerts += found
    assert sorted(a.to_json() for a in alerts) == by_rule(name, events)[0] != []


def _spec_states(name: str, events: list[dict[str, Any]]) -> dict[str, State]:
    spec = load_file(ROOT / "detections" / f"{name}.yaml")
    engine, states = Engine(spec), dict[str, State]()
    for obj in events:
        ts, fields = parse_event(spec, obj, None)
        entity = fields[spec.key]
        engine.offer(states.setdefault(entity, engine.new_state()), entity, ts, fields)
    for entity, state in states.items():
        engine.tick(state, entity, T + 10_000, flush=True)
    return states


@PROPERTY
@given(logins=within_grace(logins()), txns=within_grace(transactions()), temps=within_grace(readings()))
def test_the_views_read_the_same_from_the_spec_states(
    logins: list[dict[str, Any]], txns: list[dict[str, Any]], temps: list[dict[str, Any]]
) -> None:
    # what /ips, /cards and /sensors read (streamapp/web/views.py), from the states of the specs
    rule = by_rule_run("brute_force", logins)[2]
    spec = _spec_states("brute_force", [e for e in logins if not e["success"]])
    assert {k: s["buckets"] for k, s in spec.items()} == {k: s["buckets"] for k, s in rule.items()}
    cards = by_rule_run("card_velocity", txns)[2]
    velocity, spikes = _spec_states("card_velocity", txns), _spec_states("amount_spike", txns)
    for card, state in cards.items():
        assert card_fraud.transactions_within(velocity[card], T) == card_fraud.transactions_within(state, T)
        assert card_fraud.card_totals(spikes[card]) == card_fraud.card_totals(state)
    sensors = by_rule_run("high_temperature", temps)[2]
    for specs in (_spec_states("high_temperature", temps), _spec_states("temperature_anomaly", temps)):
        assert {k: temperature.window_view(s, 0.0) for k, s in specs.items()} == {
            k: temperature.window_view(s, 0.0) for k, s in sensors.items()
        }


def test_where_the_paths_differ_an_anomaly_before_a_silence_longer_than_the_retention() -> None:
    # (docs/detections.md, "Differences from the rule modules"): the rule module alone,
    # ticked only after the silence (a backlog), lets the held anomaly's window expire unjudged;
    # the spec's watermark judges it while other sensors report
    sensor = [{"ts": T + 10 * i, "sensor_id": "s1", "temperature": 20.0 + i % 2} for i in range(40)]
    anomaly = {"ts": T + 400.5, "sensor_id": "s1", "temperature": 40.0}
    others = [{"ts": T + 700 + 300 * i, "sensor_id": "s2", "temperature": 20.0} for i in range(16)]
    again = [{"ts": T + 5600 + 10 * i, "sensor_id": "s1", "temperature": 20.0} for i in range(3)]
    events = [*sensor, anomaly, *others, *again]
    assert by_rule("temperature_anomaly", events)[0] == []
    (alert,) = by_spec("temperature_anomaly", events)[0]
    assert json.loads(alert)["ts"] == T + 400.5
    # ticked before the silence, the rule module raises the same alert
    assert by_rule("temperature_anomaly", [*sensor, anomaly])[0] == [alert]
