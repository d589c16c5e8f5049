"""Detections as data on the real broker: specs applied to a running worker, with no code per detection."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamapp.detections.spec import load_text
from tests.integration.conftest import Names, Worker
from tests.integration.kafka_io import produce_spread, read_all, read_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
#: the workers run only what the control topic gives them, not the shipped detections
ONLY_APPLIED = {"STREAMAPP_RULES": "none"}


def _shuffled_within(events: list[dict[str, Any]], grace: float, seed: int) -> list[dict[str, Any]]:
    """A random arrival order in which nothing arrives after an event more than ``grace`` newer."""
    rnd = random.Random(seed)
    return sorted(events, key=lambda e: e["ts"] + rnd.uniform(0, grace))


def _alerts(
    bootstrap: str, names: Names, kind: str, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict]:
    def mine(records: list[Any]) -> list[dict[str, Any]]:
        return [a for a in (orjson.loads(r.value) for r in records) if a["kind"] == kind]

    records = asyncio.run(read_until(bootstrap, names.topic("alerts"), lambda rs: done(mine(rs)), within=90))
    return mine(records)


def _wait_running(worker: Worker, name: str, version: int | None, within: float = 5.0) -> float:
    """Seconds until GET /detections shows ``name`` at ``version`` (None: not running)."""
    started = time.monotonic()

    def check(status: int, body: dict) -> bool:
        rows = {row["name"]: row["version"] for row in body.get("detections", [])}
        return status == 200 and rows.get(name) == version

    worker.wait_for("/detections", check, timeout=within)
    return time.monotonic() - started


def _flows(base: float, src: str, ports: int) -> list[dict[str, Any]]:
    return [
        {"ts": base + i * 0.25, "src_ip": src, "dst_ip": "10.9.9.9", "dst_port": 1000 + i, "proto": "tcp"}
        for i in range(ports)
    ]


def test_port_scan_and_silent_sensor_alert_end_to_end_from_spec_files(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**ONLY_APPLIED)
    result = worker.detections("apply", "detections/port_scan.yaml", "detections/silent_sensor.yaml")
    assert result.returncode == 0, result.stderr
    _wait_running(worker, "port_scan", 1, within=10)
    _wait_running(worker, "silent_sensor", 1, within=10)

    base = time.time() - 3000
    # 25 distinct ports from one IP within 6 s (alerts), 15 from another (does not), shuffled over
    # every partition (each IP's events span less than the spec's grace of 10 s); icmp does not count
    flows = _flows(base, "10.0.0.66", 25) + _flows(base, "10.0.0.15", 15)
    flows += [{"ts": base + 1, "src_ip": "10.0.0.15", "dst_ip": "x", "dst_port": 7000 + i, "proto": "icmp"}
              for i in range(10)]  # fmt: skip
    bad = [
        b"not json",
        orjson.dumps({"ts": base, "src_ip": "10.0.0.1", "dst_port": "22", "dst_ip": "x", "proto": "tcp"}),
    ]
    asyncio.run(
        produce_spread(
            kafka_bootstrap,
            names.topic("network-flows"),
            partitions=PARTITIONS,
            values=[*_shuffled_within(flows, 10, 1), *bad],
        )
    )

    # both sensors report for 20 s (less than the grace of 30 s), shuffled; later s-busy reports
    # at 400 s: s-quiet has been silent for more than 300 s of event time since its last reading
    readings = [
        {"ts": base + i * 2, "sensor_id": s, "temperature": 20.0}
        for i in range(11)
        for s in ("s-quiet", "s-busy")
    ]
    asyncio.run(
        produce_spread(
            kafka_bootstrap,
            names.topic("sensor-readings"),
            partitions=PARTITIONS,
            values=_shuffled_within(readings, 30, 2),
        )
    )
    worker.wait_for_metric("streamapp_detection_events_total", lambda v: v >= 22, detection="silent_sensor")
    later = [{"ts": base + 400, "sensor_id": "s-busy", "temperature": 21.0}]
    asyncio.run(
        produce_spread(kafka_bootstrap, names.topic("sensor-readings"), partitions=PARTITIONS, values=later)
    )

    scans = _alerts(kafka_bootstrap, names, "port_scan", lambda a: len(a) >= 1)
    assert [(a["key"], a["value"], a["threshold"]) for a in scans] == [("10.0.0.66", 21.0, 20.0)]
    assert "10.0.0.66 reached 21 distinct ports" in scans[0]["detail"]
    # s-quiet by the watermark; s-busy for its own gap, once its reading at 400 s is judged (after
    # a quiet spell of the grace: nothing newer comes)
    silent = _alerts(kafka_bootstrap, names, "silent_sensor", lambda a: len(a) >= 2)
    assert sorted((a["key"], a["ts"]) for a in silent) == [("s-busy", base + 320), ("s-quiet", base + 320)]
    assert silent[0]["key"] == "s-quiet"

    letters = asyncio.run(read_until(
        kafka_bootstrap, names.topic("dead-letters"), lambda rs: len(rs) >= 2, within=30))  # fmt: skip
    reasons = sorted(dict(r.headers)["x-error"].decode() for r in letters)
    assert reasons[0].startswith("field 'dst_port' must be a finite number, got string (detection port_scan)")
    assert reasons[1].startswith("malformed JSON")
    # nothing more arrives (the sliding window's throttle holds), and no event was late
    time.sleep(5)
    everything = [
        orjson.loads(r.value) for r in asyncio.run(read_all(kafka_bootstrap, names.topic("alerts")))
    ]
    assert sorted(a["kind"] for a in everything) == ["port_scan", "silent_sensor", "silent_sensor"]
    assert asyncio.run(read_all(kafka_bootstrap, names.topic("late-events"), settle=0)) == []


def test_apply_changes_a_running_worker_within_5_s_and_disable_stops_it(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], tmp_path: Path
) -> None:
    worker = worker_factory(**ONLY_APPLIED)
    assert worker.detections("apply", "detections/port_scan.yaml").returncode == 0
    _wait_running(worker, "port_scan", 1, within=10)
    base = time.time() - 3000
    asyncio.run(
        produce_spread(
            kafka_bootstrap,
            names.topic("network-flows"),
            partitions=PARTITIONS,
            values=_flows(base, "10.1.0.1", 12),
        )
    )
    # 12 ports: no alert under version 1, once judged (a quiet spell of the grace judges them)
    worker.wait_for(
        "/detections", lambda _, body: [(r["keys"], r["held_keys"]) for r in body["detections"]] == [(1, 0)]
    )

    # version 2: a threshold of 10 (state kept: the same window and key)
    text = (ROOT / "detections/port_scan.yaml").read_text()
    lower = tmp_path / "port_scan.yaml"
    lower.write_text(text.replace("version: 1", "version: 2").replace("value: 20", "value: 10"))
    same_version = tmp_path / "same.yaml"
    same_version.write_text(text.replace("value: 20", "value: 10"))
    refused = worker.detections("apply", str(same_version))
    assert refused.returncode == 1 and "raise its version" in refused.stderr
    diff = worker.detections("diff", str(lower))
    assert diff.returncode == 1 and "changed, state kept" in diff.stdout and '+  "version": 2' in diff.stdout
    assert worker.detections("apply", str(lower)).returncode == 0
    assert _wait_running(worker, "port_scan", 2, within=5) <= 5
    asyncio.run(
        produce_spread(
            kafka_bootstrap,
            names.topic("network-flows"),
            partitions=PARTITIONS,
            values=_flows(base + 200, "10.1.0.2", 12),
        )
    )
    scans = _alerts(kafka_bootstrap, names, "port_scan", lambda a: len(a) >= 1)
    assert [(a["key"], a["value"], a["threshold"]) for a in scans] == [("10.1.0.2", 11.0, 10.0)]

    listed = worker.detections("list", "--json")
    assert [orjson.loads(line)["version"] for line in listed.stdout.splitlines()] == [2]
    assert worker.detections("disable", "port_scan").returncode == 0
    _wait_running(worker, "port_scan", None, within=5)
    asyncio.run(
        produce_spread(
            kafka_bootstrap,
            names.topic("network-flows"),
            partitions=PARTITIONS,
            values=_flows(base + 400, "10.1.0.3", 30),
        )
    )
    time.sleep(15)
    everything = [
        orjson.loads(r.value) for r in asyncio.run(read_all(kafka_bootstrap, names.topic("alerts")))
    ]
    assert [a["key"] for a in everything] == ["10.1.0.2"]


def test_bad_specs_are_refused_and_bad_control_records_survived(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], tmp_path: Path
) -> None:
    worker = worker_factory(**ONLY_APPLIED)
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "detections/port_scan.yaml").read_text().replace("key: src_ip", "key: source"))
    refused = worker.detections("apply", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:17: key: field 'source' is not declared in source.fields" in refused.stderr

    async def control(records: list[tuple[bytes, bytes | None]]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for key, value in records:
                await (await producer.send(names.topic("detections"), key=key, value=value))
        finally:
            await producer.stop()

    port_scan = (ROOT / "detections/port_scan.yaml").read_text()
    asyncio.run(control([
        (b"broken", b"{not json"),
        (b"x", orjson.dumps({"name": "x"})),
        (b"\xff", b"{}"),
        (b"other", orjson.dumps(load_text(port_scan).data)),  # the key is not the spec's name
    ]))  # fmt: skip
    worker.wait_for_metric("streamapp_detection_control_errors_total", lambda v: v >= 4)
    assert "detections control record" in worker.log_text() and "ignored" in worker.log_text()
    # the worker goes on: a good spec after them runs and alerts
    assert worker.detections("apply", "detections/port_scan.yaml").returncode == 0
    _wait_running(worker, "port_scan", 1, within=10)
    asyncio.run(
        produce_spread(
            kafka_bootstrap,
            names.topic("network-flows"),
            partitions=PARTITIONS,
            values=_flows(time.time() - 100, "10.2.0.1", 22),
        )
    )
    scans = _alerts(kafka_bootstrap, names, "port_scan", lambda a: len(a) >= 1)
    assert [a["key"] for a in scans] == ["10.2.0.1"]
    assert worker.get("/live")[0] == 200


BADGE_SPEC = """
name: badge_burst
version: 1
description: A badge swiped at least 8 times in a minute, on a topic no worker read before.
severity: medium
grace: 10
source:
  topic: badge-swipes
  fields: {ts: timestamp, badge: string, door: string}
