"""Where the archiver starts a partition it is assigned: after its newest archived object, once placed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener, TopicPartition

from streamapp.archive.store import ArchiveObject
from streamapp.settings import Settings

__all__ = ["AssignmentListener", "archived_ends", "archiver_group", "start_offsets"]


def archiver_group(settings: Settings) -> str:
    """The archiver's own consumer group: it never shares offsets with the workers or sinks."""
    return f"{settings.app_id}-archiver"


def archived_ends(topic: str, objects: Iterable[ArchiveObject]) -> dict[TopicPartition, int]:
    """The last archived offset of each partition of ``topic`` (``objects`` are that topic's)."""
    ends: dict[TopicPartition, int] = {}
    for obj in objects:
        tp = TopicPartition(topic, obj.partition)
        ends[tp] = max(ends.get(tp, -1), obj.last)
    return ends


def start_offsets(
    ends: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None]
) -> dict[TopicPartition, int]:
    """Where to start the partitions whose archive goes further than their committed offset.

    An object uploaded but not committed (a crash in between) stands: go on after it. A partition
    missing here starts at its committed offset (or the earliest one), as the consumer would.
    """
    starts: dict[TopicPartition, int] = {}
    for tp, end in ends.items():
        offset = committed.get(tp)
        if offset is None or offset <= end:
            starts[tp] = end + 1
    return starts


class _Owner(Protocol):
    """What the listener uses of the archiver."""

    buffers: dict[TopicPartition, Any]

    async def settle(self, partitions: Iterable[TopicPartition], forget: bool = True) -> None: ...

    def hold(self, assigned: Iterable[TopicPartition]) -> None: ...


class AssignmentListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """The archiver's side of a rebalance: hand revoked partitions over committed, hold new ones."""

    def __init__(self, archiver: _Owner) -> None:
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # records held but not uploaded are read again by the partition's next owner; objects
        # uploading are finished and committed first, or the next owner, listing the bucket before
        # they land, would write other objects over the same offsets
        for tp in revoked:
            self.archiver.buffers.pop(tp, None)
        await self.archiver.settle(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # No await here: aiokafka ends the reassignment before it calls this listener (getmany
        # returns the new partitions' records from then on) and runs it concurrently with the
        # main loop, so a seek after an await (listing the bucket) lands after records read from
        # the committed offset are already held. The partitions wait paused instead until the main
        # loop has placed them (Archiver.resume); nothing of theirs can be fetched before this
        # runs, as their committed offsets are fetched only once the listener yields.
        self.archiver.hold(assigned)
