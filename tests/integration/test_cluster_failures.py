"""Broker failures under exactly-once on the three-node cluster: `kill -9` of the leader of the
busiest partition mid-stream, and a rolling restart of all three brokers under load, lose no
event, duplicate no alert, and leave every view exact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from statistics import median

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.conftest import ClusterUnderTest, Names, Worker
from tests.integration.kafka_io import read_all
from tests.integration.load import PER_IP, LoginLoad

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
IPS = 120
BATCHES = 12


class Supervisor(threading.Thread):
    """Restarts the worker when it exits, as Kubernetes or systemd would (same data dir)."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(daemon=True)
        self.worker = worker
        self.exits: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            proc = self.worker.proc
            if proc is not None and proc.poll() is not None:
                self.exits.append(proc.returncode)
                self.worker.start()


def _supervised_exactly_once_worker(
    kafka_cluster: ClusterUnderTest, worker_factory
) -> tuple[Worker, Supervisor]:
    """All three nodes up, and one exactly-once worker with the brute_force rule on the cluster,
    restarted by a supervisor whenever it exits."""
    kafka_cluster.ensure_all_up()
    worker = worker_factory(
        STREAMAPP_BROKER=kafka_cluster.cluster.broker_url,
        STREAMAPP_PROCESSING_GUARANTEE="exactly_once",
        STREAMAPP_RULES="brute_force",
    )
    supervisor = Supervisor(worker)
    supervisor.start()
    return worker, supervisor


def _assert_views_exact(worker: Worker, ips: list[str], within: float) -> None:
    """Every IP's ``PER_IP`` failures counted exactly once on the worker's views."""
    deadline = time.monotonic() + within
    for ip in ips:
        body = worker.wait_for(
            f"/ips/{ip}",
            lambda s, b: s == 200 and sum(w["failed"] for w in b["windows"]) >= PER_IP,
            timeout=max(5.0, deadline - time.monotonic()),
        )
        assert sum(w["failed"] for w in body["windows"]) == PER_IP, (ip, body)


async def _assert_alerts_exact(bootstrap: str, names: Names, ips: list[str]) -> list[dict]:
    """Exactly one committed brute_force alert per IP, none twice (read_committed); the alerts."""
    records = await read_all(bootstrap, names.topic("alerts"), read_committed=True, settle=3.0)
    alerts = [orjson.loads(r.value) for r in records]
    assert sorted(a["key"] for a in alerts) == sorted(ips)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert {a["kind"] for a in alerts} == {"brute_force"}
    return alerts


def _login(ts: float, ip: str, user: str, success: bool) -> dict:
    return {"ts": ts, "ip": ip, "user": user, "success": success}


async def _busiest_partition_leader(bootstrap: str, topic: str) -> tuple[int, int]:
    """(partition, leader node id) of the partition of ``topic`` holding the most records."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        described = (await admin.describe_topics([topic]))[0]
        parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        ends = await consumer.end_offsets(parts)
        busiest = max(described["partitions"], key=lambda p: ends[TopicPartition(topic, p["partition"])])
        return busiest["partition"], busiest["leader"]
    finally:
        await consumer.stop()
        await admin.close()


async def test_killing_the_busiest_partitions_leader_mid_stream_loses_and_duplicates_nothing(
    kafka_cluster: ClusterUnderTest, names, worker_factory
):
    worker, supervisor = _supervised_exactly_once_worker(kafka_cluster, worker_factory)
    bootstrap = kafka_cluster.bootstrap
    base = (time.time() // 10) * 10 - 50
    ips = [f"203.0.{i // 200}.{i % 200 + 1}" for i in range(IPS)]
    # idempotent: a retry of the test's own producer during the failover must not add a record
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=60000
    )
    await producer.start()
    killed: tuple[int, int] | None = None
    topic = names.topic("logins")
    produced = 0
    try:
        for batch in range(BATCHES):
            futures = []
            for ip in ips[batch * IPS // BATCHES : (batch + 1) * IPS // BATCHES]:
                events = [_login(base + n * 0.2, ip, "root", False) for n in range(PER_IP)]
                # successes: volume for the routing stage, no failures
                events += [_login(base + n * 0.1, ip, f"u{n}", True) for n in range(20)]
                for event in events:
                    futures.append(await producer.send(topic, orjson.dumps(event), key=ip.encode()))
            await asyncio.gather(*futures)
            produced += len(futures)
            if batch == BATCHES // 3:
                # the partition of the logins (keyed by IP: applied to the IPs' state where they are
                # read) with the most records so far; kill its leader
                partition, leader = await _busiest_partition_leader(bootstrap, topic)
                pid = kafka_cluster.cluster.node(leader)._pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                killed = (partition, leader)
                killed_at = time.monotonic()
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()
    assert killed is not None
    _assert_views_exact(worker, ips, within=240)
    caught_up = time.monotonic() - killed_at
    alerts = await _assert_alerts_exact(bootstrap, names, ips)
    supervisor.stopping.set()
    supervisor.join()
    print(
        f"\nbroker failure: killed node {killed[1]} (leader of partition {killed[0]}) after "
        f"{BATCHES // 3 + 1} of {BATCHES} batches; {produced} events, {len(alerts)} alerts exact; "
        f"every view exact {caught_up:.1f} s after the kill; worker exits restarted by the "
        f"supervisor: {supervisor.exits}"
    )
    kafka_cluster.ensure_all_up()


async def _partitions_short_of_replicas(bootstrap: str) -> list[str]:
    """Every partition of the cluster (internal topics too) with fewer in-sync replicas than replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        described = await admin.describe_topics(await admin.list_topics())
        return [
            f"{topic['topic']}-{part['partition']}"
            for topic in described
            for part in topic["partitions"]
            if len(part["isr"]) < len(part["replicas"])
        ]
    finally:
        await admin.close()


