"""A worker whose local state is ahead of its changelogs (a reset broker) rebuilds it, never dies."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.integration.kafka_io import produce

pytestmark = pytest.mark.integration

WARNING = "is ahead of the changelog"


def _readings(sensors: list[str], per_sensor: int, now: float) -> list[dict]:
    return [
        {"ts": now - 600 + i, "sensor_id": sensor, "temperature": 20.0 + i % 7}
        for i in range(per_sensor)
        for sensor in sensors
    ]


def _count(body: dict) -> int:
    return sum(window["count"] for window in body["windows"])


async def test_worker_rebuilds_state_after_the_broker_storage_is_reset(names, worker_factory, private_broker):
    bootstrap = private_broker.bootstrap
    now = time.time()
    worker = worker_factory(STREAMAPP_BROKER=f"kafka://{bootstrap}")
    before = [f"old-{n}" for n in range(12)]
    await produce(
        bootstrap, names.topic("sensor-readings"), _readings(before, 40, now), lambda r: r["sensor_id"]
    )
    for sensor in before:
        worker.wait_for(f"/sensors/{sensor}", lambda s, b: s == 200 and _count(b) == 40)
    worker.stop()

    # the broker loses everything (as after `kafka up --secure` formats its storage again)
    private_broker.down()
    shutil.rmtree(private_broker.state_dir / "data")
    private_broker.up()

    worker.start().wait_ready(timeout=120)
    after = ["old-0", "new-0", "new-1", "new-2"]
    await produce(
        bootstrap, names.topic("sensor-readings"), _readings(after, 5, now), lambda r: r["sensor_id"]
    )
    for sensor in after:
        # exactly what was produced since the reset: nothing of the discarded state is counted
        body = worker.wait_for(f"/sensors/{sensor}", lambda s, b: s == 200 and _count(b) >= 5)
        assert _count(body) == 5, (sensor, body)
    for sensor in before[1:]:
        status, body = worker.get(f"/sensors/{sensor}")
        assert status == 404, (sensor, status, body)
    assert worker.proc is not None and worker.proc.poll() is None
    log = worker.log_text()
    assert "ConsistencyError" not in log
    warnings = [line for line in log.splitlines() if WARNING in line]
    assert len(warnings) == 1, warnings
    assert "broker's data was reset" in warnings[0]

    # and the rebuilt state survives a clean restart unchanged
    worker.restart().wait_ready()
    for sensor in after:
        assert _count(worker.get(f"/sensors/{sensor}")[1]) == 5
    assert len([line for line in worker.log_text().splitlines() if WARNING in line]) == 1
