"""The archiver's concurrent uploads: a partition's offset is committed only after every earlier object."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pyarrow as pa
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from streamapp.archive import archiver as archiver_module
from streamapp.archive.archiver import Archiver, CommitOrder, Committable
from streamapp.archive.placement import AssignmentListener
from streamapp.settings import load_settings

SETTINGS = load_settings({"STREAMAPP_ARCHIVE_URL": "s3://streamapp/archive", "STREAMAPP_TOPIC_PREFIX": "p-"})
TOPIC = "p-logins"


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


def records(partition: int, first: int, last: int) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        ConsumerRecord(TOPIC, partition, o, 1_767_225_600_000, 0, b"k", b'{"n":%d}' % o, None, 1, 8, [])
        for o in range(first, last + 1)
    ]


def test_commit_waits_for_every_earlier_upload_of_the_partition() -> None:
    order = CommitOrder()
    for last in (99, 199, 299):
        order.started(tp(0), last, 100)
    order.started(tp(1), 49, 50)

    assert order.finished(tp(0), 199) is None, "object 100-199 done while 0-99 still uploads"
    assert order.finished(tp(1), 49) == Committable(50, 50, 1), "another partition does not wait"
    assert order.finished(tp(0), 99) == Committable(200, 200, 2), "both objects covered at once"
    assert order.pending(tp(0)) == 1
    assert order.finished(tp(0), 299) == Committable(300, 100, 1)
    assert order.pending(tp(0)) == 0


def test_a_forgotten_partition_commits_nothing() -> None:
    order = CommitOrder()
    order.started(tp(0), 99, 100)
    order.forget(tp(0))
    assert order.finished(tp(0), 99) is None


class GatedStore:
    """Uploads that end only when the test opens their gate (in any order)."""

    url = "s3://streamapp/archive"
    bucket = "streamapp"
    root = "streamapp/archive"

    def __init__(self) -> None:
        self.gates: dict[int, threading.Event] = {}
        self.uploaded: list[int] = []

    def gate(self, last: int) -> threading.Event:
        return self.gates.setdefault(last, threading.Event())

    def put(self, path: str, table: pa.Table) -> int:
        last = int(path.rsplit("-", 1)[1].removesuffix(".parquet"))
        assert self.gate(last).wait(10), f"gate of {path} never opened"
        self.uploaded.append(last)
        return 1


class CommitLog:
    """What the archiver uses of the consumer to commit; records the commits in order."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        await asyncio.sleep(0)
        self.commits.append({p: o.offset for p, o in offsets.items()})


def archiver_with(store: GatedStore) -> tuple[Archiver, CommitLog]:
    archiver = Archiver(SETTINGS, store=store, topics=("logins",))  # type: ignore[arg-type]
    consumer = CommitLog()
    archiver.consumer = consumer  # type: ignore[assignment]
    return archiver, consumer


async def until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never met")


async def test_a_later_object_uploaded_first_is_committed_only_with_the_earlier_one() -> None:
    store = GatedStore()
    archiver, consumer = archiver_with(store)
    for first, last in ((0, 9), (10, 19), (20, 29)):
        archiver.buffers[tp(0)] = archiver_module._Buffer(records=records(0, first, last))
        archiver.roll(tp(0))
    archiver.buffers[tp(1)] = archiver_module._Buffer(records=records(1, 0, 4))
    archiver.roll(tp(1))
    assert archiver.rolled == 35 and len(archiver.uploads()) == 4, "all four upload at once"

    store.gate(19).set()
    store.gate(4).set()
    await until(lambda: sorted(store.uploaded) == [4, 19] and consumer.commits)
    await asyncio.sleep(0.05)
    assert consumer.commits == [{tp(1): 5}], "10-19 is uploaded but 0-9 is not: p0 commits nothing"

    store.gate(9).set()
    await until(lambda: len(consumer.commits) == 2)
    assert consumer.commits[1] == {tp(0): 20}, "0-9 and 10-19 committed together"

    store.gate(29).set()
    await archiver.settle([tp(0), tp(1)])
    assert consumer.commits == [{tp(1): 5}, {tp(0): 20}, {tp(0): 30}]
    assert archiver.stats.committed == 35 and archiver.stats.objects == 4


async def test_a_revoked_partition_is_handed_over_only_after_its_uploads_are_committed() -> None:
    store = GatedStore()
    archiver, consumer = archiver_with(store)
    archiver.buffers[tp(0)] = archiver_module._Buffer(records=records(0, 0, 9))
    archiver.roll(tp(0))
    archiver.buffers[tp(0)] = archiver_module._Buffer(records=records(0, 10, 14))  # held, not rolled

    revoked = asyncio.create_task(AssignmentListener(archiver).on_partitions_revoked([tp(0)]))
    await asyncio.sleep(0.05)
    assert not revoked.done(), "the revocation waits for the upload"
    assert tp(0) not in archiver.buffers, "held records are left to the next owner"

    store.gate(9).set()
    await asyncio.wait_for(revoked, 5)
    assert consumer.commits == [{tp(0): 10}]
    assert archiver.order.pending(tp(0)) == 0
