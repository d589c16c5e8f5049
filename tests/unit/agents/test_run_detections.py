"""run-detections a batch at a time: the states and alerts of one event at a time; bad records
skipped or reported, bad stored states replaced; forwarded envelopes within what the broker takes."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agents.run_detections import (
    StateCache,
    _apply_key,
    _late,
    _summary,
    forwarded_envelope,
    registry,
    settings,
)
from streamapp.detections.engine import Engine, Late
from streamapp.detections.spec import load_file
from streamapp.observability.metrics import EXPIRED_EVENTS_TOTAL, LATE_EVENTS_TOTAL
from tests.unit.detections.samples import bursts_engine
from tests.unit.fakes import FakeSink, record

TOPIC = "app-detection-events"
KEY = b"bursts\x00203.0.113.9"


def _event(offset: int, ts: float) -> bytes:
    fields = {"ts": ts, "ip": "203.0.113.9", "success": False}
    return orjson.dumps({"n": "bursts", "src": [0, offset], "ts": ts, "f": fields, "raw": "{}"})


def _events() -> list[bytes]:
    times = [100.0, 101.0, 103.0, 102.0, 110.0, 111.0, 112.0, 130.0, 131.0, 132.0, 140.0, 20.0]
    return [_event(n, ts) for n, ts in enumerate(times)] + [orjson.dumps({"tick": 200.0, "flush": True})]


def test_a_batch_gives_the_state_and_alerts_of_one_event_at_a_time() -> None:
    engine = bursts_engine()
    values = _events()
    batched = _apply_key(engine, "203.0.113.9", None, [record(TOPIC, v, KEY) for v in values], isolate=False)
    raw: bytes | None = None
    alerts, late, applied = [], [], 0
    for value in values:  # as before: the state read and written around every event
        one = [record(TOPIC, value, KEY)]
        state, found, too_late, events, _ = _apply_key(engine, "203.0.113.9", raw, one, isolate=False)
        raw = orjson.dumps(state) if state is not None else raw
        alerts += found
        late += too_late
        applied += events
    state, found, too_late, events, newest = batched
    assert state is not None and raw is not None
    # (the late event's source offset is remembered when other events of the batch change the
    # state, as the app's own detectors do (agents.base): all else is the same)
    assert {**state, "src": None} == {**orjson.loads(raw), "src": None}
    assert [a.alert_id for a in found] == [a.alert_id for a in alerts] and len(found) >= 3
    assert [why.reason for _, why in too_late] == [why.reason for _, why in late] and len(too_late) == 1
    assert (events, newest) == (applied, 140.0) == (11, 140.0)


def test_a_record_that_raises_is_skipped_alone_when_isolated() -> None:
    engine = bursts_engine()
    values = [_event(0, 100.0), b'{"ts": "not a number"}', _event(1, 101.0), _event(2, 102.0)]
    records = [record(TOPIC, v, KEY) for v in values]
    with pytest.raises(ValueError):
        _apply_key(engine, "203.0.113.9", None, records, isolate=False)
    state, found, late, events, _ = _apply_key(engine, "203.0.113.9", None, records, isolate=True)
    assert state is not None and events == 3 and late == []
    flushed = engine.tick(state, "203.0.113.9", 200.0, flush=True)
    assert [a.value for a in found + flushed] == [3.0]


def test_events_applied_in_process_give_what_their_forwarded_records_give() -> None:
    engine = bursts_engine()
    values = _events()
    forwarded = _apply_key(
        engine, "203.0.113.9", None, [record(TOPIC, v, KEY) for v in values], isolate=False
    )
    messages = [orjson.loads(v) for v in values]
    for message in messages:  # as route_batch hands them over: source value as bytes, position a tuple
        if "src" in message:
            message["src"], message["raw"] = tuple(message["src"]), message["raw"].encode()
    in_process = _apply_key(engine, "203.0.113.9", None, messages, isolate=False)
    assert forwarded[0] == in_process[0] and forwarded[0] is not None
    assert [a.alert_id for a in forwarded[1]] == [a.alert_id for a in in_process[1]]
    assert [why for _, why in forwarded[2]] == [why for _, why in in_process[2]]
    assert forwarded[3:] == in_process[3:]


def test_a_decoded_state_goes_on_as_its_stored_bytes() -> None:
    engine = bursts_engine()
    values = _events()
    first = _apply_key(
        engine, "203.0.113.9", None, [record(TOPIC, v, KEY) for v in values[:6]], isolate=False
    )
    state = first[0]
    assert state is not None
    rest = [record(TOPIC, v, KEY) for v in values[6:]]
    from_bytes = _apply_key(engine, "203.0.113.9", orjson.dumps(state), rest, isolate=False)
    from_memory = _apply_key(engine, "203.0.113.9", state, rest, isolate=False)
    assert from_bytes[0] == from_memory[0]
    assert [a.alert_id for a in from_bytes[1]] == [a.alert_id for a in from_memory[1]]


def test_the_state_cache_keeps_stored_states_within_one_generation_and_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agents import run_detections

    monkeypatch.setattr(run_detections.app, "consumer_generation_id", 7, raising=False)
    cache = StateCache(max_bytes=3000, min_bytes=100)
    cache.keep(0, b"a", {"n": 1}, 1000)
    cache.keep(0, b"small", {"n": 2}, 99)  # cheap to decode: not kept
    assert cache.take(0, b"small") is None
    assert cache.take(0, b"a") == {"n": 1}
    assert cache.take(0, b"a") is None  # taken out while its batch applies it
    cache.keep(0, b"a", {"n": 1}, 1000)
    cache.keep(1, b"b", {"n": 3}, 1000)
    cache.keep(2, b"c", {"n": 4}, 1500)  # over the budget: the oldest goes
    assert cache.take(0, b"a") is None and cache.take(1, b"b") == {"n": 3}
    cache.keep(1, b"b", {"n": 3}, 1000)
    monkeypatch.setattr(run_detections.app, "consumer_generation_id", 8, raising=False)  # a rebalance
    assert cache.take(1, b"b") is None and cache.take(2, b"c") is None


def test_a_late_event_is_queued_with_the_batch_as_its_source_value_and_coordinates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = bursts_engine()
    monkeypatch.setitem(registry.engines, engine.name, engine)
    sink = FakeSink()
    source = settings.topic("logins")
    counted = LATE_EVENTS_TOTAL.labels(topic=source)
    before = counted._value.get()
    why = Late("61.000 s behind the newest event of its key (grace 60 s)", 1.0)
    applied_here = {"src": (2, 41), "ts": 100.0, "f": {}, "raw": b'{"ts": 100}'}
    forwarded = {"n": engine.name, "src": [3, 7], "ts": 100.0, "f": {}, "raw": '{"ts": 100.5}'}
    _late(engine.name, "203.0.113.9", applied_here, why, sink, "app-late-events")
    _late(engine.name, "203.0.113.9", forwarded, why, sink, "app-late-events")
    first, second = sink.queued
    # no partition given: the sink takes the key's (the entity's)
    assert (first.topic, first.key, first.partition) == ("app-late-events", b"203.0.113.9", None)
    assert first.value == b'{"ts": 100}'
    assert second.value == b'{"ts": 100.5}'  # byte for byte, forwarded as text
    assert first.headers == [
        ("x-error", f"late event for detection {engine.name}: {why.reason}".encode()),  # not shipped
        ("x-lateness-seconds", b"1.000"),
        ("x-source-topic", source.encode()),
        ("x-source-partition", b"2"),
        ("x-source-offset", b"41"),
    ]
    assert second.header("x-source-offset") == b"7"
    assert counted._value.get() == before + 2


def test_an_event_at_or_before_the_workers_horizon_is_late_and_counted_as_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = bursts_engine()
    monkeypatch.setitem(registry.engines, engine.name, engine)
    records = [record(TOPIC, _event(0, 100.0), KEY), record(TOPIC, _event(1, 150.0), KEY)]
    state, _, late, events, newest = _apply_key(engine, "203.0.113.9", None, records, False, horizon=120.0)
    assert state is not None and (events, newest) == (1, 150.0)
    ((message, why),) = late
    assert message["src"] == [0, 0] and why.reason.startswith("older than the retention")
    source = settings.topic("logins")
    expired = EXPIRED_EVENTS_TOTAL.labels(topic=source)
    before = expired._value.get()
    _late(engine.name, "203.0.113.9", message, why, FakeSink(), "app-late-events")
    _late(engine.name, "203.0.113.9", message, Late("1.000 s behind", 1.0), FakeSink(), "app-late-events")
    assert expired._value.get() == before + 1  # only the one older than the retention


def test_the_keys_of_an_engine_the_timer_never_ticks_share_one_summary() -> None:
    eager = Engine(load_file(Path(__file__).resolve().parents[3] / "detections" / "account_takeover.yaml"))
    held = bursts_engine()
    assert not eager.ticked and held.ticked
    first, second = eager.new_state(), eager.new_state()
    # nothing of the key in it (the timer skips the engine), and not one object per key
    assert _summary(eager, first) is _summary(eager, second)
    assert _summary(eager, first) == {"pending": [], "last": None, "silent": None, "shape": eager.shape}
    state = held.new_state()
    assert held.offer(state, "203.0.113.9", 100.0, {"ts": 100.0, "ip": "203.0.113.9", "success": False}) == []
    summary = _summary(held, state)
    assert summary is not _summary(held, held.new_state())
    assert summary["pending"] == state["pending"][:1] and summary["shape"] == held.shape


def test_a_stored_state_that_makes_a_valid_event_raise_is_replaced_and_a_guilty_event_reported() -> None:
    engine = bursts_engine()
    forged = {**engine.new_state(), "pending": "junk"}  # of the engine's shape, but not its state
    messages = [orjson.loads(_event(0, 100.0)), orjson.loads(_event(1, 101.0))]
    with pytest.raises(TypeError):
        _apply_key(engine, "203.0.113.9", forged, messages, isolate=False)
    failed: list[tuple[dict[str, object], str]] = []
    resets: list[str] = []
    forged = {**engine.new_state(), "pending": "junk"}
    state, _, _, events, _ = _apply_key(
        engine, "203.0.113.9", forged, messages, isolate=True, failed=failed, resets=resets
    )
    # the first event applies to a fresh state: the stored one is replaced, the key goes on
    assert len(resets) == 1 and failed == [] and events == 2 and state is not None
    assert state["pending"] != "junk"
    # an event that raises on a fresh state too is reported with why (its source record: a dead letter)
    guilty = {"n": "bursts", "src": [0, 9], "ts": 102.0, "f": None, "raw": "{}"}
    state, _, _, events, _ = _apply_key(
        engine, "203.0.113.9", None, [guilty, messages[0]], isolate=True, failed=failed, resets=resets
    )
    assert events == 1 and [m for m, _ in failed] == [guilty]
    assert failed[0][1].startswith("internal error while detecting: ")


def test_a_late_event_forwarded_without_its_copy_carries_its_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = bursts_engine()
    monkeypatch.setitem(registry.engines, engine.name, engine)
    sink = FakeSink()
    fields = {"ts": 100.0, "ip": "203.0.113.9", "success": False}
    message = {"n": engine.name, "src": [3, 7], "ts": 100.0, "f": fields}
    _late(engine.name, "203.0.113.9", message, Late("late", 1.0), sink, "app-late-events")
    assert orjson.loads(sink.queued[0].value) == fields


def test_an_event_whose_copy_would_outgrow_its_record_is_forwarded_without_it() -> None:
    fields = {"ts": 100.0, "ip": "203.0.113.9", "success": False}
    plain = b'{"ts": 100.0, "ip": "203.0.113.9", "success": false, "pad": "' + b"7" * 100_000 + b'"}'
    quoted = b'{"ts": 100.0, "ip": "203.0.113.9", "success": false, "pad": "' + b'\\"' * 50_000 + b'"}'
    for value, kept in ((plain, True), (quoted, False)):
        source = record("app-logins", value, partition=2, offset=5)
        envelope = orjson.loads(forwarded_envelope("bursts", source, 100.0, fields, value.decode()))
        assert envelope["src"] == [2, 5] and envelope["f"] == fields
        # escapes double the copy of a value of quotes: the broker would refuse the record
        assert ("raw" in envelope) is kept and len(orjson.dumps(envelope)) < len(value) + 4096
