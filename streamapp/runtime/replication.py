"""Replication of the topics the app creates: the factor a cluster allows and min.insync.replicas."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import PREFIX, Settings, SettingsError

__all__ = [
    "DEFAULT_MAX_REPLICATION",
    "check_replication",
    "cluster_broker_count",
    "min_insync_replicas",
    "replicated_topic_creator",
    "resolve_replication_factor",
    "topic_replication_config",
]

logger = logging.getLogger(__name__)

#: with no STREAMAPP_REPLICATION_FACTOR, topics get min(3, brokers the cluster reports) replicas
DEFAULT_MAX_REPLICATION = 3


def min_insync_replicas(replication_factor: int) -> int:
    """2 once there are 3 replicas or more (a write survives one broker lost, and one more can be
    down for maintenance before writes stop); 1 below that (2 of 2 would stop writes at the first
    broker lost)."""
    return 2 if replication_factor >= 3 else 1


def resolve_replication_factor(configured: int | None, brokers: int) -> int:
    """The replication factor of new topics: ``configured`` if the cluster has that many brokers,
    else refused naming the variable; unset, min(3, ``brokers``)."""
    if configured is None:
        return max(1, min(DEFAULT_MAX_REPLICATION, brokers))
    if configured > brokers:
        raise SettingsError(
            f"{PREFIX}REPLICATION_FACTOR={configured} is invalid: the cluster reports only "
            f"{brokers} broker{'s' if brokers != 1 else ''}"
        )
    return configured


def topic_replication_config(replication_factor: int) -> dict[str, str]:
    """Topic configs for a topic with this many replicas."""
    return {"min.insync.replicas": str(min_insync_replicas(replication_factor))}


CreateTopic = Callable[..., Awaitable[None]]


def replicated_topic_creator(create: CreateTopic, configured: Callable[[], int | None]) -> CreateTopic:
    """Wrap faust's ``Transport._create_topic`` so every topic faust creates (sources, re-keyed
    topics, changelogs, the leader topic) gets the resolved replication factor and its
    min.insync.replicas, whatever faust asked for.

    The broker count comes from the client's cluster metadata (a bootstrapped client knows every
    live broker); ``configured()`` is STREAMAPP_REPLICATION_FACTOR. It is resolved on the first
    topic and kept, so a broker that is down when a later topic is created does not lower that
    topic's replication.
    """
    resolved: list[int] = []

    async def create_topic(
        owner: Any, client: Any, topic: str, partitions: int, replication: int, **kwargs: Any
    ) -> None:
        if not resolved:
            brokers = len(client.cluster.brokers())
            resolved.append(resolve_replication_factor(configured(), brokers))
            logger.info(
                "topics are created with replication factor %d and min.insync.replicas %d "
                "(%d brokers reported)", resolved[0], min_insync_replicas(resolved[0]), brokers,
            )  # fmt: skip
        config = {**topic_replication_config(resolved[0]), **(kwargs.pop("config", None) or {})}
        await create(owner, client, topic, partitions, resolved[0], config=config, **kwargs)

    return create_topic


async def cluster_broker_count(settings: Settings, within: float = 10.0) -> int | None:
    """Brokers the cluster reports to a client of these settings; None when it does not answer."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=int(within * 1000),
        **client_kwargs(settings),
    )  # fmt: skip
    try:
        await asyncio.wait_for(admin.start(), within)
        described = await asyncio.wait_for(admin.describe_cluster(), within)
        return len(described["brokers"])
    except Exception:
        return None
    finally:
        await admin.close()


async def check_replication(settings: Settings) -> int | None:
    """The replication factor new topics will get; :class:`SettingsError` when
    STREAMAPP_REPLICATION_FACTOR is more than the cluster's brokers. None: the cluster did not
    answer (the worker's own retries wait for it)."""
    brokers = await cluster_broker_count(settings)
    if brokers is None:
        return None
    return resolve_replication_factor(settings.replication_factor, brokers)
