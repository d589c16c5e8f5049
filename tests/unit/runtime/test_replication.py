"""Replication of the app's topics: the factor resolved from the cluster, min.insync.replicas, the
setting's validation, and the topic creation faust's transport does through it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streamapp.dev.kafka import DevBrokerError
from streamapp.dev.kafka_cluster import DevCluster
from streamapp.runtime.replication import (
    min_insync_replicas,
    replicated_topic_creator,
    resolve_replication_factor,
)
from streamapp.settings import SettingsError, load_settings


@pytest.mark.parametrize(("brokers", "expected"), [(1, 1), (2, 2), (3, 3), (5, 3)])
def test_default_factor_is_three_at_most_and_no_more_than_the_brokers(brokers, expected):
    assert resolve_replication_factor(None, brokers) == expected


def test_a_set_factor_is_kept_when_the_cluster_has_the_brokers():
    assert resolve_replication_factor(2, 3) == 2
    assert resolve_replication_factor(5, 5) == 5


def test_a_factor_above_the_brokers_is_refused_naming_the_variable():
    with pytest.raises(SettingsError, match=r"STREAMAPP_REPLICATION_FACTOR=3 is invalid: .* only 1 broker$"):
        resolve_replication_factor(3, 1)


@pytest.mark.parametrize("raw", ["0", "-1", "three", "1.5"])
def test_a_bad_replication_factor_is_refused_at_load(raw):
    with pytest.raises(SettingsError, match="STREAMAPP_REPLICATION_FACTOR"):
        load_settings({"STREAMAPP_REPLICATION_FACTOR": raw})


def test_replication_factor_is_unset_by_default_and_read_when_set():
    assert load_settings({}).replication_factor is None
    assert load_settings({"STREAMAPP_REPLICATION_FACTOR": "2"}).replication_factor == 2


@pytest.mark.parametrize(("factor", "min_isr"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_min_insync_replicas_is_two_from_three_replicas(factor, min_isr):
    assert min_insync_replicas(factor) == min_isr


class _Cluster:
    def __init__(self, brokers: int) -> None:
        self.count = brokers

    def brokers(self) -> list[int]:
        return list(range(self.count))


class _Client:
    def __init__(self, brokers: int) -> None:
        self.cluster = _Cluster(brokers)


def _creator(configured: int | None) -> tuple[Any, list[tuple]]:
    created: list[tuple] = []

    async def create(owner, client, topic, partitions, replication, **kwargs):  # faust's signature
        created.append((topic, partitions, replication, kwargs))

    return replicated_topic_creator(create, lambda: configured), created


def test_faust_topics_get_the_resolved_factor_and_min_isr_keeping_their_own_config():
    create, created = _creator(None)
    client = _Client(3)
    asyncio.run(create(None, client, "app-table-changelog", 8, 1, config={"cleanup.policy": "compact"}))
    # a broker down later does not lower the factor of topics created after
    client.cluster.count = 2
    asyncio.run(create(None, client, "app-other", 8, 1, retention=10))
    assert created == [
        ("app-table-changelog", 8, 3, {"config": {"min.insync.replicas": "2", "cleanup.policy": "compact"}}),
        ("app-other", 8, 3, {"config": {"min.insync.replicas": "2"}, "retention": 10}),
    ]


def test_topic_creation_refuses_a_factor_the_cluster_cannot_hold():
    create, created = _creator(3)
    with pytest.raises(SettingsError, match="STREAMAPP_REPLICATION_FACTOR=3"):
        asyncio.run(create(None, _Client(1), "t", 8, 1))
    assert created == []


def test_single_broker_topics_keep_one_replica():
    create, created = _creator(None)
    asyncio.run(create(None, _Client(1), "t", 4, 1))
    assert created == [("t", 4, 1, {"config": {"min.insync.replicas": "1"}})]


def test_cluster_nodes_get_distinct_ports_a_static_quorum_and_replicated_internal_topics(tmp_path):
    cluster = DevCluster(3, home=tmp_path, port=19092, controller_port=19093)
    assert cluster.broker_url == "kafka://127.0.0.1:19092;127.0.0.1:19094;127.0.0.1:19096"
    props = [dict(line.split("=", 1) for line in n._server_properties().splitlines() if "=" in line)
             for n in cluster.nodes]  # fmt: skip
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert {p["controller.quorum.voters"] for p in props} == {
        "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    }
    for p in props:
        assert p["offsets.topic.replication.factor"] == "3"
        assert p["transaction.state.log.replication.factor"] == "3"
        assert p["transaction.state.log.min.isr"] == "2"
        assert p["min.insync.replicas"] == "2" and p["default.replication.factor"] == "3"
    assert len({n.state_dir for n in cluster.nodes}) == 3


def test_cluster_ports_must_not_overlap(tmp_path):
    with pytest.raises(DevBrokerError, match="overlap"):
        DevCluster(3, home=tmp_path, port=19092, controller_port=19094)
