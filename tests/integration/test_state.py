"""State lives in RocksDB with changelog topics, and windows older than the retention expire.

Events are produced without keys, round robin over all partitions, as a producer that does not
know the entity sends them.
"""

from __future__ import annotations

import time

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.engine_state import ip_changelog, sensor_changelog, tombstoned
from tests.integration.kafka_io import produce_spread, read_all, read_until, shuffled

pytestmark = pytest.mark.integration


def _partitions(worker) -> int:
    """The partition count the worker creates its input topics with."""
    return int(worker.env["STREAMAPP_PARTITIONS"])


TABLES = ["prices-by-symbol", "detection-state"]
#: the detections' states are all in detection-state: no table per rule
NO_TABLES = ["failed-logins-by-ip", "logins-by-user", "temperature-by-sensor", "transactions-by-card"]


async def test_changelog_topics_exist_and_hold_the_table_updates(kafka_bootstrap, names, worker_factory):
    worker = worker_factory()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    for table in TABLES:
        assert f"{names.app_id}-{table}-changelog" in topics
    for table in NO_TABLES:
        assert f"{names.app_id}-{table}-changelog" not in topics

    base = (time.time() // 10) * 10 - 120
    logins = [{"ts": base + i, "ip": "10.2.3.4", "user": f"u{i}", "success": False} for i in range(4)]
    await produce_spread(kafka_bootstrap, names.topic("logins"), shuffled(logins, 2), _partitions(worker))
    worker.wait_for("/ips/10.2.3.4", lambda s, b: s == 200 and b["windows"][0]["failed"] == 4)

    changelog, key = ip_changelog(worker.env, "10.2.3.4")
    records = await read_until(kafka_bootstrap, changelog, lambda recs: any(r.key == key for r in recs))
    records = await read_all(kafka_bootstrap, changelog)
    updates = [r for r in records if r.key == key]
    # at most one write per event: a batch holding several events of one key writes it once
    assert 1 <= len(updates) <= 4
    newest = orjson.loads(updates[-1].value)
    assert sum(n for _, n in newest["buckets"]) == 4


async def test_windows_older_than_the_retention_expire(kafka_bootstrap, names, worker_factory):
    worker = worker_factory()
    partitions = _partitions(worker)
    now = time.time()

    def reading(sensor: str, ts: float) -> dict:
        return {"ts": ts, "sensor_id": sensor, "temperature": 20.0}

    # two hours ago, inside one minute window: kept while nothing newer has been seen
    two_hours_ago = (now - 7200) // 60 * 60 + 10
    old = [reading("old", two_hours_ago + i) for i in range(3)]
    await produce_spread(kafka_bootstrap, names.topic("sensor-readings"), shuffled(old, 1), partitions)
    worker.wait_for("/sensors/old", lambda s, b: s == 200 and b["windows"][0]["count"] == 3)

    # a reading of now moves the event clock: the old windows are beyond the one-hour retention
    await produce_spread(kafka_bootstrap, names.topic("sensor-readings"), [reading("new", now)], partitions)
    worker.wait_for("/sensors/new", lambda s, b: s == 200)
    assert worker.get("/sensors/old")[0] == 404

    # ... and the expiry timer removes the key from RocksDB and writes a tombstone to the changelog
    # (of each sensor spec's state in detection-state)
    changelog, keys = sensor_changelog(worker.env, "old")
    await read_until(kafka_bootstrap, changelog, lambda recs: tombstoned(recs, keys), within=30)

    # an event older than the retention on arrival is not added to state: it is counted and
    # lands in late-events with its reason, once (on specs too, where both sensor detections refuse it)
    late = reading("late", now - 5000)
    await produce_spread(kafka_bootstrap, names.topic("sensor-readings"), [late], partitions)
    worker.wait_for_metric(
        "streamapp_expired_events_total", lambda v: v == 1, topic=names.topic("sensor-readings")
    )
    records = await read_until(kafka_bootstrap, names.topic("late-events"), lambda recs: len(recs) >= 1)
    records += await read_all(kafka_bootstrap, names.topic("late-events"), settle=1.0)
    records = list({(r.partition, r.offset): r for r in records}.values())
    assert [orjson.loads(r.value) for r in records] == [late]
    assert "older than the retention" in dict(records[0].headers)["x-error"].decode()
    assert worker.get("/sensors/late")[0] == 404
    assert worker.get("/sensors/new")[0] == 200

    # expired keys stay gone: the table's changelog ends with the tombstone
    assert tombstoned(await read_all(kafka_bootstrap, changelog), keys)
