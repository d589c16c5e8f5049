"""Specs refuse hostile records as the ingest does: dead letters with the reasons; good ones alone alert."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamapp.detections.events import compile_parser
from streamapp.detections.spec import load_file, load_text
from streamapp.detections.testing import run
from streamapp.models import InvalidEvent
from tests.integration.conftest import Names, Worker
from tests.integration.kafka_io import produce_spread, read_all, read_until, shuffled

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
#: card spend per 60-s window above 1000 (held for a grace of 10 s); fees and amounts bounded
SPEC = """
name: card_spend
version: 1
severity: high
grace: 10
source:
  topic: payments
  fields:
    ts: timestamp
    card: string
    amount: {type: number, min: 0, max: 10000}
    fee: number
key: card
window: {type: tumbling, size: 60}
aggregate: {fn: sum, field: amount}
condition: {type: threshold, op: ">", value: 1000}
alert:
  text: "card {key} spent {value:.2f} within 60 s"
"""
SUFFIX = " (detection card_spend)"


def _hostile(start: float) -> list[tuple[dict[str, Any], str]]:
    """Well-formed records with one hostile field each, and the dead-letter reason each gets. Those
    on a good card would make it alert (or alert once more) if they were counted."""
    card = {"ts": start + 1, "card": "c-quiet", "amount": 999.0, "fee": 0.5}
    return [
        ({**card, "card": "x" * 10_000}, "field 'card' is longer than 256 characters"),
        ({**card, "card": "c-quiet\x00"}, "field 'card' contains the control character U+0000 at position 7"),
        ({**card, "card": "__faust\x00offset"},
         "field 'card' starts with '__faust', the prefix of the stream library's own keys"),
        ({**card, "card": "c\u2028"}, "field 'card' contains the control character U+2028 at position 1"),
        ({**card, "card": ""}, "field 'card' must not be empty"),
        ({**card, "card": 7}, "field 'card' must be a string, got int"),
        ({**card, "amount": 1e300}, "field 'amount'=1e+300 is outside 0..10000"),
        ({**card, "amount": -1}, "field 'amount'=-1 is outside 0..10000"),
        ({**card, "amount": "NaN"}, "field 'amount' must be a finite number, got string"),
        ({**card, "amount": True}, "field 'amount' must be a finite number, got bool"),
        ({**card, "fee": 1e10}, "field 'fee'=1e+10 exceeds STREAMAPP_MAX_AMOUNT=1000000000"),
        ({**card, "ts": time.time() + 1e6}, "field 'ts': event time "),
        ({**card, "ts": -5}, "field 'ts' is out of range: -5"),
        ({**card, "ts": "2026-01-01T00:00:00"},
         "field 'ts' must carry a UTC offset (e.g. 2026-01-01T00:00:00+00:00)"),
    ]  # fmt: skip


def _good(start: float) -> list[dict[str, Any]]:
    """Payments within 8 s of one window: two cards over 1000 (one with a hostile-looking but valid
    id), two under it."""
    rnd = random.Random(5)
    spend = {"c-big": 1200.0, "Zoë 🧑‍💻 \u202egnp.exe": 1500.0, "c-quiet": 990.0, "c-small": 40.0}
    events = []
    for card, total in spend.items():
        for part in (0.25, 0.25, 0.5):
            events.append({"ts": start + rnd.uniform(0, 8), "card": card, "amount": total * part, "fee": 0.5})
    return events


def _by_key(alert: dict[str, Any]) -> str:
    return str(alert["key"])


def _alerts(bootstrap: str, names: Names, kind: str, count: int) -> list[dict[str, Any]]:
    """The alerts of ``kind`` by key, once ``count`` came and nothing more for 3 s."""

    def mine(records: list[Any]) -> list[dict[str, Any]]:
        return [a for a in (orjson.loads(r.value) for r in records) if a["kind"] == kind]

    asyncio.run(read_until(bootstrap, names.topic("alerts"), lambda rs: len(mine(rs)) >= count, within=30))
    return sorted(mine(asyncio.run(read_all(bootstrap, names.topic("alerts"), settle=3))), key=_by_key)


def test_a_spec_on_a_new_topic_dead_letters_hostile_records_and_alerts_on_the_good_ones_alone(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], tmp_path: Path
) -> None:
    worker = worker_factory()
    spec_file = tmp_path / "card_spend.yaml"
    spec_file.write_text(SPEC)
    applied = worker.detections("apply", str(spec_file))
    assert applied.returncode == 0, applied.stderr
    # subscribed (the worker created the topic with its partitions) before anything is produced
    worker.wait_for("/detections", lambda _, body: "payments" in body.get("topics", []), timeout=15)

    start = (time.time() - 3000) // 60 * 60  # a window's start: every event in one window
    good, hostile = _good(start), _hostile(start)
    values = [orjson.dumps(v) for v in shuffled([*good, *(h for h, _ in hostile)], seed=3)]
    asyncio.run(
        produce_spread(kafka_bootstrap, names.topic("payments"), values=values, partitions=PARTITIONS)
    )

    letters = asyncio.run(
        read_until(
            kafka_bootstrap, names.topic("dead-letters"), lambda rs: len(rs) >= len(hostile), within=30
        )
    )
    got = {r.value: dict(r.headers) for r in letters}
    assert len(letters) == len(got) == len(hostile)  # each hostile record once, byte for byte
    for record, reason in hostile:
        headers = got[orjson.dumps(record)]
        assert headers["x-error"].decode().startswith(reason)
        assert headers["x-error"].decode().endswith(SUFFIX)
        assert headers["x-source-topic"].decode() == names.topic("payments")

    # the good ones alone, offline, as the reference (held events are judged after a quiet spell)
    expected = sorted((orjson.loads(a.to_json()) for a in run(load_text(SPEC), good).alerts), key=_by_key)
    assert [a["key"] for a in expected] == ["Zoë 🧑‍💻 \u202egnp.exe", "c-big"]

    # nothing more comes: c-quiet's 990 stays under the limit without the hostile 999s
    assert _alerts(kafka_bootstrap, names, "card_spend", len(expected)) == expected
    assert worker.metric("streamapp_detection_invalid_events_total", detection="card_spend") == len(hostile)
    assert worker.metric("streamapp_detection_events_total", detection="card_spend") == len(good)


def _transactions(start: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(good, hostile) transactions within one 10-s step: two cards with more than 5 (one alert
    each, whatever the arrival order), c-five with 5; each hostile one is on c-five (it would
    alert if counted) with one field the ingest refuses."""
    rnd = random.Random(7)
    good = []
    for card, n in (("c-six", 6), ("Zoë 🧑‍💻 \u202egnp.exe", 7), ("c-five", 5)):
        for _ in range(n):
            txn = {
                "ts": start + rnd.uniform(0.5, 9),
                "txn_id": f"t-{len(good)}",
                "card_id": card,
                "amount": 25.0,
            }
            good.append({**txn, "merchant": "m-1", "country": "NL"} if len(good) % 2 else txn)
    five = {"ts": start + 5, "txn_id": "t-x", "card_id": "c-five", "amount": 10.0}
    hostile = [
        {**five, "txn_id": "x" * 10_000}, {**five, "txn_id": "\x00"}, {**five, "txn_id": "__faust"},
        {**five, "txn_id": ""}, {**five, "card_id": "c-five\u2028"}, {**five, "merchant": "__faust\x00"},
        {**five, "country": "N\x85L"}, {**five, "amount": 1e300}, {**five, "amount": -1},
        {**five, "amount": "NaN"}, {**five, "amount": True}, {**five, "ts": time.time() + 1e6},
        {**five, "ts": -1}, {**five, "ts": "2026-01-01T00:00:00"}, {**five, "ts": 1.7e12},
    ]  # fmt: skip
    return good, hostile


