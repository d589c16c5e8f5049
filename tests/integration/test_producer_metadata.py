"""The worker's producers keep metadata for every topic they write to (runtime/producer/metadata.py)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.runtime.producer import keep_metadata_of
from tests.integration.conftest import Names

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()


async def _written_then_new_topic(bootstrap: str, names: Names, keep: bool) -> set[int] | None:
    """Write to one topic, then to one created afterwards; the first topic's partitions as known then."""
    first, later = names.topic("written-first"), names.topic("created-later")
    await _create_topic(bootstrap, first)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{names.app_id}-metadata")
    await producer.start()
    try:
        # a refresh before the first send (in a worker: anything, e.g. the coordinator lookup) asks
        # for every topic, so the first topic is known without being tracked
        await asyncio.wait_for(producer.client.force_metadata_update(), 30)
        if keep:
            await keep_metadata_of(producer.client, [first])
        await producer.begin_transaction()
        await asyncio.wait_for(await producer.send(first, b"before", partition=1), 30)
        await _create_topic(bootstrap, later)
        await asyncio.wait_for(await producer.send(later, b"new topic", partition=0), 30)
        await asyncio.wait_for(producer.client.force_metadata_update(), 30)
        known = producer.client.cluster.partitions_for_topic(first)
        if known:
            # a batch for the first topic still reaches the broker and commits with the others
            await asyncio.wait_for(await producer.send(first, b"after", partition=1), 30)
            await asyncio.wait_for(producer.commit_transaction(), 30)
        return known
    finally:
        await producer.stop()


async def test_a_topic_created_later_leaves_the_others_in_the_producer_metadata(
    kafka_bootstrap: str, names: Names
) -> None:
    assert await _written_then_new_topic(kafka_bootstrap, names, keep=True) == {0, 1}


async def test_without_it_aiokafka_forgets_the_topics_it_wrote_to(kafka_bootstrap: str, names: Names) -> None:
    # the hazard keep_metadata_of exists for: if aiokafka stops doing this, the guard can go
    assert await _written_then_new_topic(kafka_bootstrap, names, keep=False) is None
