"""The engine's held events: ids that name an event, ties, and states held in the earlier layout."""

from __future__ import annotations

import copy

import orjson

from streamapp.models import alert_id_for
from tests.unit.detections.samples import bursts_engine

IP = "203.0.113.9"


def _fields(ts: float) -> dict[str, object]:
    return {"ts": ts, "ip": IP, "success": False}


def test_a_sliding_alert_is_named_by_its_event_time_and_canonical_json() -> None:
    engine = bursts_engine()
    state = engine.new_state()
    alerts = []
    for offset, ts in enumerate([100.0, 101.0, 102.0, 200.0]):
        outcome = engine.offer(state, IP, ts, _fields(ts), src=(0, offset))
        assert isinstance(outcome, list)
        alerts += outcome
    canon = orjson.dumps(_fields(102.0), option=orjson.OPT_SORT_KEYS).decode()
    assert [a.alert_id for a in alerts] == [alert_id_for("bursts", IP, 102.0, canon)]


def test_events_of_the_same_time_are_held_in_canonical_order_whatever_their_arrival() -> None:
    engine = bursts_engine()
    held = []
    for order in ([True, False], [False, True]):
        state = engine.new_state()
        for offset, flag in enumerate(order):
            engine.offer(
                state, IP, 100.0, {"ts": 100.0, "ip": IP, "success": False, "x": flag}, src=(0, offset)
            )
        held.append(state["pending"])
    assert held[0] == held[1]
    assert [fields["x"] for _, fields in held[0]] == [False, True]  # "false" < "true"


def test_held_events_keep_their_fields_but_the_time_and_key_and_get_them_back() -> None:
    engine = bursts_engine()
    state = engine.new_state()
    fields = {"ts": 100.0, "ip": IP, "success": False}
    engine.offer(state, IP, 100.0, dict(fields), src=(0, 0))
    assert state["pending"] == [[100.0, {"success": False}]]
    odd = {"ts": 100.0, "ip": "elsewhere", "success": False}  # a key field that is not the entity stays
    engine.offer(state, IP, 101.0, dict(odd), src=(0, 1))
    assert state["pending"][1] == [101.0, {"ts": 100.0, "ip": "elsewhere", "success": False}]


def test_a_state_held_in_an_earlier_layout_goes_on_as_the_same_state() -> None:
    engine = bursts_engine()
    state = engine.new_state()
    for offset, ts in enumerate([100.0, 101.0, 103.0]):
        engine.offer(state, IP, ts, _fields(ts), src=(0, offset))
    assert len(state["pending"]) == 3
    earlier = copy.deepcopy(state)  # the layout before: [ts, canonical JSON, every field]
    whole = [_fields(ts) for ts, _ in state["pending"]]
    canon = [orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode() for fields in whole]
    earlier["pending"] = [[f["ts"], text, f] for f, text in zip(whole, canon, strict=True)]
    adopted = engine.adopt(orjson.loads(orjson.dumps(earlier)))
    assert [held[0] for held in adopted["pending"]] == [held[0] for held in state["pending"]]
    for more, ts in enumerate([104.0, 104.5]):  # events held in both layouts, side by side
        engine.offer(state, IP, ts, _fields(ts), src=(0, 10 + more))
        engine.offer(adopted, IP, ts, _fields(ts), src=(0, 10 + more))
    now, before = engine.tick(state, IP, 200.0, flush=True), engine.tick(adopted, IP, 200.0, flush=True)
    assert [a.alert_id for a in now] == [a.alert_id for a in before] and len(now) == 3
    assert [a.detail for a in now] == [a.detail for a in before]
