"""The new app id on the broker: is it fresh, which partitions to replay, where its group starts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from streamapp.ops.replay.plan import ReplayError
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = ["commit_start_offsets", "existing_partitions", "find_leftovers"]


async def find_leftovers(admin: AIOKafkaAdminClient, new_id: str, owned: Iterable[str]) -> list[str]:
    """What makes ``new_id`` not fresh: committed offsets of its group, topics it owns."""
    found = []
    committed = await admin.list_consumer_group_offsets(new_id)
    if committed:
        found.append(f"consumer group {new_id} has committed offsets on {len(committed)} partitions")
    existing = set(await admin.list_topics())  # all topics: asking for named ones may create them
    taken = sorted(set(owned) & existing)
    if taken:
        found.append(f"its topics exist ({', '.join(taken[:3])}{', ...' if len(taken) > 3 else ''})")
    return found


async def delete_topics(admin: AIOKafkaAdminClient, topics: list[str], within: float = 60.0) -> None:
    """Delete ``topics`` and wait until the broker no longer lists them."""
    if not topics:
        return
    await admin.delete_topics(topics)
    deadline = time.monotonic() + within
    while set(topics) & set(await admin.list_topics()):
        if time.monotonic() > deadline:
            raise ReplayError(f"topics {', '.join(topics)} were not deleted within {within:.0f} s")
        await asyncio.sleep(0.5)


async def existing_partitions(admin: AIOKafkaAdminClient, topics: Iterable[str]) -> list[TopicPartition]:
    """The partitions of those of ``topics`` that exist.

    Topics are looked up in the full listing first: asking the broker for a named topic that does
    not exist may create it (``auto.create.topics.enable``), with the wrong partition count.
    """
    listed = set(await admin.list_topics())
    present = [t for t in topics if t in listed]
    if not present:
        return []
    return [
        TopicPartition(meta["topic"], p["partition"])
        for meta in await admin.describe_topics(present)
        if not meta["error_code"]
        for p in sorted(meta["partitions"], key=lambda p: p["partition"])
    ]


async def commit_start_offsets(
    settings: Settings, new_id: str, parts: list[TopicPartition], start_ms: int | None
) -> dict[TopicPartition, tuple[int, int]]:
    """Commit where ``new_id`` starts on every source partition; return ``{tp: (start, end)}``.

    Start is the beginning of the partition, or with ``start_ms`` the first record whose record
    timestamp is at or after it (the end when there is none). End is the end offset now: what the
    replay must reach.
    """
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=new_id, enable_auto_commit=False,
        **client_kwargs(settings),
    )  # fmt: skip
    await consumer.start()
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        if start_ms is None:
            starts = await consumer.beginning_offsets(parts)
        else:
            found = await consumer.offsets_for_times({tp: start_ms for tp in parts})
            starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in parts}
        # aiokafka logs every retry of a refused commit as an error: the refusal is reported below
        coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
        level = coordinator_log.level
        coordinator_log.setLevel(logging.CRITICAL)
        try:
            await consumer.commit({tp: OffsetAndMetadata(starts[tp], "streamapp replay") for tp in parts})
        except KafkaError as exc:  # a group with members takes commits only from them
            raise ReplayError(
                f"could not commit the start offsets of group {new_id} ({type(exc).__name__}): "
                f"are workers of app id {new_id} running? stop them first"
            ) from exc
        finally:
            coordinator_log.setLevel(level)
        return {tp: (starts[tp], ends[tp]) for tp in parts}
    finally:
        await consumer.stop()
