"""Producing to and reading from the real broker in tests."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

__all__ = [
    "every_other_keyed", "produce", "produce_spread", "produce_spread_in_steps", "read_all", "read_until",
    "shuffled",
]  # fmt: skip


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


async def produce_spread(
    bootstrap: str, topic: str, values: Iterable[dict[str, Any] | bytes], partitions: int
) -> int:
    """Produce without keys, round robin over partitions 0 .. ``partitions``-1, in the order given.

    What a producer that does not know the entity does: the events of one entity land on every
    partition, and the worker's re-keying hop merges them again in whatever order it fetches them.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        futures = []
        for i, value in enumerate(values):
            raw = value if isinstance(value, bytes) else orjson.dumps(value)
            futures.append(await producer.send(topic, value=raw, partition=i % partitions))
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def produce_spread_in_steps(
    bootstrap: str,
    topic: str,
    values: Iterable[dict[str, Any]],
    partitions: int,
    width: float,
    applied: Callable[[list[dict[str, Any]]], Awaitable[None] | None],
    seed: int = 0,
) -> None:
    """Events spanning more than the grace, in event-time order as a real producer sends them.

    The events are cut into steps of ``width`` seconds of event time (less than the grace); each
    step is produced shuffled and unkeyed over all partitions, then ``applied(everything sent so
    far)`` must return once the worker shows it applied. Within a step any arrival order counts;
    a later step never races an earlier one, so no event is later than the grace.
    """
    ordered = sorted(values, key=lambda v: v["ts"])
    if not ordered:
        return
    first = ordered[0]["ts"]
    steps: dict[int, list[dict[str, Any]]] = {}
    for value in ordered:
        steps.setdefault(int((value["ts"] - first) // width), []).append(value)
    sent: list[dict[str, Any]] = []
    for n, step in enumerate(steps.values()):
        await produce_spread(bootstrap, topic, shuffled(step, seed + n), partitions)
        sent.extend(step)
        waiting = applied(sent)
        if waiting is not None:
            await waiting


def shuffled(values: Iterable[Any], seed: int) -> list[Any]:
    """``values`` in a random order that is the same on every run (``seed``)."""
    out = list(values)
    random.Random(seed).shuffle(out)
    return out


async def read_until(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    within: float = 60.0,
    read_committed: bool = False,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``done(records)``; fail on timeout.

    ``read_committed`` waits for records of transactions that committed, which an exactly-once
    worker's output only becomes once its transaction ends.
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, metadata_max_age_ms=1000,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
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