key: badge
window: {type: tumbling, size: 60}
aggregate: {fn: count}
condition: {type: threshold, op: ">=", value: 8}
alert:
  text: "{key} swiped {value:.0f} times, last at {door}"
"""


async def _partition_count(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return 0
        described = await admin.describe_topics([topic])
        return len(described[0]["partitions"])
    finally:
        await admin.close()


def test_apply_on_a_new_topic_subscribes_running_workers_and_the_other_detections_go_on(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker], tmp_path: Path
) -> None:
    # two workers: each subscribes (the group's partitions of the new topic are split between them)
    workers = [worker_factory(**ONLY_APPLIED), worker_factory(**ONLY_APPLIED)]
    worker = workers[0]
    assert worker.detections("apply", "detections/port_scan.yaml").returncode == 0
    for each in workers:
        _wait_running(each, "port_scan", 1, within=10)
    base = time.time() - 3000
    flows = names.topic("network-flows")
    asyncio.run(
        produce_spread(kafka_bootstrap, flows, partitions=PARTITIONS, values=_flows(base, "10.3.0.1", 25))
    )
    assert len(_alerts(kafka_bootstrap, names, "port_scan", lambda a: len(a) >= 1)) == 1

    # a spec on a topic that does not exist yet: the workers create it and subscribe, no restart
    swipes = names.topic("badge-swipes")
    assert asyncio.run(_partition_count(kafka_bootstrap, swipes)) == 0
    spec = tmp_path / "badge_burst.yaml"
    spec.write_text(BADGE_SPEC)
    assert worker.detections("apply", str(spec)).returncode == 0
    applied = time.monotonic()  # the spec is on the control topic
    # the running detection's events go on arriving while the workers subscribe (a rebalance)
    asyncio.run(
        produce_spread(
            kafka_bootstrap, flows, partitions=PARTITIONS, values=_flows(base + 200, "10.3.0.2", 25)
        )
    )
    deadline = time.monotonic() + 30
    while asyncio.run(_partition_count(kafka_bootstrap, swipes)) != PARTITIONS:
        assert time.monotonic() < deadline, "the worker did not create the new topic"
        time.sleep(0.2)
    created = time.monotonic() - applied
    # 8 swipes of one badge (alerts only if every one counts) and 7 of another, unkeyed over every
    # partition, shuffled within the grace (10 s); produced as soon as the topic exists, before the
    # workers are assigned its partitions: read from the earliest offset, none is lost
    minute = base // 60 * 60 + 10  # within one minute's tumbling window
    events = [{"ts": minute + i, "badge": "b-7", "door": f"d{i}"} for i in range(8)]
    events += [{"ts": minute + i + 0.5, "badge": "b-2", "door": "d0"} for i in range(7)]
    producing = time.monotonic()
    asyncio.run(
        produce_spread(kafka_bootstrap, swipes, partitions=PARTITIONS, values=_shuffled_within(events, 10, 3))
    )
    produced = time.monotonic() - producing
    deadline = time.monotonic() + 30
    while (
        sum(each.metric("streamapp_detection_events_total", detection="badge_burst") for each in workers) < 15
    ):
        assert time.monotonic() < deadline, "the new topic's events were not all applied"
        time.sleep(0.1)
    counting = time.monotonic() - applied
    badges = _alerts(kafka_bootstrap, names, "badge_burst", lambda a: len(a) >= 1)
    alerted = time.monotonic() - applied
    print(
        f"new topic after apply: created {created:.2f} s, every event applied {counting:.2f} s "
        f"(of which producing {produced:.2f} s), alert {alerted:.2f} s"
    )
    assert [(a["key"], a["value"], a["threshold"]) for a in badges] == [("b-7", 8.0, 8.0)]
    assert "b-7 swiped 8 times" in badges[0]["detail"]
    assert counting - produced <= 5, "the new topic's events were not applied within 5 s of the apply"
    body = worker.get("/detections")[1]
    # the app's input topics (their ingest hands events over), STREAMAPP_DETECTION_TOPICS and the new one
    assert body["topics"] == ["badge-swipes", "logins", "network-flows", "sensor-readings", "stock-prices",
                              "transactions"]  # fmt: skip
    assert {row["name"]: row["subscribed"] for row in body["detections"]} == {
        "badge_burst": True,
        "port_scan": True,
    }

    # port_scan alerted for the scan produced during the change, and still does after it
    asyncio.run(
        produce_spread(
            kafka_bootstrap, flows, partitions=PARTITIONS, values=_flows(base + 400, "10.3.0.3", 25)
        )
    )
    scans = _alerts(kafka_bootstrap, names, "port_scan", lambda a: len(a) >= 3)
    assert sorted(a["key"] for a in scans) == ["10.3.0.1", "10.3.0.2", "10.3.0.3"]
    assert asyncio.run(read_all(kafka_bootstrap, names.topic("late-events"), settle=0)) == []


def test_a_restarted_worker_ticks_the_keys_it_holds_again(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**ONLY_APPLIED)
    assert worker.detections("apply", "detections/silent_sensor.yaml").returncode == 0
    _wait_running(worker, "silent_sensor", 1, within=10)
    base = time.time() - 3000
    readings = [
        {"ts": base + i * 2, "sensor_id": s, "temperature": 20.0}
        for i in range(11)
        for s in ("s-quiet", "s-busy")
    ]
    sensors = names.topic("sensor-readings")
    asyncio.run(
        produce_spread(
            kafka_bootstrap, sensors, partitions=PARTITIONS, values=_shuffled_within(readings, 30, 4)
        )
    )
    worker.wait_for_metric("streamapp_detection_events_total", lambda v: v >= 22, detection="silent_sensor")

    # restarted with the readings still held (the grace is 30 s): nothing new arrives for s-quiet;
    # s-busy reports at 400 s, past s-quiet's last reading + 300 s + the grace
    worker.restart().wait_ready()
    _wait_running(worker, "silent_sensor", 1, within=30)
    later = [{"ts": base + 400, "sensor_id": "s-busy", "temperature": 21.0}]
    asyncio.run(produce_spread(kafka_bootstrap, sensors, partitions=PARTITIONS, values=later))
    silent = _alerts(kafka_bootstrap, names, "silent_sensor", lambda a: any(x["key"] == "s-quiet" for x in a))
    assert [(a["key"], a["ts"]) for a in silent if a["key"] == "s-quiet"] == [("s-quiet", base + 320)]
    assert "detection tick index rebuilt: silent_sensor 2 keys" in worker.log_text()
