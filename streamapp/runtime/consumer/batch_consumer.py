"""faust's consumer, handing the records of routed topics to the app's router a fetch at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from time import monotonic
from typing import Any, cast

import faust
import rocksdict
from aiokafka.errors import IllegalStateError
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
from streamapp.runtime.faust_compat import (
    consumer_thread,
    default_kafka_producer,
    end_recovery,
    events_received_at,
    rocksdb,
    set_fetch_max_wait,
)
from streamapp.runtime.producer import keep_metadata_of
from streamapp.runtime.router import Router
from streamapp.settings import BATCH_MAX, BATCH_WITHIN_SECONDS
from streamapp.types import BatchHandler

__all__ = [
    "FETCH_MAX_WAIT_MS",
    "BatchConsumer",
    "BatchHandler",
    "NotProcessed",
    "abandon_before_waiting",
    "drain_to_router",
    "records_of_events",
]

logger = logging.getLogger(__name__)

#: a batch handler slower than this is logged (it stops fetching for as long)
SLOW_BATCH_SECONDS = 0.5
#: how long a rebalance or a stop waits for the batches being delivered
PENDING_WAIT_SECONDS = 30.0

#: how long the broker may hold a fetch request that finds no data (faust sets 1,500 ms)
FETCH_MAX_WAIT_MS = 50


#: called (synchronously) when a rebalance or a stop waits for the batches being handled: a
#: handler that waits off the fetch path (see streamapp.schema.registry_service.RegistryGate) gives up
_abandon_hooks: list[Callable[[], None]] = []


def abandon_before_waiting(hook: Callable[[], None]) -> None:
    """Call ``hook`` before a rebalance or a stop waits for pending batches (to fail them, NotProcessed)."""
    _abandon_hooks.append(hook)


class BatchConsumer(Consumer):
    """For topics the app's router routes, each fetch goes to their handler whole; others as in faust.

    faust turns every record into a Message and an Event, queues it to the agent's stream and
    acknowledges it alone: tens of microseconds per record, more than the work itself. Here a
    fetch of a routed topic becomes one call of its handler (``app.batch_router``, see
    streamapp.runtime.router), and its offsets are acknowledged as ranges once the records the
    handler produced are on the broker; faust's commit loop then commits them (in the worker's
    transaction under exactly-once). Records of other topics, and the agents' streams, are
    untouched.
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
        return aiokafka_group_member(consumer_thread(self))  # None until the consumer thread starts

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self.membership.confirm()  # the coordinator has just given this member its partitions
        await super().on_partitions_assigned(assigned, generation_id)

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def batch_router(self) -> Router:
        """The app's batch router (not faust's ``app.router``, which routes web requests by key)."""
        return self.app.batch_router  # type: ignore[attr-defined, no-any-return]

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109 (faust's signature)
        generation = self.app.consumer_generation_id
        records, active_partitions = await super()._wait_next_records(timeout)
        if not records:
            return records, active_partitions
        if not self.flow_active or self.app.consumer_generation_id != generation:
            # a rebalance came during the fetch: records of the batch topics are fetched again,
            # never handed to faust's per-record path (see _fetch_again); others go there as before
            fetched = cast(dict[TP, Any], records)
            await self._fetch_again(
                {tp: fetched.pop(tp) for tp in list(fetched) if tp.topic in self.batch_router}
            )
            return records, active_partitions
        fetched = cast(dict[TP, Any], records)  # aiokafka's fetch result: a plain dict
        recovery: Any = cast(Any, self.app.tables).recovery
        changelogs = [
            tp for tp in fetched if tp in recovery.tp_to_table and _restorable(recovery.tp_to_table[tp])
        ]
        if changelogs:
            await self._restore(recovery, {tp: fetched.pop(tp) for tp in changelogs})
        router = self.batch_router
        taken = {tp: fetched.pop(tp) for tp in [tp for tp in fetched if tp.topic in router]}
        if taken:
            await self._handle(taken, active_partitions, generation)
        return records, active_partitions

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
                events_received_at(recovery, standby=False)[tp] = now
            elif tp in recovery.standby_tps:
                offsets = recovery.standby_offsets
                events_received_at(recovery, standby=True)[tp] = now
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
            rocksdb(store, tp.partition).write(batch)
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
            end_recovery(recovery)
            recovery.signal_recovery_end.set()
        if not recovery.tables.standbys_ready and not recovery.standby_remaining_total():
            recovery.tables.on_standbys_ready()

    async def _handle(
        self, fetched: dict[TP, list[ConsumerRecord]], active: set[TP] | None, generation: int | None = None
    ) -> None:
        by_topic: dict[str, list[ConsumerRecord]] = {}
        acks: dict[str, list[tuple[TP, int, int]]] = {}
        paused = {
            tp: records
            for tp, records in fetched.items()
            if active is not None and tp not in active and tp not in self._buffered_partitions
        }
        if paused:  # paused since the fetch: read again once resumed
            await self._fetch_again(paused)
        for tp, records in fetched.items():
            if tp in paused:
                continue
            read = self._read_offset[tp]  # the next offset to process (None before the first)
            if read is not None and records[0].offset < read:
                records = [record for record in records if record.offset >= read]
                if not records:
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
                deliveries = await self.batch_router.handle(topic, records)
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

    async def _fetch_again(self, fetched: dict[TP, list[ConsumerRecord]]) -> None:
        """Put each partition's position back to its first fetched record (or the read offset,
        if a seek to the committed offset put that lower meanwhile): these records are not handled.

        The fetch moved the position past them: dropped without a seek, they were never read
        again, yet the next fetch's acknowledged range (from the read offset on) covered them,
        and their keys' states were missing for good (at-least-once, after a rebalance). Nor do
        they go to faust's per-record path: it keeps its read offset as the last offset read
        (ours: the next one to read), so a seek during a rebalance made it count records it had
        not read as a gap already processed, or stalled the partition's commits for good.
        """
        assignment = self.assignment()
        for tp, records in fetched.items():
            if not records or tp not in assignment:
                continue  # revoked: its next owner reads from the committed offset
            offset = records[0].offset
            read = self._read_offset[tp]
            if read is not None and read < offset:
                offset = read
            try:
                await self.seek(tp, offset)
            except (IllegalStateError, AssertionError) as exc:  # revoked meanwhile
                logger.debug("not seeking %s back: %r", tp, exc)

    async def _read_again(self, acks: list[tuple[TP, int, int]]) -> None:
        """Fetch partitions again from ``start`` of each (tp, start, last) of a batch given up.

        Only while they are still ours: once the worker has left the group, the rebalance that
        follows starts them at the committed offsets anyway.
        """
        assigned = self.assignment()
        for tp, start, _ in acks:
            if tp not in assigned:
                continue
            try:
                await self.seek(tp, start)
            except (IllegalStateError, AssertionError) as exc:  # revoked meanwhile
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
        client: Any = default_kafka_producer(self.app.producer).client
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

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        """Under exactly-once, commit what is acknowledged and end the transaction before faust
        forgets the acknowledged offsets of the revoked partitions.

        faust's consumer drops them first and only then lets the app stop the flow and commit: that
        commit found nothing to commit, the transaction holding the records produced from those
        offsets stayed open, and a later commit published them without their offsets. The
        partitions' new owner processed the same records again: alerts committed twice (workers
        scaled under load). Here the app's first steps (stop the flow, pause, wait for the batches
        being handled, commit and end the transaction) run first; faust's own run of them then
        finds nothing left to do.
        """
        assignment = self.assignment()
        if self.app.in_transaction and not self.app.should_stop and assignment:
            self.stop_flow()
            self.app.flow_control.suspend()
            self.pause_partitions(assignment)
            self.app.flow_control.clear()
            await self.wait_empty()
        await super().on_partitions_revoked(revoked)

    async def commit_and_end_transactions(self) -> None:
        """Commit what is acknowledged and end the transaction, also when a commit was running.

        faust's ``commit`` returns at once, committing nothing, while another commit (the timer's)
        runs; that one begins the next transaction, and the records produced meanwhile, with their
        acknowledged offsets, would stay in it across the rebalance or the stop (see
        :meth:`on_partitions_revoked` for what an open transaction there does).
        """
        while await self.maybe_wait_for_commit_to_finish():
            pass  # another commit may have begun when the one waited for ended
        await self.commit(start_new_transaction=False)

    async def wait_empty(self) -> None:
        """Before a commit at rebalance or stop: the batches being handled finish first.

        (At most ``PENDING_WAIT_SECONDS``: batches whose records never reach the broker stay
        unacknowledged and are processed again, which is at-least-once.)
        """
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
        set_fetch_max_wait(consumer, FETCH_MAX_WAIT_MS)
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
