"""The shipped detections on the broker: a worker runs them as specs with its threshold settings,
with no apply and no per-rule topic; the control topic disables one for good (across a restart); a
setting the shipped specs refuse, or the removed hand-written engine, stops the worker with one line."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import quote

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streamapp.settings import ALERT_KINDS
from tests.integration.conftest import Names, Worker
from tests.integration.kafka_io import produce_spread, read_all, read_until, shuffled

pytestmark = pytest.mark.integration

ENV = {"STREAMAPP_BRUTE_FORCE_THRESHOLD": "3"}


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def _running(worker: Worker) -> dict[str, int]:
    status, body = worker.get("/detections")
    assert status == 200, body
    return {row["name"]: row["version"] for row in body["detections"]}


def test_shipped_specs_run_by_default_with_the_worker_s_thresholds_and_stay_disabled(
    kafka_bootstrap: str, names: Names, worker_factory: Callable[..., Worker]
) -> None:
    worker = worker_factory(**ENV)
    worker.wait_for("/detections", lambda s, b: s == 200 and b.get("loaded"), timeout=30)
    assert _running(worker) == dict.fromkeys(ALERT_KINDS, 1)

    # 4 failures of one IP alert above the threshold of 3 (the file says 5); 3 of another do not
    base = time.time() - 600
    attacker, quiet = "203.0.113.7", "<img src=x onerror=alert(1)>"
    logins = [{"ts": base + i, "ip": attacker, "user": f"u{i}", "success": False} for i in range(4)]
    logins += [{"ts": base + 20 + i, "ip": quiet, "user": "ann", "success": False} for i in range(3)]
    seed = random.randrange(1_000_000)
    asyncio.run(produce_spread(kafka_bootstrap, names.topic("logins"), shuffled(logins, seed), 4))
    records = asyncio.run(read_until(kafka_bootstrap, names.topic("alerts"), lambda rs: len(rs) >= 1))
    records = asyncio.run(read_all(kafka_bootstrap, names.topic("alerts"), settle=3))
    alerts = [orjson.loads(r.value) for r in records]
    assert [(a["kind"], a["key"], a["value"], a["threshold"]) for a in alerts] == [
        ("brute_force", attacker, 4, 3)
    ], f"seed {seed}"
    # counted by kind (dashboards read streamapp_alerts_total)
    assert worker.metric("streamapp_alerts_total", kind="brute_force") == 1
    # /ips answers from the spec's state; no topic or table per rule exists
    for ip, failed in ((attacker, 4), (quiet, 3)):
        body = worker.wait_for(f"/ips/{quote(ip, safe='')}", lambda s, b: s == 200)
        assert sum(w["failed"] for w in body["windows"]) == failed
    topics = asyncio.run(_topics(kafka_bootstrap))
    assert f"{names.app_id}-detection-state-changelog" in topics
    assert not [t for t in topics if t.startswith(f"{names.app_id}-failed-logins-by-ip")]

    # disabled through the control topic: stops within 5 s, and stays so for a worker started later
    disabled = worker.detections("disable", "brute_force")
    assert disabled.returncode == 0, disabled.stderr
    worker.wait_for("/detections", lambda s, b: "brute_force" not in _running(worker), timeout=5)
    worker.stop()
    later = worker_factory(**ENV)
    later.wait_for("/detections", lambda s, b: s == 200 and b.get("loaded"), timeout=30)
    assert _running(later) == dict.fromkeys(set(ALERT_KINDS) - {"brute_force"}, 1)


def test_a_setting_the_shipped_specs_refuse_stops_the_worker_with_one_line(names: Names) -> None:
    env = {**os.environ, **ENV, "STREAMAPP_GRACE_SECONDS": "0", "STREAMAPP_APP_ID": names.app_id}
    started = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 2
    assert started.stderr.startswith("streamapp: error: STREAMAPP_GRACE_SECONDS=0 is invalid: the shipped")
    assert len(started.stderr.strip().splitlines()) == 1, started.stderr


def test_the_removed_hand_written_engine_stops_the_worker_with_one_line(names: Names) -> None:
    env = {**os.environ, "STREAMAPP_RULE_ENGINE": "hand-written", "STREAMAPP_APP_ID": names.app_id}
    started = subprocess.run(
        [sys.executable, "-m", "streamapp.cli", "worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 2
    assert started.stderr.startswith(
        "streamapp: error: STREAMAPP_RULE_ENGINE='hand-written' is invalid: hand-written was removed"
    )
    assert len(started.stderr.strip().splitlines()) == 1, started.stderr
