"""A three-node KRaft cluster from `streamapp kafka up --brokers 3`: replicated topics, exact alerts."""

from __future__ import annotations

import time

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.conftest import ClusterUnderTest
from tests.integration.kafka_io import produce, read_all, read_until

pytestmark = pytest.mark.integration


async def _replication(bootstrap: str, prefix: str) -> dict[str, tuple[set[int], set[int], str]]:
    """topic -> (replica counts, in-sync replica counts over its partitions, min.insync.replicas)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        described = await admin.describe_topics(topics)
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        min_isr = {}
        for response in configs:
            for _error, _msg, _type, name, entries in response.resources:
                min_isr[name] = next(e[1] for e in entries if e[0] == "min.insync.replicas")
        return {
            t["topic"]: (
                {len(p["replicas"]) for p in t["partitions"]},
                {len(p["isr"]) for p in t["partitions"]},
                min_isr[t["topic"]],
            )
            for t in described
        }
    finally:
        await admin.close()


async def test_worker_on_three_brokers_replicates_every_topic_and_alerts_exactly_once(
    kafka_cluster: ClusterUnderTest, names, worker_factory
):
    status = kafka_cluster.cli("status")
    assert "3 of 3 nodes running, 3 brokers registered" in status.stdout, status.stdout
    bootstrap = kafka_cluster.bootstrap
    worker = worker_factory(
        STREAMAPP_BROKER=kafka_cluster.cluster.broker_url,
        STREAMAPP_PROCESSING_GUARANTEE="exactly_once",
    )
    base = (time.time() // 10) * 10 - 30
    failed = [{"ts": base + i, "ip": "203.0.113.9", "user": "root", "success": False} for i in range(6)]
    await produce(bootstrap, names.topic("logins"), failed)
    worker.wait_for("/ips/203.0.113.9", lambda s, b: s == 200 and b["windows"][0]["failed"] == 6)
    # the alert is visible to a read_committed reader once the worker's transaction commits
    await read_until(bootstrap, names.topic("alerts"), lambda recs: len(recs) >= 1, read_committed=True)
    records = await read_all(bootstrap, names.topic("alerts"), read_committed=True)
    alerts = [orjson.loads(r.value) for r in records]
    assert [(a["kind"], a["key"], a["value"]) for a in alerts] == [("brute_force", "203.0.113.9", 6)]

    # every topic of the app (its prefix: inputs and outputs; its app id: re-keyed and changelogs)
    found = {
        **await _replication(bootstrap, names.prefix),
        **await _replication(bootstrap, names.app_id + "-"),
    }
    assert any(t.endswith("-changelog") for t in found), sorted(found)
    assert names.topic("alerts") in found and names.topic("logins") in found
    for topic in found:
        replicas, in_sync, min_isr = found[topic]
        assert replicas == {3} and in_sync == {3}, (topic, found[topic])
        assert min_isr == "2", (topic, found[topic])


def test_a_replication_factor_above_the_brokers_is_refused_at_start(
    kafka_cluster: ClusterUnderTest, worker_factory
):
    worker = worker_factory(
        ready=False, STREAMAPP_BROKER=kafka_cluster.cluster.broker_url, STREAMAPP_REPLICATION_FACTOR="4"
    )
    assert worker.proc is not None
    assert worker.proc.wait(60) == 2
    refusal = "STREAMAPP_REPLICATION_FACTOR=4 is invalid: the cluster reports only 3 brokers"
    assert refusal in worker.log_text()
