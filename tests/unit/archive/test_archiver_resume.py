"""Where the archiver starts a newly assigned partition: after its newest object, and only once placed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition

from streamapp.archive import archiver as archiver_module
from streamapp.archive.archiver import Archiver, start_offsets
from streamapp.archive.placement import AssignmentListener
from streamapp.archive.store import ArchiveObject, ArchiveUnavailable
from streamapp.settings import load_settings

SETTINGS = load_settings({"STREAMAPP_ARCHIVE_URL": "s3://streamapp/archive", "STREAMAPP_TOPIC_PREFIX": "p-"})
TOPIC = "p-logins"


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


def obj(partition: int, first: int, last: int) -> ArchiveObject:
    return ArchiveObject("logins", partition, first, last, "2026-01-01", f"x/{partition}/{first}-{last}", 1)


class FakeConsumer:
    """What the archiver's resume uses of AIOKafkaConsumer; refuses calls on unassigned partitions
    as aiokafka does (IllegalStateError)."""

    def __init__(self, committed: dict[TopicPartition, int]) -> None:
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.committed_offsets = committed
        self.paused_at_poll: list[set[TopicPartition]] = []

    def _check(self, tps: Any) -> None:
        assert set(tps) <= self.assigned, f"not assigned: {set(tps) - self.assigned}"

    def assign(self, tps: set[TopicPartition]) -> None:
        self.assigned, self.paused, self.positions = set(tps), set(), {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self._check(tps)
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._check(tps)
        self.paused.difference_update(tps)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._check([partition])
        self.positions[partition] = offset

    async def committed(self, partition: TopicPartition) -> int | None:
        await asyncio.sleep(0)
        return self.committed_offsets.get(partition)

    async def getmany(self, timeout_ms: int = 0, **_: Any) -> dict[TopicPartition, list[Any]]:
        self.paused_at_poll.append(set(self.paused))
        await asyncio.sleep(timeout_ms / 1000)
        return {}


class FakeStore:
    url = "s3://streamapp/archive"
    bucket = "streamapp"

    def __init__(self, objects: list[ArchiveObject], on_list: Any = None) -> None:
        self.listed = objects
        self.on_list = on_list
        self.calls = 0

    def objects(self, topic: str) -> list[ArchiveObject]:
        self.calls += 1
        if self.on_list is not None:
            self.on_list(self.calls)
        return [o for o in self.listed if o.topic == topic]


def archiver_with(consumer: FakeConsumer, store: FakeStore) -> Archiver:
    archiver = Archiver(SETTINGS, store=store, topics=("logins",))  # type: ignore[arg-type]
    archiver.consumer = consumer  # type: ignore[assignment]
    return archiver


def test_start_is_after_the_newest_object_unless_the_commit_is_further() -> None:
    ends = {tp(0): 49, tp(1): 99, tp(2): 19}
    assert start_offsets(ends, {tp(1): 100, tp(2): 10}) == {tp(0): 50, tp(2): 20}
    assert start_offsets(ends, {tp(0): 49}) == {tp(0): 50, tp(1): 100, tp(2): 20}


async def test_an_assigned_partition_is_fetched_only_once_placed_after_its_archive() -> None:
    consumer = FakeConsumer(committed={tp(1): 100, tp(2): 10})
    store = FakeStore([obj(0, 0, 49), obj(1, 0, 49), obj(1, 50, 99), obj(2, 0, 19)])
    archiver = archiver_with(consumer, store)
    archiver.buffers[tp(0)] = archiver_module._Buffer(records=["read before placing"])
    consumer.assign({tp(0), tp(1), tp(2), tp(3)})

    await AssignmentListener(archiver).on_partitions_assigned(sorted(consumer.assigned))
    # nothing is fetched until placed, and what was read before is dropped
    assert consumer.paused == consumer.assigned and consumer.positions == {} and archiver.buffers == {}
    assert store.calls == 0, "the listener must not await the archive"

    await archiver.resume()
    # an object uploaded but not committed (p0, p2) is not read again; p1's commit and p3's
    # committed or earliest offset stand as the consumer fetched them
    assert consumer.positions == {tp(0): 50, tp(2): 20}
    assert consumer.paused == set()


async def test_a_rebalance_while_listing_places_the_new_assignment_only() -> None:
    consumer = FakeConsumer(committed={})
    loop = asyncio.get_running_loop()
    rebalance: AssignmentListener

    def reassign(call: int) -> None:
        if call == 1:  # the group moves p0 away while the first listing runs

            def new_assignment() -> None:
                consumer.assign({tp(1)})
                loop.create_task(rebalance.on_partitions_assigned([tp(1)]))

            loop.call_soon_threadsafe(new_assignment)

    store = FakeStore([obj(0, 0, 49), obj(1, 0, 9)], on_list=reassign)
    archiver = archiver_with(consumer, store)
    rebalance = AssignmentListener(archiver)
    consumer.assign({tp(0), tp(1)})
    await rebalance.on_partitions_assigned([tp(0), tp(1)])

    await archiver.resume()
    assert store.calls == 2, "the new assignment is listed again"
    assert consumer.positions == {tp(1): 10} and consumer.paused == set()


async def test_an_archive_outage_while_placing_keeps_the_partitions_paused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(archiver_module, "BACKOFF_FIRST", 0.05)
    consumer = FakeConsumer(committed={})

    def down_twice(call: int) -> None:
        if call <= 2:
            raise ArchiveUnavailable("archive s3://streamapp/archive: listing failed: connection refused")

    store = FakeStore([obj(0, 0, 49)], on_list=down_twice)
    archiver = archiver_with(consumer, store)
    consumer.assign({tp(0), tp(1)})
    await AssignmentListener(archiver).on_partitions_assigned([tp(0), tp(1)])

    await archiver.resume()
    assert store.calls == 3
    # the group membership was kept alive by polling, with the unplaced partitions paused throughout
    assert consumer.paused_at_poll and all(paused == {tp(0), tp(1)} for paused in consumer.paused_at_poll)
    assert consumer.positions == {tp(0): 50} and consumer.paused == set()
