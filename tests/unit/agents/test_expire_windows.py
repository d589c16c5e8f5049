"""The expiry sweep over detection-state: a detection's key goes as its engine says, never before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import run_detections
from agents.expire_windows import EXPIRING_TABLES, TableExpiry, spec_expires_at
from streamapp.detections.engine import Engine
from streamapp.detections.spec import load_file
from streamapp.runtime.clock import worker_clock
from tables.detection_state import detection_state, registry
from tables.prices_by_symbol import prices_by_symbol

T = 1_699_999_980.0
ENGINE = Engine(load_file(Path(__file__).resolve().parents[3] / "detections" / "high_temperature.yaml"))
KEY = b"high_temperature\x00s1"


@pytest.fixture(autouse=True)
def loaded_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(registry.engines, ENGINE.name, ENGINE)
    was_loaded = registry.loaded.is_set()
    registry.loaded.set()
    worker_clock.newest = 0.0
    yield
    if not was_loaded:
        registry.loaded.clear()
    worker_clock.newest = 0.0


def _state(clock: float) -> dict[str, object]:
    state = ENGINE.new_state()
    ENGINE.offer(state, "s1", clock, {"ts": clock, "sensor_id": "s1", "temperature": 20.0})
    return state


def test_a_detections_key_expires_as_its_engine_says() -> None:
    state = _state(T)
    assert spec_expires_at(KEY, state) == ENGINE.expires_at(state) == T + 60
    # a disabled detection's state: with its newest event
    assert spec_expires_at(b"gone_detection\x00s1", {"clock": T}) == T


def test_nothing_expires_before_the_control_topic_is_read() -> None:
    registry.loaded.clear()  # a detection applied there may hold events: not known yet
    assert spec_expires_at(b"gone_detection\x00s1", {"clock": T}) is None


def test_the_sweep_of_detection_state_reads_the_workers_horizon() -> None:
    (expiry,) = [e for e in EXPIRING_TABLES if e.table is detection_state]
    state = _state(T)
    worker_clock.newest = T + 60 + worker_clock.retention_seconds - 1
    assert not expiry.is_expired(KEY, state)
    worker_clock.newest += 1
    assert expiry.is_expired(KEY, state)
    assert not expiry.is_expired(KEY, {**state, "pending": [[T, 20.0]]})  # held events stay
    assert expiry.last_event(state) == T  # what restores the worker's clock after recovery
    assert expiry.forget is run_detections.forget_swept


def test_a_table_without_its_own_measure_expires_with_its_last_event() -> None:
    expiry = TableExpiry(prices_by_symbol, lambda state: state["ts"])
    worker_clock.newest = T + worker_clock.retention_seconds
    assert expiry.is_expired(b"k", {"ts": T}) and not expiry.is_expired(b"k", {"ts": T + 1})


def test_the_tables_swept_are_the_stock_prices_and_the_detections_states() -> None:
    assert [expiry.table for expiry in EXPIRING_TABLES] == [prices_by_symbol, detection_state]


def test_a_swept_key_is_forgotten_by_the_cache_and_the_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_detections.app, "consumer_generation_id", 3, raising=False)
    monkeypatch.setitem(run_detections._watch, ENGINE.name, {KEY: {"pending": []}, b"other": {}})
    run_detections._states.keep(0, KEY, _state(T), 2048)
    run_detections.forget_swept(0, KEY)
    assert run_detections._states.take(0, KEY) is None
    assert run_detections._watch[ENGINE.name] == {b"other": {}}
