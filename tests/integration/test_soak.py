"""A soak on the three-node cluster: continuous traffic, a random fault every 20-40 s (kill -9 a
worker, SIGSTOP a worker past the session timeout then resume it, kill -9 a broker then restart
it), and an exact accounting at the end. SOAK_SECONDS (default 100 here; `make soak`: 600),
SOAK_GUARANTEE (default at_least_once), results in SOAK_RESULTS (default
test-artifacts/soak.json)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.integration.conftest import ClusterUnderTest
from tests.integration.kafka_io import read_all
from tests.integration.load import PER_IP, LoginLoad, bursts_not_counted

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT = 10.0  # the workers' broker_session_timeout


class Supervisor(threading.Thread):
    """Restarts a worker when it exits, as Kubernetes or systemd would (same data dir)."""

    def __init__(self, workers) -> None:
        super().__init__(daemon=True)
        self.workers = workers
        self.restarts = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            for worker in self.workers:
                if worker.proc is not None and worker.proc.poll() is not None:
                    self.restarts += 1
                    worker.start()


def _write(results: Path, report: dict) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")


async def test_soak_with_random_faults_accounts_for_every_event_and_alert(
    kafka_cluster: ClusterUnderTest, names, worker_factory
):
    seconds = float(os.environ.get("SOAK_SECONDS", "100"))
    guarantee = os.environ.get("SOAK_GUARANTEE", "at_least_once")
    results = Path(os.environ.get("SOAK_RESULTS", ROOT / "test-artifacts" / "soak.json"))
    rng = random.Random(int(os.environ.get("SOAK_SEED", "19")))
    kafka_cluster.ensure_all_up()
    settings = {
        "STREAMAPP_BROKER": kafka_cluster.cluster.broker_url,
        "STREAMAPP_PROCESSING_GUARANTEE": guarantee,
        "STREAMAPP_RULES": "brute_force",
    }
    workers = [worker_factory(**settings), worker_factory(**settings)]
    supervisor = Supervisor(workers)
    supervisor.start()
    load = LoginLoad(kafka_cluster.bootstrap, names.topic("logins")).start()
    faults: list[dict] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            await asyncio.sleep(rng.uniform(20, 40))
            if time.monotonic() - started >= seconds:
                break
            kind = rng.choice(["kill_worker", "stop_worker", "kill_broker"])
            at = round(time.monotonic() - started, 1)
            if kind == "kill_worker":
                victim = rng.randrange(len(workers))
                await asyncio.to_thread(workers[victim].kill)  # the supervisor restarts it
                faults.append({"at": at, "fault": f"kill -9 worker {victim}"})
            elif kind == "stop_worker":
                victim = rng.randrange(len(workers))
                proc = workers[victim].proc
                assert proc is not None
                os.killpg(proc.pid, signal.SIGSTOP)
                await asyncio.sleep(SESSION_TIMEOUT + 4)  # past the session timeout: its partitions move
                os.killpg(proc.pid, signal.SIGCONT)
                faults.append(
                    {"at": at, "fault": f"SIGSTOP worker {victim} {SESSION_TIMEOUT + 4:.0f} s, SIGCONT"}
                )
            else:
                node = rng.randrange(1, 4)
                pid = kafka_cluster.cluster.node(node)._pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(8)
                await asyncio.to_thread(kafka_cluster.cluster.start_node, node)
                faults.append({"at": at, "fault": f"kill -9 broker {node}, restarted 8 s later"})
        await load.stop()
        ran = time.monotonic() - started
        # exact accounting: every burst counted once on the views (any worker answers any key)
        pending = await bursts_not_counted(workers[0], list(load.ips), within=120)
        wrong = pending  # what every IP still answers after the deadline (-1: no answer)
        settled = time.monotonic() - started - ran
        records = await read_all(
            kafka_cluster.bootstrap, names.topic("alerts"), read_committed=True, settle=3.0
        )
        alerts = [orjson.loads(r.value) for r in records]
        unique = {a["alert_id"]: a for a in alerts}
        missing_alerts = sorted(set(load.ips) - {a["key"] for a in unique.values()})
    finally:
        supervisor.stopping.set()
        supervisor.join()
        kafka_cluster.ensure_all_up()
    report = {
        "seconds": round(ran, 1),
        "guarantee": guarantee,
        "events": load.events,
        "bursts": len(load.ips),
        "faults": faults,
        "worker_restarts": supervisor.restarts,
        "views_wrong": len(wrong),
        "views_under": sum(1 for v in wrong.values() if 0 <= v < PER_IP),
        "views_over": sum(1 for v in wrong.values() if v > PER_IP),
        "views_unanswered": sum(1 for v in wrong.values() if v < 0),
        "views_wrong_sample": dict(list(wrong.items())[:8]),
        "alerts": len(alerts),
        "alerts_unique": len(unique),
        "alerts_missing": len(missing_alerts),
        "duplicate_alerts": len(alerts) - len(unique),
        "all_views_exact_after_traffic_s": round(settled, 1),
    }
    _write(results, report)
    print("\nsoak: " + json.dumps(report))
    assert faults, "no fault was injected: SOAK_SECONDS too short"
    assert not wrong, f"views not exact for {len(wrong)} IPs, e.g. {list(wrong.items())[:5]}"
    assert not missing_alerts, f"{len(missing_alerts)} bursts without an alert, e.g. {missing_alerts[:5]}"
    if guarantee == "exactly_once":
        assert len(unique) == len(alerts), "an alert published twice under exactly-once"
