"""The worker's retention in the engine: what a spec's state keeps, and when the sweep may drop it."""

from __future__ import annotations

from pathlib import Path

from streamapp.detections.control import Registry
from streamapp.detections.engine import Engine
from streamapp.detections.spec import load_file
from streamapp.rules.base import Late
from tests.unit.detections.samples import bursts_engine

DETECTIONS = Path(__file__).resolve().parents[3] / "detections"
T = 1_699_999_980.0


def _shipped(name: str, retention: float = 3600.0) -> Engine:
    return Engine(load_file(DETECTIONS / f"{name}.yaml"), retention)


def _reading(ts: float, sensor: str = "s1") -> dict[str, object]:
    return {"ts": ts, "sensor_id": sensor, "temperature": 20.0}


def test_a_rule_keeps_the_retention_it_is_given() -> None:
    failure = {"ip": "10.0.0.1", "user": "u", "success": False}
    kept = {}
    for retention in (3600.0, 7200.0):
        engine = _shipped("brute_force", retention)
        state = engine.new_state()
        for ts in (T, T + 5000):
            assert engine.offer(state, "10.0.0.1", ts, {**failure, "ts": ts}) == []
        kept[retention] = [start for start, _ in state["buckets"]]
    assert len(kept[3600.0]) == 1 and len(kept[7200.0]) == 2


def test_the_registry_gives_its_engines_the_workers_retention() -> None:
    registry = Registry(retention=7200.0)
    registry.install([load_file(DETECTIONS / "high_temperature.yaml")])
    operator = registry.engines["high_temperature"].operator
    assert operator is not None and operator.retention == 7200.0


def test_an_event_at_or_before_the_workers_horizon_is_late() -> None:
    engine = _shipped("high_temperature")
    state = engine.new_state()
    late = engine.offer(state, "s1", T, _reading(T), horizon=T + 1)
    assert isinstance(late, Late) and late.reason.startswith("older than the retention")
    assert engine.offer(state, "s1", T + 2, _reading(T + 2), horizon=T + 1) == []


def test_an_operators_state_expires_its_window_after_its_newest_event() -> None:
    eager = _shipped("high_temperature")
    state = eager.new_state()
    eager.offer(state, "s1", T, _reading(T))
    assert eager.expires_at(state) == T + 60  # the sensor views show its window until it ends
    bursts = _shipped("brute_force")
    state = bursts.new_state()
    bursts.offer(state, "10.0.0.1", T, {"ts": T, "ip": "10.0.0.1", "user": "u", "success": False})
    assert bursts.expires_at(state) == T + 70  # its bucket counts in the 60-s windows after it


def test_a_state_holding_events_stays_until_they_are_judged() -> None:
    for engine in (_shipped("temperature_anomaly"), bursts_engine()):
        key = "s1" if engine.name == "temperature_anomaly" else "10.0.0.1"
        fields = _reading(T) if key == "s1" else {"ts": T, "ip": key, "success": False}
        state = engine.new_state()
        assert engine.offer(state, key, T, fields) == []
        assert state["pending"] and engine.expires_at(state) is None
        engine.tick(state, key, T + 1000, flush=True)
        assert engine.expires_at(state) == T + 60


def test_a_silent_key_stays_until_its_absence_alert_fired() -> None:
    engine = _shipped("silent_sensor")
    state = engine.new_state()
    engine.offer(state, "s1", T, _reading(T))
    engine.tick(state, "s1", T + 10)  # the held reading judged: the sensor is not silent yet
    assert not state["pending"] and engine.expires_at(state) is None
    (alert,) = engine.tick(state, "s1", T + 301)
    assert alert.kind == "silent_sensor" and engine.expires_at(state) == T


def test_a_state_of_another_version_expires_with_its_newest_event() -> None:
    engine = _shipped("temperature_anomaly")
    state = {**engine.new_state(), "shape": "older", "clock": T, "pending": [[T, 20.0]]}
    assert engine.expires_at(state) == T
