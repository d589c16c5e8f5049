"""Crashes, restarts and a second worker: state is rebuilt from changelogs and nothing is lost.

Events are produced without keys, round robin over all partitions and in random event-time
order, as a producer that does not know the entity sends them. Each entity's events span less
than the grace these workers run with (GRACE), so every one of them must count.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.integration.engine_state import sensor_changelog, tombstoned
from tests.integration.kafka_io import produce_spread, read_all, read_until

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: the test data spreads each entity's events over 5 minutes of event time, in random order
GRACE = {"STREAMAPP_GRACE_SECONDS": "300"}
#: the partition count the workers of worker_factory create input topics with
PARTITIONS = 4


def _record(name: str, **figures: float) -> None:
    """Keep measured figures (recovery times) as a test artifact."""
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "fault-tolerance.jsonl", "a") as out:
        out.write(json.dumps({"test": name, **figures}) + "\n")


def _logins(rng: random.Random, n: int, ips: int, base: float) -> list[dict]:
    # failures only, spread over 5 minutes: each IP's count is the ground truth
    return [
        {
            "ts": base + rng.random() * 300,
            "ip": f"10.50.{i % ips // 250}.{i % ips % 250}",
            "user": "u",
            "success": False,
        }
        for i in (rng.randrange(ips) for _ in range(n))
    ]


def _readings(rng: random.Random, n: int, sensors: int, base: float) -> list[dict]:
    return [
        {
            "ts": base + rng.random() * 300,
            "sensor_id": f"s{rng.randrange(sensors)}",
            "temperature": 20 + rng.random(),
        }
        for _ in range(n)
    ]


def _truth(logins: list[dict], readings: list[dict]) -> tuple[Counter, Counter]:
    return Counter(e["ip"] for e in logins), Counter(e["sensor_id"] for e in readings)


def _state_matches(worker, failed_by_ip: Counter, readings_by_sensor: Counter) -> list[str]:
    """Keys whose view differs from the ground truth (empty when every table matches)."""
    wrong = []
    for ip, n in failed_by_ip.items():
        status, body = worker.get(f"/ips/{ip}")
        got = sum(w["failed"] for w in body["windows"]) if status == 200 else 0
        if got != n:
            wrong.append(f"{ip}: {got} != {n}")
    for sensor, n in readings_by_sensor.items():
        status, body = worker.get(f"/sensors/{sensor}")
        got = sum(w["count"] for w in body["windows"]) if status == 200 else 0
        if got != n:
            wrong.append(f"{sensor}: {got} != {n}")
    return wrong


def _wait_until_matches(worker, truth: tuple[Counter, Counter], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while wrong := _state_matches(worker, *truth):
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(wrong)} keys differ from the ground truth, e.g. {wrong[:5]}")
        time.sleep(0.5)


def _time_to_ready(worker, timeout: float = 120.0) -> float:
    started = time.monotonic()
    worker.wait_ready(timeout)
    return time.monotonic() - started


async def _produce_slowly(bootstrap: str, topic: str, events: list[dict], chunks: int = 20) -> None:
    size = len(events) // chunks + 1
    for i in range(0, len(events), size):
        await produce_spread(bootstrap, topic, events[i : i + size], PARTITIONS)
        await asyncio.sleep(0.25)


async def test_crash_with_state_lost_recovers_every_table_exactly(kafka_bootstrap, names, worker_factory):
    rng = random.Random(11)
    base = time.time() - 900
    worker = worker_factory(**GRACE)
    logins, readings = _logins(rng, 3000, 120, base), _readings(rng, 1500, 40, base)
    await produce_spread(kafka_bootstrap, names.topic("logins"), logins, PARTITIONS)
    await produce_spread(kafka_bootstrap, names.topic("sensor-readings"), readings, PARTITIONS)
    _wait_until_matches(worker, _truth(logins, readings))

    # kill -9 once everything is processed, and lose the local RocksDB files
    worker.kill()
    shutil.rmtree(worker.data_dir)
    worker.start()
    recovery_from_changelog = _time_to_ready(worker)
    # ready means recovered: the views are complete the moment /ready says 200
    assert _state_matches(worker, *_truth(logins, readings)) == []

    # kill -9 in the middle of a stream, lose the files again: nothing lost, nothing counted twice
    more_logins, more_readings = _logins(rng, 4000, 120, base), _readings(rng, 2000, 40, base)
    stream = asyncio.gather(
        _produce_slowly(kafka_bootstrap, names.topic("logins"), more_logins),
        _produce_slowly(kafka_bootstrap, names.topic("sensor-readings"), more_readings),
    )
    await asyncio.sleep(2.0)
    worker.wait_for_metric("streamapp_events_total", lambda v: v > 0, topic="logins")
    worker.kill()
    shutil.rmtree(worker.data_dir)
    worker.start()
    await stream
    _time_to_ready(worker)
    _wait_until_matches(worker, _truth(logins + more_logins, readings + more_readings), timeout=240)

    # a restart that keeps its RocksDB files does not replay the whole changelog
    worker.stop()
    worker.start()
    recovery_with_local_state = _time_to_ready(worker)
    assert _state_matches(worker, *_truth(logins + more_logins, readings + more_readings)) == []
    log = worker.log_text().split("Starting...")[-1]
    _record(
        "crash_and_restart",
        ready_s_from_changelog=round(recovery_from_changelog, 2),
        ready_s_with_local_state=round(recovery_with_local_state, 2),
        changelog_records=len(logins + more_logins) + len(readings + more_readings),
    )
    assert "Restore complete" in worker.log_text()
    assert log  # the restart's own log section exists


async def test_two_workers_split_partitions_answer_for_any_key_and_take_over(
    kafka_bootstrap, names, worker_factory
):
    rng = random.Random(5)
    base = time.time() - 900
    first = worker_factory(**GRACE)
    second = worker_factory(**GRACE)
    logins, readings = _logins(rng, 2000, 100, base), _readings(rng, 1000, 30, base)
    await produce_spread(kafka_bootstrap, names.topic("logins"), logins, PARTITIONS)
    await produce_spread(kafka_bootstrap, names.topic("sensor-readings"), readings, PARTITIONS)
    truth = _truth(logins, readings)
    # either worker answers right for every key: requests for the other's keys are routed to it
    _wait_until_matches(first, truth)
    _wait_until_matches(second, truth)
    owned = [w for w in (first, second) if "assigned" in w.log_text()]
    assert len(owned) == 2

    # the second worker dies; the first takes its partitions over (from its standby replicas)
    second.kill()
    killed = time.monotonic()
    _wait_until_matches(first, truth, timeout=120)
    _record("takeover", seconds_to_answer_all_keys=round(time.monotonic() - killed, 2))

    # and keeps processing the dead worker's partitions
    later = _logins(rng, 500, 100, base)
    await produce_spread(kafka_bootstrap, names.topic("logins"), later, PARTITIONS)
    _wait_until_matches(first, _truth(logins + later, readings))


async def test_exactly_once_kill_leaves_exact_counts_and_no_duplicate_alerts(
    kafka_bootstrap, names, worker_factory
):
    rng = random.Random(23)
    base = (time.time() - 900) // 60 * 60
    worker = worker_factory(STREAMAPP_PROCESSING_GUARANTEE="exactly_once", **GRACE)
    # bursts of 10 failures from 200 IPs, each in its own minute: 200 brute_force alerts
    logins = [
        {"ts": base + (i % 10) * 60 + j, "ip": f"10.60.{i // 250}.{i % 250}", "user": "u", "success": False}
        for i in range(200)
        for j in range(10)
    ]
    rng.shuffle(logins)
    stream = asyncio.ensure_future(_produce_slowly(kafka_bootstrap, names.topic("logins"), logins))
    await asyncio.sleep(2.0)
    worker.wait_for_metric("streamapp_alerts_total", lambda v: v > 0, timeout=90, kind="brute_force")
    worker.kill()
    worker.start()
    await stream
    _time_to_ready(worker)
    _wait_until_matches(worker, _truth(logins, []))
    records = await read_all(kafka_bootstrap, names.topic("alerts"), settle=5.0, read_committed=True)
    ids = [orjson.loads(r.value)["alert_id"] for r in records]
    assert len(ids) == 200
    assert len(set(ids)) == 200, "duplicate alerts after kill -9 under exactly_once"


async def test_broker_restart_mid_stream_workers_reconnect_and_lose_nothing(
    names, worker_factory, private_broker
):
    rng = random.Random(31)
    base = time.time() - 900
    bootstrap = private_broker.bootstrap
    worker = worker_factory(STREAMAPP_BROKER=f"kafka://{bootstrap}", **GRACE)
    first = _logins(rng, 3000, 80, base)
    stream = asyncio.ensure_future(_produce_slowly(bootstrap, names.topic("logins"), first, chunks=10))
    await asyncio.sleep(1.0)
    worker.wait_for_metric("streamapp_events_total", lambda v: v > 0, topic="logins")
    await stream
    await asyncio.to_thread(private_broker.down)  # in the middle of processing
    await asyncio.sleep(3.0)
    await asyncio.to_thread(private_broker.up)
    second = _logins(rng, 2000, 80, base)
    await produce_spread(bootstrap, names.topic("logins"), second, PARTITIONS)
    _wait_until_matches(worker, _truth(first + second, []), timeout=120)
    assert worker.proc is not None and worker.proc.poll() is None  # the same process reconnected


async def test_window_expiry_survives_restart_and_rebalance(kafka_bootstrap, names, worker_factory):
    # event times up to now + 2000 below move the event clock on: all in the past of the wall
    # clock, since events more than STREAMAPP_MAX_CLOCK_SKEW_SECONDS ahead are dead letters
    now = time.time() - 2500
    worker = worker_factory()

    def reading(sensor: str, ts: float) -> dict:
        return {"ts": ts, "sensor_id": sensor, "temperature": 20.0}

    async def send(*readings: dict) -> None:
        await produce_spread(kafka_bootstrap, names.topic("sensor-readings"), list(readings), PARTITIONS)

    # a sensor with one window two hours ago and one window now: the old window expires
    # and a sensor whose older window expires later, while its key is not written again.
    # A sensor's readings far apart in event time are sent as they happen, one after the other
    # (the second of them arriving first would be later than the grace: a late event)
    await send(reading("mixed", now - 7200), reading("gone", now - 7200))
    worker.wait_for("/sensors/gone", lambda s, b: s == 200)
    await send(reading("mixed", now), reading("partial", now - 3000))
    worker.wait_for("/sensors/partial", lambda s, b: s == 200)
    await send(reading("partial", now - 100))
    worker.wait_for("/sensors/partial", lambda s, b: s == 200 and len(b["windows"]) == 2)
    await send(reading("clock", now + 1000))
    worker.wait_for("/sensors/clock", lambda s, b: s == 200)
    body = worker.wait_for("/sensors/mixed", lambda s, b: s == 200 and len(b["windows"]) == 1)
    partial = worker.wait_for("/sensors/partial", lambda s, b: s == 200 and len(b["windows"]) == 1)
    worker.wait_for("/sensors/gone", lambda s, b: s == 404)
    # the expiry timer has removed the fully expired key before the restart
    changelog, keys = sensor_changelog(worker.env, "gone")
    await read_until(kafka_bootstrap, changelog, lambda recs: tombstoned(recs, keys))

    # restart from the changelog alone: expired windows do not come back
    worker.stop()
    shutil.rmtree(worker.data_dir)
    worker.start()
    worker.wait_ready()
    assert worker.get("/sensors/gone")[0] == 404
    assert worker.get("/sensors/mixed")[1]["windows"] == body["windows"]
    assert worker.get("/sensors/partial")[1]["windows"] == partial["windows"]

    # a second worker joins (rebalance): the same answers from both, and new windows keep expiring
    other = worker_factory()
    for w in (worker, other):
        assert w.get("/sensors/gone")[0] == 404
        w.wait_for("/sensors/mixed", lambda s, b: s == 200 and b["windows"] == body["windows"])
    await send(reading("soon-gone", now - 2000))
    other.wait_for("/sensors/soon-gone", lambda s, b: s == 200)
    # each worker's event clock follows the events of its own partitions: time moves on everywhere
    await send(*(reading(f"tick-{i}", now + 2000) for i in range(40)))
    for w in (worker, other):
        w.wait_for("/sensors/soon-gone", lambda s, b: s == 404, timeout=60)
