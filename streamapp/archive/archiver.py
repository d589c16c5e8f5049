"""`streamapp archive run`: copy every archived topic to Parquet objects, exactly once by construction.

One object per topic partition and offset range. Offsets are committed only after the object is
uploaded; a partition's start is the later of its committed offset and the end of its newest
object, so a crash between the upload and the commit neither duplicates nor skips a record, and a
crash during an upload writes the same object name again (names come from offsets alone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streamapp.archive.store import (
    ARCHIVED_TOPICS,
    ArchiveStore,
    ArchiveUnavailable,
    object_path,
    records_table,
)
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = ["Archiver", "ArchiverStats", "archiver_group"]

logger = logging.getLogger("streamapp.archive")

#: first and longest wait between attempts while the archive does not answer
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0


def archiver_group(settings: Settings) -> str:
    """The archiver's own consumer group: it never shares offsets with the workers or sinks."""
    return f"{settings.app_id}-archiver"


@dataclass
class _Buffer:
    records: list[Any] = field(default_factory=list)
    size: int = 0
    opened: float = 0.0


@dataclass
class ArchiverStats:
    """What the archiver did since it started."""

    records: int = 0
    objects: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (
            f"archived {self.records:,} records in {self.objects:,} objects ({self.bytes / 1e6:.1f} MB), "
            f"{self.records / seconds:,.0f} records/s over {seconds:.0f} s"
        )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, archiver: Archiver) -> None:
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # records held but not uploaded are read again by the partition's next owner
        for tp in revoked:
            self.archiver.buffers.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.archiver.resume(assigned)


class Archiver:
    """Consumes the archived topics in its own group and uploads rolled Parquet objects."""

    def __init__(
        self,
        settings: Settings,
        store: ArchiveStore | None = None,
        topics: tuple[str, ...] = ARCHIVED_TOPICS,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or ArchiveStore(settings)
        self.topics = [settings.topic(name) for name in topics]
        self.buffers: dict[TopicPartition, _Buffer] = {}
        self.stats = ArchiverStats()
        self.echo = echo or logger.info
        self.consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._failing_since: float | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def resume(self, assigned: list[TopicPartition]) -> None:
        """Start every assigned partition after its newest archived object, if that is further."""
        consumer = self.consumer
        assert consumer is not None
        ends: dict[tuple[str, int], int] = {}
        for topic in {tp.topic for tp in assigned}:
            name = self._contract(topic)
            for obj in await self._retrying(f"listing topic {name}", self.store.objects, name, poll=False):
                ends[(topic, obj.partition)] = max(ends.get((topic, obj.partition), -1), obj.last)
        for tp in assigned:
            end = ends.get((tp.topic, tp.partition))
            if end is None:
                continue
            committed = await consumer.committed(tp)
            if committed is None or committed <= end:
                # uploaded but not committed (a crash in between): the object stands, go on after it
                consumer.seek(tp, end + 1)

    async def _retrying(self, what: str, func: Callable[..., Any], *args: Any, poll: bool = True) -> Any:
        """Run a blocking store call in a thread until it succeeds (backoff; one line per outage)."""
        attempt = 0
        while True:
            try:
                result = await asyncio.to_thread(func, *args)
            except ArchiveUnavailable as exc:
                delay = min(BACKOFF_FIRST * 2**attempt, BACKOFF_CAP)
                attempt += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    logger.warning("%s; the backlog waits in Kafka, retrying with backoff", exc)
                # inside a rebalance callback the consumer must not be polled: just wait
                await (self._idle(delay) if poll else asyncio.sleep(delay))
                if self._stopping.is_set():
                    raise asyncio.CancelledError from None
                continue
            if self._failing_since is not None:
                logger.warning(
                    "archive %s answers again after %.0f s",
                    self.store.url,
                    time.monotonic() - self._failing_since,
                )
                self._failing_since = None
            return result

    async def _idle(self, seconds: float) -> None:
        """Wait while keeping the group membership alive (the consumer polls paused partitions)."""
        consumer = self.consumer
        assert consumer is not None
        deadline = time.monotonic() + seconds
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        try:
            while time.monotonic() < deadline and not self._stopping.is_set():
                await consumer.getmany(
                    timeout_ms=int(min(1.0, max(deadline - time.monotonic(), 0.01)) * 1000)
                )
        finally:
            consumer.resume(*(tp for tp in assigned if tp in consumer.assignment()))

    async def flush(self, tp: TopicPartition) -> None:
        """Upload one partition's held records as one object, then commit after them."""
        buffer = self.buffers.get(tp)
        if buffer is None or not buffer.records:
            return
        records = buffer.records
        first, last = records[0].offset, records[-1].offset
        path = object_path(
            self.store.root, self._contract(tp.topic), tp.partition, first, last, records[0].timestamp
        )
        table = records_table(records)
        size = await self._retrying(f"upload of {path}", self.store.put, path, table)
        if self.buffers.get(tp) is not buffer:
            return  # revoked meanwhile: uploaded all the same, the next owner resumes after it
        del self.buffers[tp]
        self.stats.records += len(records)
        self.stats.objects += 1
        self.stats.bytes += size
        assert self.consumer is not None
        try:
            await self.consumer.commit({tp: OffsetAndMetadata(last + 1, "")})
        except Exception as exc:  # a rebalance: the next owner resumes after the object anyway
            logger.warning("commit of %s after %s failed (%s): the object stands", tp, path, exc)

    def _contract(self, topic: str) -> str:
        return topic.removeprefix(self.settings.topic_prefix)

    def _due(self, now: float) -> list[TopicPartition]:
        roll_bytes, roll_seconds = self.settings.archive_roll_bytes, self.settings.archive_roll_seconds
        return [
            tp
            for tp, buffer in self.buffers.items()
            if buffer.records and (buffer.size >= roll_bytes or now - buffer.opened >= roll_seconds)
        ]

    async def run(self) -> ArchiverStats:
        """Archive until :meth:`stop`; upload what is held before returning."""
        settings = self.settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=archiver_group(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            metadata_max_age_ms=30_000,  # topics created later (late-events) are picked up
            **client_kwargs(settings),
        )
        await self.consumer.start()
        try:
            self.consumer.subscribe(self.topics, listener=_Rebalance(self))
            await self._retrying(f"bucket {self.store.bucket}", self.store.ensure_bucket)
            self.echo(
                f"archiving {', '.join(self.topics)} to {self.store.url} as group {archiver_group(settings)} "
                f"(objects rolled at {settings.archive_roll_bytes:,} bytes "
                f"or {settings.archive_roll_seconds:g} s)"
            )
            last_report = time.monotonic()
            while not self._stopping.is_set():
                batch = await self.consumer.getmany(timeout_ms=500, max_records=10_000)
                now = time.monotonic()
                for tp, records in batch.items():
                    buffer = self.buffers.get(tp)
                    if buffer is None:
                        buffer = self.buffers[tp] = _Buffer(opened=now)
                    buffer.records.extend(records)
                    buffer.size += sum(len(r.value or b"") + len(r.key or b"") for r in records)
                for tp in self._due(now):
                    await self.flush(tp)
                if now - last_report >= 30:
                    self.echo(self.stats.describe())
                    last_report = now
            for tp in list(self.buffers):
                await self.flush(tp)
        except asyncio.CancelledError:
            pass
        finally:
            await self.consumer.stop()
        self.echo(self.stats.describe())
        return self.stats