async def _wait_all_in_sync(bootstrap: str, within: float = 120.0) -> None:
    """Until every partition has all its replicas in sync (the restarted broker caught up)."""
    deadline = time.monotonic() + within
    short: list[str] = ["(not asked yet)"]
    while time.monotonic() < deadline:
        try:
            short = await _partitions_short_of_replicas(bootstrap)
        except Exception as exc:  # a node still starting: ask again
            short = [repr(exc)]
        if not short:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"partitions still short of in-sync replicas after {within} s: {short[:10]}")


class CommittedArrivals:
    """A read_committed consumer of one topic in the background: when each record became visible
    to consumers (monotonic clock), keyed by its record key."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.visible_at: dict[str, float] = {}
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
            isolation_level="read_committed", metadata_max_age_ms=1000,
        )  # fmt: skip
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> CommittedArrivals:
        await self._consumer.start()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for records in batch.values():
                for record in records:
                    self.visible_at.setdefault(record.key.decode(), now)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


def _record(figures: dict) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "cluster_rolling.jsonl", "a") as out:
        out.write(json.dumps(figures) + "\n")


def _longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest stretch of [start, end] without any of ``times`` in it."""
    inside = sorted(t for t in times if start <= t <= end)
    edges = [start, *inside, end]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


async def test_rolling_restart_of_all_three_brokers_under_load_loses_and_duplicates_nothing(
    kafka_cluster: ClusterUnderTest, names, worker_factory
):
    worker, supervisor = _supervised_exactly_once_worker(kafka_cluster, worker_factory)
    bootstrap = kafka_cluster.bootstrap
    # unkeyed: the producer spreads the bursts over whichever partitions have a leader now
    load = LoginLoad(bootstrap, names.topic("logins")).start()
    arrivals = await CommittedArrivals(bootstrap, names.topic("alerts")).start()
    await asyncio.sleep(15)  # steady state first: the quiet figures to compare with
    steady_until = time.monotonic()
    restarts: list[dict] = []
    for node_id in (1, 2, 3):
        stopping = time.monotonic()
        acked_before = len(load.ips)
        # graceful, as `streamapp kafka down` stops a node: SIGTERM, controlled shutdown
        await asyncio.to_thread(kafka_cluster.cluster.node(node_id).down)
        stopped = time.monotonic()
        await asyncio.to_thread(kafka_cluster.cluster.start_node, node_id)
        registered = time.monotonic()
        await _wait_all_in_sync(bootstrap)
        in_sync = time.monotonic()
        assert len(load.ips) > acked_before, f"no burst acknowledged while node {node_id} restarted"
        await asyncio.sleep(8)  # traffic settles before the next node: each stall is its own
        restarts.append(
            {
                "node": node_id,
                "stopping": stopping,
                "until": time.monotonic(),
                "stop_s": stopped - stopping,
                "registered_s": registered - stopping,
                "in_sync_s": in_sync - stopping,
            }
        )
    await load.stop()
    _assert_views_exact(worker, load.ips, within=240)
    alerts = await _assert_alerts_exact(bootstrap, names, load.ips)
    await arrivals.stop()
    supervisor.stopping.set()
    supervisor.join()

    # how long the traffic was interrupted: the longest stretch without a new committed alert,
    # the longest stretch without an acknowledged burst, and the slowest burst (ack -> alert visible)
    visible, acked = list(arrivals.visible_at.values()), list(load.acked_at.values())

    def slowest(start: float, end: float) -> float:
        waits = [
            arrivals.visible_at[ip] - at
            for ip, at in load.acked_at.items()
            if start <= at <= end and ip in arrivals.visible_at
        ]
        return max(waits) if waits else 0.0

    warm = steady_until - 10
    steady = {
        "alert_gap_s": _longest_gap(visible, warm, steady_until),
        "ack_gap_s": _longest_gap(acked, warm, steady_until),
        "slowest_burst_s": slowest(warm, steady_until),
        "median_burst_s": median(
            arrivals.visible_at[ip] - at for ip, at in load.acked_at.items() if at < steady_until
        ),
    }
    for r in restarts:
        r["alert_gap_s"] = _longest_gap(visible, r["stopping"], r["until"])
        r["ack_gap_s"] = _longest_gap(acked, r["stopping"], r["until"])
        r["slowest_burst_s"] = slowest(r["stopping"], r["until"])
    _record(
        {
            "events": load.events,
            "bursts": len(load.ips),
            "steady": steady,
            "restarts": [
                {k: round(v, 2) for k, v in r.items() if k not in ("stopping", "until")} for r in restarts
            ],
            "worker_exits": supervisor.exits,
        }
    )
    print(
        f"\nrolling restart under load: {load.events} events, {len(alerts)} alerts exact; steady "
        + ", ".join(f"{k} {v:.1f}" for k, v in steady.items())
        + "".join(
            f"\n  node {r['node']}: stopped in {r['stop_s']:.1f} s, registered {r['registered_s']:.1f} s, "
            f"all in sync {r['in_sync_s']:.1f} s after the stop; longest without a committed alert "
            f"{r['alert_gap_s']:.1f} s, without an acknowledged burst {r['ack_gap_s']:.1f} s, "
            f"slowest burst {r['slowest_burst_s']:.1f} s"
            for r in restarts
        )
        + f"\n  worker exits restarted by the supervisor: {supervisor.exits}"
    )
    kafka_cluster.ensure_all_up()
