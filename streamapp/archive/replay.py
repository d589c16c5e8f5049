"""`streamapp replay --from-archive`: the archived records, then Kafka from where the archive ends.

The replay worker reads staging copies of the source topics (``<new app id>.archive.<topic>``,
through ``STREAMAPP_TOPIC_PREFIX``): each partition gets its archived records in offset order, then
the records Kafka still holds after the archive's last offset of that partition, with their keys,
timestamps and headers. Per partition the order is the original one, so the rebuilt state is the
live state even when Kafka has already deleted the segments the archive holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamapp.archive.store import ArchiveStore
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = ["StagingError", "delete_staging", "stage_from_archive", "staging_prefix"]

Echo = Callable[[str], None]


class StagingError(RuntimeError):
    """The archive and Kafka together do not hold every record; the message says where the gap is."""


def staging_prefix(settings: Settings, new_id: str) -> str:
    """``STREAMAPP_TOPIC_PREFIX`` of the replay worker: its source topics are the staging copies."""
    return f"{new_id}.archive.{settings.topic_prefix}"


async def stage_from_archive(
    settings: Settings,
    store: ArchiveStore,
    new_id: str,
    contract_topics: list[str],
    since_ms: int | None,
    echo: Echo,
) -> dict[str, tuple[int, int]]:
    """Fill the staging topics; per source topic (archived records, records from Kafka)."""
    prefix = staging_prefix(settings, new_id)
    kwargs = client_kwargs(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **kwargs)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True,
        linger_ms=20, max_batch_size=512 * 1024, **kwargs,
    )  # fmt: skip
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, **kwargs
    )
    await admin.start()
    await producer.start()
    await consumer.start()
    counts: dict[str, tuple[int, int]] = {}
    try:
        listed = set(await admin.list_topics())
        for name in contract_topics:
            live = settings.topic(name)
            if live not in listed:
                continue
            meta = (await admin.describe_topics([live]))[0]
            partitions = sorted(p["partition"] for p in meta["partitions"])
            staged = f"{prefix}{name}"
            if staged not in listed:
                await admin.create_topics([NewTopic(staged, len(partitions), 1)])
            counts[name] = await _stage_topic(
                store, consumer, producer, name, live, staged, partitions, since_ms, echo
            )
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.close()
    return counts


async def delete_staging(settings: Settings, new_id: str, force: bool) -> None:
    """Refuse (or with ``force`` delete) the staging topics an earlier replay into ``new_id`` left."""
    prefix = staging_prefix(settings, new_id)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **client_kwargs(settings))
    await admin.start()
    try:
        left = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if left and not force:
            raise StagingError(
                f"app id {new_id} is not fresh: its staging topics exist ({left[0]}, ...); "
                "choose a new --app-id, or --force to delete them and start over"
            )
        if left:
            await admin.delete_topics(left)
            for _ in range(120):  # up to a minute until the broker no longer lists them
                if not set(left) & set(await admin.list_topics()):
                    break
                await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def _stage_topic(
    store: ArchiveStore,
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    name: str,
    live: str,
    staged: str,
    partitions: list[int],
    since_ms: int | None,
    echo: Echo,
) -> tuple[int, int]:
    started = time.monotonic()
    objects = await asyncio.to_thread(store.objects, name)
    archived_end: dict[int, int] = {}
    from_archive = 0
    for obj in objects:  # sorted by partition and offset
        table = await asyncio.to_thread(
            store.read, obj, ["kafka_key", "kafka_value", "kafka_timestamp", "kafka_headers"]
        )
        table = table.set_column(2, "kafka_timestamp", table["kafka_timestamp"].cast(pa.int64()))
        if since_ms is not None:
            table = table.filter(pc.greater_equal(table["kafka_timestamp"], since_ms))
        from_archive += await _send(producer, staged, obj.partition, table.to_pylist())
        archived_end[obj.partition] = obj.last
    parts = [TopicPartition(live, p) for p in partitions]
    consumer.assign(parts)
    starts = await consumer.beginning_offsets(parts)
    ends = await consumer.end_offsets(parts)
    wanted: dict[TopicPartition, int] = {}
    for tp in parts:
        after_archive = archived_end.get(tp.partition, -1) + 1
        if starts[tp] > after_archive and since_ms is None:
            raise StagingError(
                f"{live}[{tp.partition}]: Kafka starts at offset {starts[tp]} but the archive ends at "
                f"{after_archive - 1}: offsets {after_archive}..{starts[tp] - 1} are in neither "
                "(was the archiver running?)"
            )
        wanted[tp] = max(after_archive, starts[tp])
    if since_ms is not None:
        found = await consumer.offsets_for_times({tp: since_ms for tp in parts})
        for tp in parts:
            at = found[tp].offset if found[tp] is not None else ends[tp]
            wanted[tp] = max(wanted[tp], at)
    from_kafka = 0
    for tp in parts:
        if wanted[tp] >= ends[tp]:
            continue
        consumer.seek(tp, wanted[tp])
    remaining = {tp for tp in parts if wanted[tp] < ends[tp]}
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=1000)
        for tp, records in batch.items():
            rows = [
                {"kafka_key": r.key, "kafka_value": r.value, "kafka_timestamp": r.timestamp,
                 "kafka_headers": [{"key": k, "value": v} for k, v in r.headers or ()]}
                for r in records if r.offset < ends[tp]
            ]  # fmt: skip
            from_kafka += await _send(producer, staged, tp.partition, rows)
            if records[-1].offset + 1 >= ends[tp]:
                remaining.discard(tp)
    echo(
        f"staged {name}: {from_archive:,} records from the archive ({len(objects)} objects), then "
        f"{from_kafka:,} from Kafka after the archive's end offsets, in {time.monotonic() - started:.1f} s"
    )
    return from_archive, from_kafka


async def _send(producer: AIOKafkaProducer, topic: str, partition: int, rows: list[dict[str, Any]]) -> int:
    futures = []
    for row in rows:
        headers = [(h["key"], h["value"]) for h in row["kafka_headers"] or ()]
        futures.append(
            await producer.send(
                topic, value=row["kafka_value"], key=row["kafka_key"], partition=partition,
                timestamp_ms=row["kafka_timestamp"], headers=headers or None,
            )
        )  # fmt: skip
    if futures:
        await asyncio.gather(*futures)
    return len(futures)
