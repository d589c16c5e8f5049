"""faust's consumer, handing the records of registered topics to their handler a fetch at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from time import monotonic
from typing import Any, cast

import faust
import rocksdict
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

from streamapp.observability.faust_sensors import count_received
from streamapp.runtime.consumer.errors import NotProcessed
from streamapp.runtime.consumer.fence import (
    GroupMember,
    Membership,
    aiokafka_group_member,
    done_handling,
    handling_batch,
)
from streamapp.runtime.producer import Delivery, keep_metadata_of
from streamapp.settings import BATCH_MAX, BATCH_WITHIN_SECONDS

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "BatchConsumer",
    "BatchHandler",
    "NotProcessed",
    "abandon_before_waiting",
    "consume_in_batches",
    "records_of_events",
]

logger = logging.getLogger(__name__)

#: a batch handler slower than this is logged (it stops fetching for as long)
SLOW_BATCH_SECONDS = 0.5
#: how long a rebalance or a stop waits for the batches being delivered
PENDING_WAIT_SECONDS = 30.0

#: how long the broker may hold a fetch request that finds no data (faust sets 1,500 ms)
FETCH_MAX_WAIT_MS = 50

#: records of one topic (several partitions, each in offset order) -> deliveries to wait for
#: before their offsets may be committed
BatchHandler = Callable[[Sequence[ConsumerRecord]], Awaitable[list[Delivery]]]


#: called (synchronously) when a rebalance or a stop waits for the batches being handled: a
#: handler that waits off the fetch path (see streamapp.schema.registry_service.RegistryGate) gives up
_abandon_hooks: list[Callable[[], None]] = []


def abandon_before_waiting(hook: Callable[[], None]) -> None:
    """Call ``hook`` before a rebalance or a stop waits for pending batches (to fail them, NotProcessed)."""
    _abandon_hooks.append(hook)


class BatchConsumer(Consumer):
    """For topics with a batch handler, each fetch goes to the handler whole; others as in faust.

    faust turns every record into a Message and an Event, queues it to the agent's stream and
    acknowledges it alone: tens of microseconds per record, more than the work itself. Here a
    fetch of a registered topic becomes one handler call, and its offsets are acknowledged as
    ranges once the records the handler produced are on the broker; faust's commit loop then
    commits them (in the worker's transaction under exactly-once). Records of unregistered
    topics, and the agents' streams, are untouched.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: one future per handled fetch, done once its records are delivered and acknowledged
        self._pending: set[asyncio.Future[Any]] = set()
        #: the zombie fence (streamapp.runtime.consumer.fence): batches write only while in the group
        self.membership = Membership(self._group_member, float(self.app.conf.broker_session_timeout))
        sender = getattr(self.app, "batch_sender", None)
        if sender is not None:  # batches queued before a pause are fenced at the producer too
            sender.membership = self.membership

    def _group_member(self) -> GroupMember | None:
        consumer = getattr(self._thread, "_consumer", None)  # None until the consumer thread starts
        return None if consumer is None else aiokafka_group_member(consumer, self._thread.call_thread)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self.membership.confirm()  # the coordinator has just given this member its partitions
        await super().on_partitions_assigned(assigned, generation_id)

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def batch_handlers(self) -> dict[str, BatchHandler]:
        return self.app.batch_handlers  # type: ignore[attr-defined, no-any-return]

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109 (faust's signature)
        generation = self.app.consumer_generation_id
        records, active_partitions = await super()._wait_next_records(timeout)
        handlers = self.batch_handlers
        if not records:
            return records, active_partitions
        if not self.flow_active:
            # a rebalance began during the fetch: faust's own path seeks back to the committed offsets
            return records, active_partitions
        fetched = cast(dict[TP, Any], records)  # aiokafka's fetch result: a plain dict
        if self.app.consumer_generation_id != generation:
            await self._read_again_after_rebalance(fetched)
            return records, active_partitions
        recovery: Any = cast(Any, self.app.tables).recovery
        changelogs = [
            tp for tp in fetched if tp in recovery.tp_to_table and _restorable(recovery.tp_to_table[tp])
        ]
        if changelogs:
            await self._restore(recovery, {tp: fetched.pop(tp) for tp in changelogs})
        taken = {tp: fetched.pop(tp) for tp in [tp for tp in fetched if tp.topic in handlers]}
        if taken:
            await self._handle(taken, active_partitions, generation)
        return records, active_partitions

    async def _read_again_after_rebalance(self, fetched: dict[TP, list[ConsumerRecord]]) -> None:
        """A rebalance ended during the fetch (flow already resumed): read its records again.

        faust's getmany would hand them to the agents' streams, whose handler runs them after the
        records of later fetches: the replay protection (newest source offset per key) then took
        a burst's first records, handled last, for records already applied (counted 2 of 6).
        They start where the consumer was when they were fetched, which may be past the committed
        offset the new generation's recovery seeks to (faust resumes the flow before that seek):
        read again from the lower of the two (a repeat is dropped by the replay protection).
        """
        handled = [tp for tp in fetched if tp.topic in self.batch_handlers]
        again = []
        for tp in handled:
            if fetched[tp]:
                committed = self._committed_offset[tp]
                first = fetched[tp][0].offset
                start = first if committed is None else min(first, committed)
                again.append((tp, start, fetched[tp][-1].offset))
        for tp in handled:
            fetched.pop(tp)
        if again:
            logger.info("%d partitions fetched across a rebalance: read again", len(again))
            await self._read_again(again)

    async def _restore(self, recovery: Any, fetched: dict[TP, list[ConsumerRecord]]) -> None:
        """Write fetched changelog records to the tables' RocksDB, one write batch per partition.

        What faust's recovery does record by record through a queue (with a progress check of
        every partition per record, some 8,000 records/s): the same offsets bookkeeping, so its
        recovery service sees the progress, declares recovery complete and keeps standbys current.
        (Not the store's ``apply_changelog_batch``: it wants a faust Event per record.)
        """
        now = monotonic()
        for tp, records in fetched.items():
            if tp in recovery.active_tps:
                offsets = recovery.active_offsets
                recovery._active_events_received_at[tp] = now
            elif tp in recovery.standby_tps:
                offsets = recovery.standby_offsets
                recovery._standby_events_received_at[tp] = now
            else:
                continue  # revoked since the fetch
            seen = offsets.get(tp)
            if seen is not None and records[0].offset <= seen:
                records = [record for record in records if record.offset > seen]
                if not records:
                    continue
            batch = rocksdict.WriteBatch(raw_mode=True)
            for record in records:
                if record.key is None or record.key == _FAUST_OFFSET_KEY:
                    _skip_changelog_record(record)
                elif record.value is None:
                    batch.delete(record.key)
                else:
                    batch.put(record.key, record.value)
            store: Any = recovery.tp_to_table[tp].data
            store._db_for_partition(tp.partition).write(batch)
            last = records[-1].offset
            store.set_persisted_offset(tp, last)
            offsets[tp] = last
            count_received(self.app, tp, len(records), last)
        if recovery.in_recovery and self.app.in_transaction and recovery.need_recovery():
            # transaction markers after the last record: the position has passed the highwater
            for tp, remaining in recovery.active_remaining().items():
                if remaining > 0 and tp in fetched:
                    highwater = recovery.active_highwaters[tp]
                    if (await self.position(tp) or 0) > highwater:
                        recovery.active_offsets[tp] = highwater
        if recovery.in_recovery and not recovery.need_recovery():
            recovery.flush_buffers()
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
        if not recovery.tables.standbys_ready and not recovery.standby_remaining_total():
            recovery.tables.on_standbys_ready()

    async def _handle(
        self, fetched: dict[TP, list[ConsumerRecord]], active: set[TP] | None, generation: int | None = None
    ) -> None:
        by_topic: dict[str, list[ConsumerRecord]] = {}
        acks: dict[str, list[tuple[TP, int, int]]] = {}
        skipped: list[tuple[TP, int, int]] = []
        for tp, records in fetched.items():
            read = self._read_offset[tp]  # the next offset to process (None before the first)
            if read is not None and records[0].offset < read:
                records = [record for record in records if record.offset >= read]
                if not records:
                    continue
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                # what faust's getmany skips too: a partition not in the active set taken before
                # the fetch (paused since, or resumed during it). The position has moved past
                # these records: back to them, or they are lost until a rebalance, and the replay
                # protection (newest source offset per key) would then take some for applied
                skipped.append((tp, records[0].offset, records[-1].offset))
                logger.info(
                    "%s[%d] %d-%d fetched while not active: read again",
                    tp.topic, tp.partition, records[0].offset, records[-1].offset,
                )  # fmt: skip
                continue
            first, last = records[0].offset, records[-1].offset
            committed = self._committed_offset[tp]
            start = read if read is not None else first if committed is None else min(first, committed)
            acks.setdefault(tp.topic, []).append((tp, start, last))
            self._read_offset[tp] = last + 1
            by_topic.setdefault(tp.topic, []).extend(records)
            # what faust's per-record path tells its monitor (lag and throughput figures)
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            count_received(self.app, tp, len(records), last)
        if skipped:
            await self._read_again(skipped)
        # each topic's offsets are acknowledged when its own deliveries are done: a handler that
        # waits off the fetch path (the users topic while the registry is down) holds no other topic
        for topic, records in by_topic.items():
            done = asyncio.get_running_loop().create_future()
            self._pending.add(done)
            done.add_done_callback(self._pending.discard)
            handling = handling_batch(self.membership, generation)
            try:
                started = monotonic()
                await self.membership.check(generation)  # fetched by a worker paused past its session?
                deliveries = await self.batch_handlers[topic](records)
                took = monotonic() - started
                if took > SLOW_BATCH_SECONDS:
                    logger.warning("a batch of %d %s records took %.2f s", len(records), topic, took)
            except NotProcessed as exc:  # given up before anything was written (the zombie fence)
                logger.warning("a batch of %d %s records is given up: %s", len(records), topic, exc)
                done.set_result(None)
                await self._read_again(acks[topic])
                continue
            except BaseException as exc:
                done.set_exception(exc)
                done.exception()  # retrieved here; the exception itself goes up to faust's fetcher
                raise
            finally:
                done_handling(handling)
            if deliveries:
                delivered = asyncio.gather(*(delivery.future for delivery in deliveries))
                delivered.add_done_callback(partial(self._on_delivered, acks[topic], done))
            else:
                self._on_delivered(acks[topic], done, None)
        # no commit from here: faust's commit timer commits the acknowledged ranges (a commit
        # waits for the producer to flush, which would stop fetching meanwhile)

    async def _read_again(self, acks: list[tuple[TP, int, int]]) -> None:
        """Fetch partitions again from ``start`` of each (tp, start, last), while they are still ours.

        For a batch given up or records skipped. (When the worker has left the group, the
        rebalance that follows starts them at the committed offsets anyway.)
        """
        assigned = self.assignment()
        for tp, start, _ in acks:
            if tp not in assigned:
                continue
            try:
                await self.seek(tp, start)
            except Exception as exc:  # revoked meanwhile: its next owner starts at the committed offset
                logger.info("%s[%d] not read again from %d: %r", tp.topic, tp.partition, start, exc)

    def _on_delivered(
        self, acks: list[tuple[TP, int, int]], done: asyncio.Future[Any], delivered: Any
    ) -> None:
        if delivered is not None and isinstance(
            None if delivered.cancelled() else delivered.exception(), NotProcessed
        ):
            done.set_result(None)  # given up: nothing acknowledged, the records are read again
            return
        if delivered is not None and (delivered.cancelled() or delivered.exception() is not None):
            reason = delivered.exception() if not delivered.cancelled() else "cancelled"
            logger.error(
                "records produced from a fetch were not delivered (%s); offsets not committed", reason
            )
            done.set_result(None)
            self.app.loop.create_task(self.crash(RuntimeError(f"delivery failed: {reason}")))
            return
        for tp, start, last in acks:
            self._ack_range(tp, start, last)
        done.set_result(None)

    def _ack_range(self, tp: TP, start: int, last: int) -> None:
        """Acknowledge every offset from ``start`` to ``last`` (holes are transaction markers)."""
        committed = self._committed_offset[tp]
        if committed is not None:
            start = max(start, committed)  # what faust's ack() refuses too
        if start > last:
            return
        index = self._acked_index[tp]
        fresh: Sequence[int] = range(start, last + 1)
        if not index.isdisjoint(fresh):  # a range overlapping an earlier one (after a seek)
            fresh = [offset for offset in fresh if offset not in index]
        self._acked[tp].extend(fresh)
        index.update(fresh)
        self._n_acked += len(fresh)

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Subscribe once the broker's metadata shows every topic (faust has just created them).

        A group leader that does not see a topic yet assigns none of its partitions, and the
        consumer learns of the topic only at its next metadata refresh (5 minutes): a worker that
        is ready but processes nothing.
        """
        topics = list(topics)
        await self._wait_for_metadata(topics, within=15.0)
        await super().subscribe(topics)

    async def _wait_for_metadata(self, topics: list[str], within: float) -> None:
        client: Any = self.app.producer._ensure_producer().client  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        # kept in the producer's metadata from now on: faust's web routing hashes keys with it
        await keep_metadata_of(client, topics, within=5.0)
        while True:
            missing = [topic for topic in topics if not client.cluster.partitions_for_topic(topic)]
            if not missing or loop.time() > deadline:
                break
            await asyncio.wait_for(client.force_metadata_update(), 5.0)
            await asyncio.sleep(0.1)
        if missing:
            logger.warning("subscribing before the broker lists these topics: %s", ", ".join(sorted(missing)))

    async def wait_empty(self) -> None:
        """Before a commit at rebalance or stop: the batches being handled finish first.

        (At most ``PENDING_WAIT_SECONDS``: batches whose records never reach the broker stay
        unacknowledged and are processed again, which is at-least-once.)
        """
        self.membership.abandon()
        for hook in _abandon_hooks:
            try:
                hook()
            except Exception:  # a hook must not keep the rebalance from going on
                logger.exception("giving up waiting batches failed")
        if self._pending:
            _, late = await asyncio.wait(list(self._pending), timeout=PENDING_WAIT_SECONDS)
            if late:
                logger.warning(
                    "%d batches not delivered in %.0f s: processed again later",
                    len(late),
                    PENDING_WAIT_SECONDS,
                )
        await super().wait_empty()


class _ConsumerThread(AIOKafkaConsumerThread):
    """faust's consumer thread with fetches that wait at most ``FETCH_MAX_WAIT_MS`` for data.

    aiokafka keeps one fetch request per broker in flight, for the partitions that have no
    fetched records waiting. When those are all idle (a worker reads a dozen topics, some
    quiet) the broker holds the request up to its max wait, and the busy partitions, drained
    meanwhile, wait behind it: with faust's 1,500 ms, alerts came 1-2 s late under load.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the fetcher starts
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Any:
        """The end of each partition; under exactly-once its last stable offset, asked of the
        broker for partitions not fetched yet.

        faust takes the LSO of the consumer's last fetch, which is None for a partition newly
        assigned by a rebalance; its recovery reads None as "empty changelog" and restores
        nothing (a worker taking over partitions under load answered 404 for their keys), and
        the ahead-of-changelog check read it as end 0. ListOffsets of a read_committed consumer
        gives the LSO.
        """
        consumer = self._ensure_consumer()
        if not self.consumer.in_transaction:
            return await consumer.end_offsets(partitions)
        found = {tp: consumer.last_stable_offset(tp) for tp in partitions}
        unknown = [tp for tp, offset in found.items() if offset is None or offset < 0]
        if unknown:
            found.update(await consumer.end_offsets(unknown))
        return found


#: where faust's rocksdb store keeps a partition's persisted changelog offset, in the same DB
_FAUST_OFFSET_KEY = b"__faust\0offset__"


def _skip_changelog_record(record: ConsumerRecord) -> None:
    """A changelog record the app never writes (no key: RocksDB has no null key; faust's own
    offset key, which the restore sets itself): skipped with a warning, recovery goes on."""
    key = record.key[:200].decode(errors="backslashreplace") if record.key is not None else None
    logger.warning(
        "changelog record %s[%d]@%d with key %r skipped: the app never writes it",
        record.topic, record.partition, record.offset, key,
    )  # fmt: skip


def _restorable(table: Any) -> bool:
    """Tables on faust's rocksdict store (all of streamapp's): their changelogs are restored here."""
    return bool(getattr(table.data, "use_rocksdict", False))


async def consume_in_batches(stream: faust.StreamT[bytes], handler: BatchHandler) -> None:
    """An agent's body: ``handler`` takes every fetch of the stream's topics (see BatchConsumer).

    Records that reach the agent's stream itself (none, while the batch consumer runs) take
    the same handler, a batch of events at a time, acknowledged once delivered.
    """
    handlers = stream.app.batch_handlers  # type: ignore[attr-defined]
    for topic in stream.channel.topics:  # type: ignore[attr-defined]
        # a second agent on a topic (the detections on sensor-readings) takes every batch too
        existing = handlers.get(topic)
        handlers[topic] = handler if existing is None or existing is handler else _both(existing, handler)
    async for events in stream.take_events(BATCH_MAX, BATCH_WITHIN_SECONDS):  # type: ignore[attr-defined]
        for delivery in await handler(records_of_events(events)):
            await delivery.future


def _both(first: BatchHandler, second: BatchHandler) -> BatchHandler:
    async def both(records: Sequence[ConsumerRecord]) -> list[Delivery]:
        return [*(await first(records)), *(await second(records))]

    return both


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
