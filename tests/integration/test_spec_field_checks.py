"""A spec on a new topic refuses hostile records as the ingest does: dead letters with reasons, no alert."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamapp.detections.spec import load_text
from streamapp.detections.testing import run
from tests.integration.conftest import Names, Worker
from tests.integration.kafka_io import produce_spread, read_all, read_until, shuffled

pytestmark = pytest.mark.integration

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

    def mine(records: list[Any]) -> list[dict[str, Any]]:
        return [a for a in (orjson.loads(r.value) for r in records) if a["kind"] == "card_spend"]

    asyncio.run(read_until(kafka_bootstrap, names.topic("alerts"), lambda rs: len(mine(rs)) >= 2, within=30))
    # nothing more comes: c-quiet's 990 stays under the limit without the hostile 999s
    alerts = mine(asyncio.run(read_all(kafka_bootstrap, names.topic("alerts"), settle=3)))
    assert sorted(alerts, key=_by_key) == expected
    assert worker.metric("streamapp_detection_invalid_events_total", detection="card_spend") == len(hostile)
    assert worker.metric("streamapp_detection_events_total", detection="card_spend") == len(good)
