"""What a detector reads back: an envelope handed over in process is kept, one read back is parsed
again; a forged record of detection-events is refused with its reason."""

from __future__ import annotations

import time

import orjson

from agents.record_checks import detection_record, envelope_problem
from streamapp.detections.engine import Engine
from streamapp.detections.shipped import SHIPPED_DIR
from streamapp.detections.spec import load_file
from streamapp.models import Login, encode_envelope, parse_login
from streamapp.types import Envelope, ForwardedRecord
from tests.unit.detections.samples import bursts_engine
from tests.unit.fakes import NOW, record


def test_a_record_handed_over_in_process_carries_its_envelope_and_one_read_back_is_parsed_again() -> None:
    login = Login(ts=NOW, user="alice", ip="10.0.0.1", success=False)
    envelope = Envelope("logins", 0, 7, login, None)
    forwarded = ForwardedRecord(
        "x-by-entity", 0, -1, 0, 0, b"10.0.0.1", encode_envelope(envelope), None, 8, 1, (),
        envelope=envelope,
    )  # fmt: skip
    carried, problem = envelope_problem(forwarded, parse_login, "logins")
    assert carried is envelope and problem is None  # the same object: not decoded again
    # the same bytes read back from the topic: decoded and parsed, an equal envelope
    read_back = record("x-by-entity", encode_envelope(envelope), key=b"10.0.0.1")
    decoded, problem = envelope_problem(read_back, parse_login, "logins")
    assert problem is None and decoded is not None and decoded.event == login
    # a forged one on the topic (a time far in the future) is refused by the parser
    forged = Envelope("logins", 0, 8, Login(ts=NOW + 10**9, user="a", ip="10.0.0.1", success=False))
    _, problem = envelope_problem(
        record("x", encode_envelope(forged), key=b"10.0.0.1"), parse_login, "logins"
    )
    assert problem is not None


def _envelope(at: float, **changes: object) -> bytes:
    fields = {"ts": at, "ip": "203.0.113.9", "success": False, **changes}
    return orjson.dumps({"n": "bursts", "src": [0, 4], "ts": at, "f": fields, "raw": "{}"})


def test_a_record_of_detection_events_the_app_could_not_have_written_is_refused_with_its_reason() -> None:
    engines = {"bursts": bursts_engine()}
    now = time.time()
    ceiling = now + 300
    key = b"bursts\x00203.0.113.9"
    good = detection_record(key, _envelope(now - 5), engines, ceiling)
    assert isinstance(good, dict) and good["f"]["ip"] == "203.0.113.9" and good["ts"] == now - 5
    tick = orjson.dumps({"tick": now - 10, "flush": True})
    assert detection_record(key, tick, engines, ceiling) == {"tick": now - 10, "flush": True}
    assert detection_record(b"gone\x00203.0.113.9", tick, engines, ceiling) is None  # disabled: skipped
    refused = {
        (None, _envelope(now)): "without a UTF-8 entity key",
        (b"bursts", _envelope(now)): "without a UTF-8 entity key",
        (b"bursts\x00", _envelope(now)): "without a UTF-8 entity key",
        (b"\xff\x00203.0.113.9", _envelope(now)): "without a UTF-8 entity key",
        (b"bursts\x00a\x00b", _envelope(now)): "whose key contains the control character U+0000",
        (b"bursts\x00__faust", _envelope(now)): "whose key starts with '__faust'",
        (b"__faust\x00offset__", _envelope(now)): "whose key starts with '__faust'",
        (key, None): "that is not a forwarded event",  # (a tombstone, as on a by-entity topic)
        (key, b"{"): "that is not a JSON event",
        (key, b"[1]"): "that is not a forwarded event",
        (key, orjson.dumps({"src": [0, 1], "ts": now})): "that is not a forwarded event",
        (key, orjson.dumps({"src": [0, -1], "ts": now, "f": {}})): "whose 'src' is not [partition, offset]",
        (key, orjson.dumps({"tick": now + 10**9})): "that is not a tick within",
        (key, orjson.dumps({"tick": "soon"})): "that is not a tick within",
        (b"gone\x00203.0.113.9", _envelope(now)): "for detection 'gone', which does not run on this worker",
        (key, _envelope(now + 10**9)): "with an event ingest refuses: field 'ts': event time",
        (key, _envelope(now, ts=now + 10**9)): "refuses: field 'ts': event time",  # the field's
        (key, _envelope(now, success="no")): "field 'success' must be true or false (detection bursts)",
        (key, _envelope(now, ip=None)): "field 'ip' is missing (detection bursts)",
        (key, _envelope(now, ip="other")): "field 'ip' is not the record's key (detection bursts)",
    }
    for (k, value), why in refused.items():
        problem = detection_record(k, value, engines, ceiling)
        assert isinstance(problem, str) and problem.startswith("record on an internal topic "), (k, value)
        assert why in problem, (k, value, problem)


def test_a_number_of_a_forged_detection_event_must_be_finite_and_within_its_bound() -> None:
    engine = Engine(load_file(SHIPPED_DIR / "card_velocity.yaml"))
    now = time.time()
    key = b"card_velocity\x00c1"

    def value(amount: object) -> bytes:
        fields = {"ts": now, "txn_id": "t", "card_id": "c1", "amount": amount}
        return orjson.dumps({"n": "card_velocity", "src": [1, 2], "ts": now, "f": fields})

    assert isinstance(detection_record(key, value(12.5), {"card_velocity": engine}, now + 300), dict)
    for amount in (1e300, "3", True):
        problem = detection_record(key, value(amount), {"card_velocity": engine}, now + 300)
        assert isinstance(problem, str) and "field 'amount'" in problem, amount
