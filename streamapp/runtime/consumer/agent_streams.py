"""The agents' path of a routed topic: what reaches an agent's stream goes to the app's router."""

from __future__ import annotations

from collections.abc import Iterable

import faust
from aiokafka.structs import ConsumerRecord

from streamapp.runtime.router import Router
from streamapp.settings import BATCH_MAX, BATCH_WITHIN_SECONDS

__all__ = ["drain_to_router", "records_of_events"]


async def drain_to_router(stream: faust.StreamT[bytes], agent: str) -> None:
    """An agent's body for a routed topic: what reaches its stream goes to the app's router.

    While the batch consumer runs, no record does (it hands every fetch of a routed topic to
    the router itself); otherwise ``agent``'s own handler takes them, a batch of events at a
    time, acknowledged once delivered.
    """
    router: Router = stream.app.batch_router  # type: ignore[attr-defined]
    async for events in stream.take_events(BATCH_MAX, BATCH_WITHIN_SECONDS):  # type: ignore[attr-defined]
        records = records_of_events(events)
        by_topic: dict[str, list[ConsumerRecord]] = {}
        for record in records:
            by_topic.setdefault(record.topic, []).append(record)
        for topic, topic_records in by_topic.items():
            for delivery in await router.handle_for_agent(agent, topic, topic_records):
                await delivery.future


def records_of_events(events: Iterable[faust.EventT]) -> list[ConsumerRecord]:
    """Events of an agent's stream as the consumer records a batch handler takes."""
    records = []
    for event in events:
        message = event.message
        records.append(
            ConsumerRecord(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                timestamp=int(message.timestamp * 1000),
                timestamp_type=message.timestamp_type,
                key=message.key,
                value=message.value,
                checksum=None,
                serialized_key_size=message.serialized_key_size,
                serialized_value_size=message.serialized_value_size,
                headers=tuple(message.headers or ()),
            )
        )
    return records
