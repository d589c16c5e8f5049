"""`streamapp archive run`: copy every archived topic to Parquet objects, exactly once by construction.

One object per topic partition and offset range. Offsets are committed only after the object is
uploaded; a partition's start is the later of its committed offset and the end of its newest
object, so a crash between the upload and the commit neither duplicates nor skips a record, and a
crash during an upload writes the same object name again (names come from offsets alone). A newly
assigned partition stays paused until it is placed at that start, so nothing before it is read.

Objects are built and uploaded in worker threads, up to :data:`MAX_UPLOADS` at once across
partitions, while the loop goes on fetching; a partition's offset is committed in offset order,
only once every earlier object of the partition is uploaded too (:class:`CommitOrder`). A revoked
partition's uploads are finished (and committed) before the partition is handed over.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streamapp.archive.commit_order import CommitOrder, Committable
from streamapp.archive.placement import AssignmentListener, archived_ends, archiver_group, start_offsets
from streamapp.archive.store import (
    ARCHIVED_TOPICS,
    ArchiveStore,
    ArchiveUnavailable,
    object_path,
    records_table,
)
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = [
    "MAX_UPLOADS",
    "Archiver",
    "ArchiverStats",
    "CommitOrder",
    "Committable",
    "archived_ends",
    "archiver_group",
    "start_offsets",
]

logger = logging.getLogger("streamapp.archive")

#: first and longest wait between attempts while the archive does not answer
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
#: objects being built and uploaded at once (threads); fetching waits beyond that, so what the
#: archiver holds stays bounded while the archive is slow or down. Eight: one per partition of a
#: topic with the default 8 partitions, so the objects every partition rolls at once (the roll age,
#: or the end of a backlog) all upload together instead of waiting for the slowest upload
MAX_UPLOADS = 8


@dataclass
class _Buffer:
    records: list[Any] = field(default_factory=list)
    size: int = 0
    opened: float = 0.0


@dataclass
class ArchiverStats:
    """What the archiver did since it started."""

    records: int = 0  # in uploaded objects
    objects: int = 0
    bytes: int = 0
    committed: int = 0  # records whose offsets are committed (the objects' and every earlier one's)
    started: float = field(default_factory=time.monotonic)

    def describe(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (
            f"archived {self.records:,} records in {self.objects:,} objects ({self.bytes / 1e6:.1f} MB), "
            f"{self.records / seconds:,.0f} records/s over {seconds:.0f} s"
        )


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
        #: partitions assigned but not yet placed after their archived objects, and how many
        #: assignments there were (a rebalance while placing starts the placing over)
        self._held: set[TopicPartition] = set()
        self._assignments = 0
        #: objects being built and uploaded, per partition; the order their offsets are committed in
        self._uploading: dict[TopicPartition, set[asyncio.Task[None]]] = {}
        self.order = CommitOrder()
        self._commit_lock = asyncio.Lock()
        self._committed: dict[TopicPartition, int] = {}
        #: records handed to uploads since the start (uploaded or not yet)
        self.rolled = 0
        #: an upload that failed otherwise than by the archive not answering: the run ends with it
        self._failure: BaseException | None = None
        #: building and uploading objects, listing the archive: a thread per upload and one more,
        #: not the loop's default pool (it has fewer threads than MAX_UPLOADS on a small machine)
        self._threads = ThreadPoolExecutor(MAX_UPLOADS + 1, thread_name_prefix="archive")

    def stop(self) -> None:
        self._stopping.set()

    def hold(self, assigned: Iterable[TopicPartition]) -> None:
        """Pause a new assignment's partitions until :meth:`resume` has placed them."""
        consumer = self.consumer
        assert consumer is not None
        held = set(assigned)
        consumer.pause(*held)
        for tp in held:
            self.buffers.pop(tp, None)  # read before the partition was placed: it is read again
        self._held = held  # an assignment is always the whole set (aiokafka rebalances eagerly)
        self._assignments += 1

    async def resume(self) -> None:
        """Start every held partition after its newest archived object, if that is further than
        its committed offset, then let it be fetched. Runs in the main loop, between two polls."""
        consumer = self.consumer
        assert consumer is not None
        while self._held:
            assignments, held = self._assignments, set(self._held)
            ends: dict[TopicPartition, int] = {}
            for topic in sorted({tp.topic for tp in held}):
                name = self._contract(topic)
                objects = await self._retrying(f"listing topic {name}", self.store.objects, name)
                ends.update(archived_ends(topic, objects))
            ends = {tp: end for tp, end in ends.items() if tp in held}
            committed = dict(zip(ends, await asyncio.gather(*map(consumer.committed, ends)), strict=True))
            if self._assignments != assignments:
                continue  # reassigned while listing: place the new assignment instead
            current = consumer.assignment()
            for tp, offset in start_offsets(ends, committed).items():
                if tp in current:
                    consumer.seek(tp, offset)
            consumer.resume(*(held & current))
            self._held = set()

    async def _retrying(
        self, what: str, func: Callable[..., Any], *args: Any, keep_alive: bool = True
    ) -> Any:
        """Run a blocking store call in a thread until it succeeds (backoff; one line per outage).

        ``keep_alive``: poll the consumer while waiting (only the main loop may; an upload task
        just sleeps, the main loop polls meanwhile)."""
        attempt = 0
        while True:
            try:
                result = await self._in_thread(func, *args)
            except ArchiveUnavailable as exc:
                delay = min(BACKOFF_FIRST * 2**attempt, BACKOFF_CAP)
                attempt += 1
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    logger.warning("%s; the backlog waits in Kafka, retrying with backoff", exc)
                if keep_alive:
                    await self._idle(delay)
                else:
                    await self._sleep(delay)
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
            # partitions of an assignment not placed yet stay paused (see :meth:`resume`)
            current = consumer.assignment()
            consumer.resume(*(tp for tp in assigned if tp in current and tp not in self._held))

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` or until :meth:`stop`."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def roll(self, tp: TopicPartition) -> asyncio.Task[None] | None:
        """Hand one partition's held records to an upload of their own object (a task; the records
        are the task's from now on), to be committed after it and every earlier one of the partition."""
        buffer = self.buffers.pop(tp, None)
        if buffer is None or not buffer.records:
            return None
        records = buffer.records
        self.order.started(tp, records[-1].offset, len(records))
        self.rolled += len(records)
        task = asyncio.create_task(self._upload(tp, records), name=f"archive upload {tp}")
        tasks = self._uploading.setdefault(tp, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(self._keep_failure)
        return task

    def _keep_failure(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    def _raise_failure(self) -> None:
        """An upload's unexpected error ends the run (its partition could commit nothing more)."""
        if self._failure is not None:
            raise self._failure

    async def flush(self, tp: TopicPartition) -> None:
        """Upload one partition's held records as one object and wait until it is committed (after
        every earlier object of the partition)."""
        self.roll(tp)
        await self.settle([tp], forget=False)

    def uploads(self) -> set[asyncio.Task[None]]:
        """The uploads not finished, of every partition."""
        return {task for tasks in self._uploading.values() for task in tasks}

    async def settle(self, partitions: Iterable[TopicPartition], forget: bool = True) -> None:
        """Wait for the uploads of ``partitions`` to finish and be committed; then, with ``forget``,
        drop their upload order (the partitions are given up)."""
        partitions = list(partitions)
        while tasks := {task for tp in partitions for task in self._uploading.get(tp, ())}:
            await asyncio.wait(tasks)
        if forget:
            for tp in partitions:
                self.order.forget(tp)
                self._committed.pop(tp, None)

    async def _upload(self, tp: TopicPartition, records: list[Any]) -> None:
        """Build and upload one object in threads, then commit what it and earlier objects cover."""
        first, last = records[0].offset, records[-1].offset
        path = object_path(
            self.store.root, self._contract(tp.topic), tp.partition, first, last, records[0].timestamp
        )
        try:
            table = await self._in_thread(records_table, records)
            count = len(records)
            records.clear()  # the table holds them: their Python objects go while the object uploads
            size = await self._retrying(f"upload of {path}", self.store.put, path, table, keep_alive=False)
        except asyncio.CancelledError:
            return  # stopping while the archive is down: not committed, read again at the next start
        self.stats.records += count
        self.stats.objects += 1
        self.stats.bytes += size
        ready = self.order.finished(tp, last)
        if ready is not None:
            await self._commit(tp, ready)

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, functools.partial(func, *args))

    async def _commit(self, tp: TopicPartition, ready: Committable) -> None:
        """Commit ``tp`` at ``ready.offset`` (commits of a partition go out one at a time, in order)."""
        consumer = self.consumer
        assert consumer is not None
        async with self._commit_lock:
            if ready.offset <= self._committed.get(tp, -1):
                return
            try:
                await consumer.commit({tp: OffsetAndMetadata(ready.offset, "")})
            except Exception as exc:  # a rebalance: the next owner resumes after the objects anyway
                logger.warning("commit of %s at %d failed (%s): the objects stand", tp, ready.offset, exc)
                return
            self._committed[tp] = ready.offset
            self.stats.committed += ready.records

    async def _wait_for_upload_slot(self) -> None:
        """Wait while :data:`MAX_UPLOADS` uploads run (polling now and then to keep the group)."""
        while not self._stopping.is_set() and len(uploads := self.uploads()) >= MAX_UPLOADS:
            done, _ = await asyncio.wait(uploads, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                await self._idle(0.01)
        self._raise_failure()

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
            self.consumer.subscribe(self.topics, listener=AssignmentListener(self))
            await self._retrying(f"bucket {self.store.bucket}", self.store.ensure_bucket)
            self.echo(
                f"archiving {', '.join(self.topics)} to {self.store.url} as group {archiver_group(settings)} "
                f"(objects rolled at {settings.archive_roll_bytes:,} bytes "
                f"or {settings.archive_roll_seconds:g} s)"
            )
            last_report = time.monotonic()
            while not self._stopping.is_set():
                if self._held:
                    await self.resume()
                batch = await self.consumer.getmany(timeout_ms=500, max_records=10_000)
                now = time.monotonic()
                for tp, records in batch.items():
                    buffer = self.buffers.get(tp)
                    if buffer is None:
                        buffer = self.buffers[tp] = _Buffer(opened=now)
                    buffer.records.extend(records)
                    buffer.size += sum(len(r.value or b"") + len(r.key or b"") for r in records)
                for tp in self._due(now):
                    await self._wait_for_upload_slot()
                    self.roll(tp)
                await self._wait_for_upload_slot()
                if now - last_report >= 30:
                    self.echo(self.stats.describe())
                    last_report = now
            for tp in list(self.buffers):
                await self._wait_for_upload_slot()
                self.roll(tp)
            while uploads := self.uploads():
                done, _ = await asyncio.wait(uploads, timeout=1.0)
                if not done:
                    await self._idle(0.01)
            self._raise_failure()
        except asyncio.CancelledError:
            pass
        finally:
            for task in self.uploads():
                task.cancel()
            await self.consumer.stop()
            self._threads.shutdown(wait=False)
        self.echo(self.stats.describe())
        return self.stats
