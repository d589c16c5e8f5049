"""Event time on the real broker: the six rules give the same alerts and views in any arrival order.

The same incidents arrive twice, for different entities: once keyed and newest first (so the
order is exactly reversed), once produced without keys over all eight partitions in a shuffled
order (what a producer that does not know the entity does). Each entity's events span less
than the grace, so both must give exactly the alerts and views of event-time order. An event
later than the grace lands in `late-events`, byte for byte, with its reason and coordinates.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.kafka_io import produce, produce_spread, read_all, read_until

pytestmark = pytest.mark.integration

PARTITIONS = 8
GRACE = 30


def _incidents(base: float, tag: str) -> dict[str, list[dict[str, Any]]]:
    """Events of every rule for entities named with ``tag``, in event-time order."""
    logins = (
        # brute_force: six failures from one IP within 20 s; five from another
        [{"ts": base + 4 * i, "ip": f"10.{tag}.0.6", "user": f"bf-{i}", "success": False} for i in range(6)]
        + [{"ts": base + 4 * i, "ip": f"10.{tag}.0.5", "user": f"bf-{i}", "success": False} for i in range(5)]
        # account_takeover: three failures, then the success (and two failures then a success)
        + [
            {"ts": base + 5 * i, "ip": f"10.{tag}.1.1", "user": f"ato3-{tag}", "success": False}
            for i in range(3)
        ]
        + [{"ts": base + 15, "ip": f"10.{tag}.1.2", "user": f"ato3-{tag}", "success": True}]
        + [
            {"ts": base + 5 * i, "ip": f"10.{tag}.1.3", "user": f"ato2-{tag}", "success": False}
            for i in range(2)
        ]
        + [{"ts": base + 15, "ip": f"10.{tag}.1.4", "user": f"ato2-{tag}", "success": True}]
    )
    transactions = (
        # card_velocity: six transactions within 25 s
        [{"ts": base + 5 * i, "txn_id": f"v{i}", "card_id": f"vel-{tag}", "amount": 20.0} for i in range(6)]
        # amount_spike: five ordinary ones, then one of 50 x their mean (six in 25 s: velocity too)
        + [{"ts": base + 4 * i, "txn_id": f"s{i}", "card_id": f"spk-{tag}", "amount": 10.0} for i in range(5)]
        + [{"ts": base + 25, "txn_id": "big", "card_id": f"spk-{tag}", "amount": 500.0}]
    )
    readings = (
        # high_temperature: one hot reading among ordinary ones
        [{"ts": base + i, "sensor_id": f"hot-{tag}", "temperature": 20.0 + 100 * (i == 3)} for i in range(6)]
        # temperature_anomaly: thirty readings of mean 20 and deviation 0.5, then 50
        + [{"ts": base + i / 2, "sensor_id": f"anom-{tag}", "temperature": 19.5 + i % 2} for i in range(30)]
        + [{"ts": base + 20, "sensor_id": f"anom-{tag}", "temperature": 50.0}]
    )
    return {"logins": logins, "transactions": transactions, "sensor-readings": readings}


def _expected(tag: str) -> Counter:
    return Counter(
        {
            ("brute_force", f"10.{tag}.0.6"): 1,
            ("account_takeover", f"ato3-{tag}"): 1,
            ("card_velocity", f"vel-{tag}"): 1,
            ("card_velocity", f"spk-{tag}"): 1,
            ("amount_spike", f"spk-{tag}"): 1,
            ("high_temperature", f"hot-{tag}"): 1,
            ("temperature_anomaly", f"anom-{tag}"): 1,
        }
    )


_ENTITY = {"logins": "ip", "transactions": "card_id", "sensor-readings": "sensor_id"}


async def test_every_rule_gives_the_same_answers_newest_first_and_unkeyed_shuffled(
    kafka_bootstrap, names, worker_factory
):
    worker = worker_factory(STREAMAPP_PARTITIONS=str(PARTITIONS), STREAMAPP_GRACE_SECONDS=str(GRACE))
    base = (time.time() - 600) // 60 * 60
    keyed, unkeyed = _incidents(base, "7"), _incidents(base, "8")
    shuffle = random.Random(14)
    for topic, events in keyed.items():
        # keyed by the entity: one partition per entity, so newest first is exactly the arrival order
        newest_first = sorted(events, key=lambda e: -e["ts"])
        field = _ENTITY[topic]
        await produce(kafka_bootstrap, names.topic(topic), newest_first, lambda e, f=field: e[f])
    for topic, events in unkeyed.items():
        await produce_spread(
            kafka_bootstrap, names.topic(topic), shuffle.sample(events, len(events)), PARTITIONS
        )

    expected = _expected("7") + _expected("8")
    # amount_spike and temperature_anomaly wait for a quiet grace (30 s of wall time) before judging
    await read_until(
        kafka_bootstrap, names.topic("alerts"), lambda recs: len(recs) >= sum(expected.values()), within=120
    )
    records = await read_all(kafka_bootstrap, names.topic("alerts"), settle=3.0)
    alerts = Counter((orjson.loads(r.value)["kind"], r.key.decode()) for r in records)
    assert alerts == expected

    for tag in ("7", "8"):
        ips = worker.wait_for(f"/ips/10.{tag}.0.6", lambda s, b: s == 200)
        assert sum(w["failed"] for w in ips["windows"]) == 6
        card = worker.wait_for(f"/cards/spk-{tag}", lambda s, b: s == 200)
        assert card["count"] == 6 and card["mean_amount"] == pytest.approx(550 / 6)
        sensor = worker.wait_for(f"/sensors/anom-{tag}", lambda s, b: s == 200)
        assert sum(w["count"] for w in sensor["windows"]) == 31
        assert sensor["last"] == {"ts": base + 20, "temperature": 50.0}
    assert worker.metric("streamapp_late_events_total", topic=names.topic("logins")) == 0


async def test_an_event_later_than_the_grace_goes_to_late_events(kafka_bootstrap, names, worker_factory):
    worker = worker_factory(STREAMAPP_GRACE_SECONDS=str(GRACE))
    base = (time.time() - 600) // 60 * 60
    ip = "10.66.0.1"
    await produce(
        kafka_bootstrap, names.topic("logins"),
        [{"ts": base + 100, "ip": ip, "user": "u", "success": False}], lambda e: e["ip"],
    )  # fmt: skip
    worker.wait_for(f"/ips/{ip}", lambda s, b: s == 200 and sum(w["failed"] for w in b["windows"]) == 1)
    # 70 s behind the newest event of its IP: 40 s beyond the grace
    late_value = b'{"ts": %d, "ip": "%s", "user": "u", "success": false}' % (base + 30, ip.encode())
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await (await producer.send(names.topic("logins"), value=late_value, key=ip.encode()))
    finally:
        await producer.stop()

    # late for both login detections (per IP and per user): one record for each
    records = await read_until(kafka_bootstrap, names.topic("late-events"), lambda recs: len(recs) >= 2)
    records += await read_all(kafka_bootstrap, names.topic("late-events"), settle=1.0)
    assert len({(r.partition, r.offset) for r in records}) == 2
    detections = set()
    for record in records:
        assert record.value == late_value
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["x-source-topic"] == names.topic("logins")
        assert headers["x-source-partition"] == str(sent.partition)
        assert headers["x-source-offset"] == str(sent.offset)
        assert "grace 30 s" in headers["x-error"]
        detections.add(headers["x-error"].split(":")[0])
        assert float(headers["x-lateness-seconds"]) == pytest.approx(40.0)
    assert detections == {
        "late event for failed-logins-by-ip", "late event for logins-by-user"
    }  # fmt: skip
    worker.wait_for_metric("streamapp_late_events_total", lambda v: v == 2, topic=names.topic("logins"))
    ips = worker.get(f"/ips/{ip}")[1]
    assert sum(w["failed"] for w in ips["windows"]) == 1  # never in state
