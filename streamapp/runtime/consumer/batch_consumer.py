"""faust's consumer, handing the records of routed topics to the app's router a fetch at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from time import monotonic
from typing import Any, cast

from aiokafka.errors import IllegalStateError
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

from streamapp.observability.faust_sensors import count_received
from streamapp.runtime.consumer.changelog_restore import restorable, restore_changelogs
from streamapp.runtime.consumer.consumer_thread import ConsumerThread
from streamapp.runtime.consumer.errors import NotProcessed
from streamapp.runtime.consumer.fence import (
    GroupMember,
    Membership,
    aiokafka_group_member,
    done_handling,
    handling_batch,
)
from streamapp.runtime.faust_compat import consumer_thread, default_kafka_producer
from streamapp.runtime.producer import keep_metadata_of
from streamapp.runtime.router import Router
from streamapp.types import BatchHandler

__all__ = [
    "BatchConsumer",
    "BatchHandler",
    "NotProcessed",
    "abandon_before_waiting",
]

logger = logging.getLogger(__name__)

#: a batch handler slower than this is logged (it stops fetching for as long)
SLOW_BATCH_SECONDS = 0.5
#: how long a rebalance or a stop waits for the batches being delivered
PENDING_WAIT_SECONDS = 30.0


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
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

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
            tp for tp in fetched if tp in recovery.tp_to_table and restorable(recovery.tp_to_table[tp])
        ]
        if changelogs:
            await restore_changelogs(self, recovery, {tp: fetched.pop(tp) for tp in changelogs})
        router = self.batch_router
        taken = {tp: fetched.pop(tp) for tp in [tp for tp in fetched if tp.topic in router]}
        if taken:
            await self._handle(taken, active_partitions, generation)
        return records, active_partitions

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
            # what faust's per-record path tells its monitor (lag and throughput figures); a
            # partition revoked since the fetch (a subscription changed while running) has no
            # highwater: aiokafka asserts that the partition is assigned
            try:
                self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            except AssertionError:
                pass
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
