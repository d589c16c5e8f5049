"""Hostile but well-formed input on the real broker: refused at ingest with a reason, never a 500."""

from __future__ import annotations

import time
from urllib.parse import quote

import orjson
import pytest

from tests.integration.kafka_io import produce, read_until

pytestmark = pytest.mark.integration

#: ids no entity may have: faust's own keys (offsets, our event clock), control characters
HOSTILE_IDS = [
    "__faust\x00offset__",
    "__faust\x00streamapp-event-clock__",
    "__faust",
    "nul\x00inside",
    "line\nfeed",
    "carriage\rreturn",
    "esc\x1b[31m",
    "del\x7f",
    "nel\x85",
    "sep\u2028arator",
]


def _path(view: str, key: str) -> str:
    return f"/{view}/{quote(key, safe='')}"


async def test_hostile_ids_and_times_are_dead_letters_and_views_answer_400_or_404(
    kafka_bootstrap, names, worker_factory
):
    worker = worker_factory()
    now = time.time()
    # control traffic on enough keys that every partition holds state and faust's keys
    logins = [{"ts": now - 5, "ip": f"10.7.0.{i}", "user": f"u{i}", "success": False} for i in range(16)]
    readings = [{"ts": now - 5, "sensor_id": f"s{i}", "temperature": 20.0} for i in range(16)]
    txns = [{"ts": now - 5, "txn_id": f"t{i}", "card_id": f"c{i}", "amount": 1e9} for i in range(16)]
    ticks = [{"ts": now - 5, "symbol": f"SYM{i}", "price": 1e9 if i % 2 else 5e-324} for i in range(16)]
    hostile_logins = [
        {"ts": now - 5, "ip": bad, "user": "mallory", "success": False} for bad in HOSTILE_IDS
    ] + [
        {"ts": now - 5, "ip": "10.7.1.1", "user": bad, "success": False} for bad in HOSTILE_IDS
    ] + [
        {"ts": 3786825600, "ip": "10.7.1.2", "user": "mallory", "success": False},  # 2090, number
        {"ts": "2090-01-01T00:00:00+00:00", "ip": "10.7.1.2", "user": "mallory", "success": False},
    ]  # fmt: skip
    hostile_txns = [{"ts": now - 5, "txn_id": "big", "card_id": "c0", "amount": 1e300}]
    hostile_ticks = [{"ts": now - 5, "symbol": "SYM0", "price": 1.7e308}]
    await produce(kafka_bootstrap, names.topic("logins"), logins + hostile_logins)
    await produce(kafka_bootstrap, names.topic("sensor-readings"), readings)
    await produce(kafka_bootstrap, names.topic("transactions"), txns + hostile_txns)
    await produce(kafka_bootstrap, names.topic("stock-prices"), ticks + hostile_ticks)
    # no ts and a record timestamp 50 min ahead (the broker refuses more than an hour by default):
    # the record-timestamp fallback is bounded too
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        raw = orjson.dumps({"ip": "10.7.1.3", "user": "mallory", "success": False})
        await producer.send_and_wait(names.topic("logins"), raw, timestamp_ms=int((now + 3000) * 1000))
    finally:
        await producer.stop()

    expected = len(hostile_logins) + len(hostile_txns) + len(hostile_ticks) + 1
    records = await read_until(
        kafka_bootstrap, names.topic("dead-letters"), lambda recs: len(recs) >= expected
    )
    reasons = sorted(dict(r.headers)["x-error"].decode() for r in records)
    assert len(reasons) == expected, reasons
    assert sum("field 'ip' " in r for r in reasons) == len(HOSTILE_IDS)
    assert sum("field 'user' " in r for r in reasons) == len(HOSTILE_IDS)
    assert sum("ahead of the wall clock (STREAMAPP_MAX_CLOCK_SKEW_SECONDS=300)" in r for r in reasons) == 3
    assert sum(r.startswith("record timestamp (no field 'ts')") for r in reasons) == 1
    assert "field 'amount'=1e+300 exceeds STREAMAPP_MAX_AMOUNT=1000000000" in reasons
    assert "field 'price'=1.7e+308 exceeds STREAMAPP_MAX_PRICE=1000000000" in reasons

    # the control traffic went through, the derived figures are finite, the clock did not jump
    for i in range(16):
        worker.wait_for(f"/ips/10.7.0.{i}", lambda s, b: s == 200 and b["failed_logins_60s"] == 1)
        worker.wait_for(f"/sensors/s{i}", lambda s, b: s == 200)
        worker.wait_for(f"/cards/c{i}", lambda s, b: s == 200 and b["mean_amount"] == 1e9)
        worker.wait_for(f"/stocks/SYM{i}", lambda s, b: s == 200 and b["last"] in (1e9, 5e-324))
    assert worker.get("/ips/10.7.1.1")[0] == 404  # every login of that IP had a hostile user

    # lookups of ids no event can have: 400 (or 404), never 500, and the worker stays up
    views = ["ips", "users", "sensors", "cards", "stocks"]
    for view in views:
        for key in HOSTILE_IDS:
            status, body = worker.get(_path(view, key))
            assert status == 400, (view, key, status, body)
            assert body["error"].startswith("bad "), body
        for path in (f"/{view}/%FF", f"/{view}/%ED%A0%80", f"/{view}/{'x' * 300}", f"/{view}/_ann"):
            status, body = worker.get(path)
            assert status in (400, 404), (path, status, body)
    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.get("/ips/10.7.0.1")[0] == 200
    assert "Traceback" not in worker.log_text()
