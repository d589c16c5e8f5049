"""faust's consumer thread: under exactly-once, the end of a partition is its last stable offset."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streamapp.runtime.consumer.consumer_thread import ConsumerThread


async def test_exactly_once_highwaters_of_partitions_not_fetched_yet_are_asked_of_the_broker() -> None:
    """faust's LSO comes from the last fetch: None right after a rebalance, which its recovery
    read as an empty changelog (nothing restored)."""
    fetched, fresh = TP("c", 0), TP("c", 1)
    asked: list[list[TP]] = []

    async def end_offsets(partitions: list[TP]) -> dict[TP, int]:
        asked.append(list(partitions))
        return {tp: 40 for tp in partitions}

    aiokafka_consumer = SimpleNamespace(
        last_stable_offset=lambda tp: 17 if tp == fetched else None, end_offsets=end_offsets
    )
    thread: Any = SimpleNamespace(
        _ensure_consumer=lambda: aiokafka_consumer, consumer=SimpleNamespace(in_transaction=True)
    )
    assert await ConsumerThread._highwaters(thread, [fetched, fresh]) == {fetched: 17, fresh: 40}
    assert asked == [[fresh]]
