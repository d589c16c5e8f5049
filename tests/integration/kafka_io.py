"""Producing to and reading from the real broker in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

__all__ = ["every_other_keyed", "produce", "read_all", "read_until"]


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[dict[str, Any] | bytes],
    key: Callable[[dict[str, Any]], str | None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> int:
    """Produce JSON objects (or raw bytes) and wait until the broker has them all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        futures = []
        for value in values:
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            k = key(value) if key is not None and isinstance(value, dict) else None
            futures.append(
                await producer.send(
                    topic, value=raw, key=k.encode() if k is not None else None, headers=headers
                )
            )
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    within: float = 60.0,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``done(records)``; fail on timeout."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, metadata_max_age_ms=1000,
    )  # fmt: skip
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + within
    try:
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timeout reading {topic}: got {len(records)} records")
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


async def read_all(
    bootstrap: str, topic: str, settle: float = 2.0, read_committed: bool = False
) -> list[Any]:
    """Every record in ``topic`` up to its end now, after waiting ``settle`` seconds for stragglers."""
    await asyncio.sleep(settle)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
        if not parts:
            await consumer._client.force_metadata_update()  # topic created after start
            parts = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        # under read_committed the end is the last stable offset
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def every_other_keyed(field: str) -> Callable[[dict[str, Any]], str | None]:
    """A key function that sets the entity as key on every second record only."""
    calls = iter(range(1_000_000_000))
    return lambda value: value[field] if next(calls) % 2 == 0 else None