#: how far ahead of the wall clock a refused time is: it moves between two parses
_AHEAD = re.compile(r" is \d+ s ahead ")


def test_a_spec_on_transactions_refuses_what_the_ingest_dead_letters_with_its_reason(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker]
) -> None:
    # card velocity as a spec in place of its rule (docs/detections.md, "Shipped detections")
    worker = worker_factory(STREAMAPP_RULES="none")
    applied = worker.detections("apply", "detections/card_velocity.yaml")
    assert applied.returncode == 0, applied.stderr
    worker.wait_for("/detections", lambda _, body: len(body.get("detections", [])) == 1, timeout=15)
    spec = load_file(ROOT / "detections" / "card_velocity.yaml")
    parse = compile_parser(spec)

    start = (time.time() - 3000) // 60 * 60
    good, hostile = _transactions(start)
    reasons = {}  # what the spec refuses each with, offline
    for txn in hostile:
        with pytest.raises(InvalidEvent) as info:
            parse(txn, None)
        reasons[orjson.dumps(txn)] = _AHEAD.sub("", str(info.value))
    values = shuffled([*map(orjson.dumps, good), *reasons], seed=4)
    asyncio.run(
        produce_spread(kafka_bootstrap, names.topic("transactions"), values=values, partitions=PARTITIONS)
    )

    # the ingest dead-letters each once, with the reason the spec gives offline word for word
    # (`streamapp detections test` tells what the app will do), and hands the spec the good ones only
    worker.wait_for_metric(
        "streamapp_detection_events_total", lambda v: v >= len(good), detection="card_velocity"
    )
    letters = asyncio.run(read_all(kafka_bootstrap, names.topic("dead-letters"), settle=2))
    assert {r.value: _AHEAD.sub("", dict(r.headers)["x-error"].decode()) for r in letters} == reasons
    assert len(letters) == len(hostile)
    assert worker.metric("streamapp_detection_invalid_events_total", detection="card_velocity") == 0
    assert worker.metric("streamapp_detection_events_total", detection="card_velocity") == len(good)

    expected = sorted((orjson.loads(a.to_json()) for a in run(spec, good).alerts), key=_by_key)
    assert [a["key"] for a in expected] == ["Zoë 🧑‍💻 \u202egnp.exe", "c-six"]
    # all of an alert but its time: the event that made the window alert, whichever arrived 6th
    untimed = [{**a, "ts": None} for a in _alerts(kafka_bootstrap, names, "card_velocity", len(expected))]
    assert untimed == [{**a, "ts": None} for a in expected]
