"""Broker failure under exactly-once on the three-node cluster: `kill -9` of the leader of the
busiest partition mid-stream loses no event, duplicates no alert, and leaves every view exact."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration.conftest import ClusterUnderTest
from tests.integration.kafka_io import read_all

pytestmark = pytest.mark.integration

IPS = 120
PER_IP = 6  # over the threshold of 5: exactly one brute_force alert per IP
BATCHES = 12


class Supervisor(threading.Thread):
    """Restarts the worker when it exits, as Kubernetes or systemd would (same data dir)."""

    def __init__(self, worker) -> None:
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
    kafka_cluster.ensure_all_up()
    bootstrap = kafka_cluster.bootstrap
    worker = worker_factory(
        STREAMAPP_BROKER=kafka_cluster.cluster.broker_url,
        STREAMAPP_PROCESSING_GUARANTEE="exactly_once",
        STREAMAPP_RULES="brute_force",
    )
    supervisor = Supervisor(worker)
    supervisor.start()
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
                # the partition of the re-keyed stream with the most records so far; kill its leader
                rekeyed = f"{names.app_id}-failed-logins-by-ip"
                partition, leader = await _busiest_partition_leader(bootstrap, rekeyed)
                pid = kafka_cluster.cluster.node(leader)._pid()
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                killed = (partition, leader)
                killed_at = time.monotonic()
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()
    assert killed is not None
    # every IP's failures counted exactly once, on the views ...
    deadline = time.monotonic() + 240
    for ip in ips:
        body = worker.wait_for(
            f"/ips/{ip}",
            lambda s, b: s == 200 and sum(w["failed"] for w in b["windows"]) >= PER_IP,
            timeout=max(5.0, deadline - time.monotonic()),
        )
        assert sum(w["failed"] for w in body["windows"]) == PER_IP, (ip, body)
    caught_up = time.monotonic() - killed_at
    # ... and one alert per IP, none twice, for read_committed consumers
    records = await read_all(bootstrap, names.topic("alerts"), read_committed=True, settle=3.0)
    alerts = [orjson.loads(r.value) for r in records]
    assert sorted(a["key"] for a in alerts) == sorted(ips)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert {a["kind"] for a in alerts} == {"brute_force"}
    supervisor.stopping.set()
    supervisor.join()
    print(
        f"\nbroker failure: killed node {killed[1]} (leader of partition {killed[0]}) after "
        f"{BATCHES // 3 + 1} of {BATCHES} batches; {produced} events, {len(alerts)} alerts exact; "
        f"every view exact {caught_up:.1f} s after the kill; worker exits restarted by the "
        f"supervisor: {supervisor.exits}"
    )
    kafka_cluster.ensure_all_up()
