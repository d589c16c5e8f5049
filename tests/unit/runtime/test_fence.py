"""The zombie fence: a batch writes only while the worker is known to be in its consumer group."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streamapp.runtime.consumer import BatchConsumer, MembershipLost, NotProcessed, check_membership
from streamapp.runtime.consumer.fence import Membership, done_handling, handling_batch
from streamapp.runtime.producer import BatchSender
from streamapp.runtime.router import Router

SESSION_TIMEOUT = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeMember:
    """A group member whose coordinator answers heartbeats from a script: "ok", "refused", "silent"."""

    def __init__(self, *answers: str, generation: int = 7) -> None:
        self.generation = generation
        self.member = True
        self.answers = list(answers)
        self.heartbeats = 0

    def is_member(self) -> bool:
        return self.member

    async def heartbeat(self) -> bool:
        self.heartbeats += 1
        answer = self.answers.pop(0) if self.answers else "ok"
        if answer == "refused":  # what aiokafka does on UnknownMemberId: reset and rejoin
            self.member, self.generation = False, -1
        return answer == "ok"


def _membership(member: FakeMember | None, clock: FakeClock) -> Membership:
    return Membership(lambda: member, SESSION_TIMEOUT, clock=clock, retry_seconds=0.01, give_up_seconds=5)


async def test_a_member_confirmed_recently_writes_without_asking_the_coordinator() -> None:
    clock, member = FakeClock(), FakeMember()
    membership = _membership(member, clock)
    membership.confirm()
    clock.now += 4.9  # heartbeats every 2 s: a confirmation is never older than this in normal work
    await membership.check(7)
    assert member.heartbeats == 0


async def test_a_worker_resumed_after_the_session_timeout_gives_the_batch_up() -> None:
    clock, member = FakeClock(), FakeMember("refused")
    membership = _membership(member, clock)
    membership.confirm()
    clock.now += 14  # SIGSTOP for 14 s: the coordinator has expired the member meanwhile
    with pytest.raises(MembershipLost) as lost:
        await membership.check(7)
    assert isinstance(lost.value, NotProcessed)  # the batch consumer's "read again, no crash"
    assert member.heartbeats == 1


async def test_a_short_pause_is_confirmed_by_one_heartbeat_and_then_trusted_again() -> None:
    clock, member = FakeClock(), FakeMember("ok")
    membership = _membership(member, clock)
    membership.confirm()
    clock.now += 6  # in doubt (past half the session timeout), but still a member
    await membership.check(7)
    clock.now += 1
    await membership.check(7)
    assert member.heartbeats == 1


async def test_a_rebalance_that_ended_since_the_fetch_gives_the_batch_up_without_asking() -> None:
    clock, member = FakeClock(), FakeMember(generation=8)
    membership = _membership(member, clock)
    membership.confirm()
    with pytest.raises(MembershipLost, match="generation 7"):
        await membership.check(7)
    assert member.heartbeats == 0


async def test_a_member_the_coordinator_already_refused_gives_the_batch_up() -> None:
    clock, member = FakeClock(), FakeMember()
    membership = _membership(member, clock)
    membership.confirm()
    member.member = False  # aiokafka's heartbeat task got UnknownMemberId before this batch
    with pytest.raises(MembershipLost):
        await membership.check(None)


async def test_an_unreachable_coordinator_is_asked_again_until_it_answers() -> None:
    clock, member = FakeClock(), FakeMember("silent", "silent", "ok")
    membership = _membership(member, clock)
    await membership.check(7)  # never confirmed (e.g. right after start): in doubt
    assert member.heartbeats == 3


async def test_a_rebalance_ends_the_wait_for_an_unreachable_coordinator() -> None:
    clock, member = FakeClock(), FakeMember(*["silent"] * 1000)
    membership = _membership(member, clock)
    checking = asyncio.ensure_future(membership.check(7))
    await asyncio.sleep(0.05)
    assert not checking.done()
    membership.abandon()  # wait_empty at a rebalance or stop
    with pytest.raises(MembershipLost):
        await checking


async def test_no_consumer_yet_means_nothing_to_fence() -> None:
    await _membership(None, FakeClock()).check(7)


async def test_check_membership_checks_only_inside_a_batch_handed_over_by_the_consumer() -> None:
    clock, member = FakeClock(), FakeMember("refused")
    membership = _membership(member, clock)
    await check_membership()  # an agent's stream or a test: no batch, no check
    assert member.heartbeats == 0
    token = handling_batch(membership, 7)
    try:
        with pytest.raises(MembershipLost):
            await check_membership()
    finally:
        done_handling(token)


# -- the batch consumer gives a fenced batch up: handler not run, nothing acknowledged, read again --
TOPIC_PARTITION = TP("prices-by-symbol", 2)


def _records(first: int, count: int) -> list[ConsumerRecord]:
    return [
        ConsumerRecord(
            TOPIC_PARTITION.topic, TOPIC_PARTITION.partition, offset, 0, 0, b"k", b"v", None, 1, 1, ()
        )
        for offset in range(first, first + count)
    ]


def _batch_consumer(membership: Membership, handled: list[int]) -> Any:
    """A BatchConsumer's bookkeeping and collaborators as plain attributes (no Kafka)."""
    sought: list[tuple[TP, int]] = []

    async def handler(records: list[ConsumerRecord]) -> list[Any]:
        handled.append(len(records))
        await check_membership()  # what detect_batch does before its writes
        return []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))
        consumer._read_offset[tp] = offset

    monitor = SimpleNamespace(
        messages_received_total=0,
        messages_received_by_topic=defaultdict(int),
        tp_read_offsets={},
        track_tp_end_offset=lambda tp, offset: None,
    )
    router = Router()
    router.declare(TOPIC_PARTITION.topic, handler, "detect")
    consumer: Any = SimpleNamespace(
        membership=membership,
        batch_router=router,
        app=SimpleNamespace(monitor=monitor),
        highwater=lambda tp: 1000,
        assignment=lambda: {TOPIC_PARTITION},
        seek=seek,
        sought=sought,
        _pending=set(),
        _buffered_partitions=set(),
        _read_offset=defaultdict(lambda: None),
        _committed_offset=defaultdict(lambda: 100),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _n_acked=0,
    )
    for name in ("_handle", "_read_again", "_fetch_again", "_on_delivered", "_ack_range"):
        setattr(consumer, name, getattr(BatchConsumer, name).__get__(consumer))
    return consumer


async def test_a_fetch_taken_by_a_resumed_zombie_is_not_handled_acknowledged_or_skipped() -> None:
    clock, member = FakeClock(), FakeMember("refused")
    membership = _membership(member, clock)
    membership.confirm()
    handled: list[int] = []
    consumer = _batch_consumer(membership, handled)
    clock.now += 14
    await consumer._handle({TOPIC_PARTITION: _records(100, 5)}, {TOPIC_PARTITION}, 7)
    assert handled == []  # fenced before the handler ran
    assert consumer._n_acked == 0
    assert consumer.sought == [(TOPIC_PARTITION, 100)]  # read again from where the batch began
    assert consumer._read_offset[TOPIC_PARTITION] == 100


async def test_a_batch_paused_in_its_handler_is_given_up_before_it_writes() -> None:
    clock, member = FakeClock(), FakeMember("ok", "refused")
    membership = _membership(member, clock)
    handled: list[int] = []
    consumer = _batch_consumer(membership, handled)

    async def paused_handler(records: list[ConsumerRecord]) -> list[Any]:
        handled.append(len(records))
        clock.now += 14  # SIGSTOP in the middle of the batch, SIGCONT 14 s later
        await check_membership()
        raise AssertionError("written by a zombie")

    consumer.batch_router = Router()
    consumer.batch_router.declare(TOPIC_PARTITION.topic, paused_handler, "detect")
    await consumer._handle({TOPIC_PARTITION: _records(100, 5)}, {TOPIC_PARTITION}, 7)
    assert handled == [5]
    assert consumer._n_acked == 0
    assert consumer.sought == [(TOPIC_PARTITION, 100)]
    assert all(done.done() for done in consumer._pending)  # wait_empty does not wait for it


async def test_a_batch_of_a_confirmed_member_is_handled_and_acknowledged() -> None:
    clock, member = FakeClock(), FakeMember()
    membership = _membership(member, clock)
    membership.confirm()
    handled: list[int] = []
    consumer = _batch_consumer(membership, handled)
    await consumer._handle({TOPIC_PARTITION: _records(100, 5)}, {TOPIC_PARTITION}, 7)
    assert handled == [5]
    assert consumer._n_acked == 5
    assert consumer.sought == []


# -- batches queued before a pause are fenced at the producer ------------------------------------
class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[TP] = []

    async def send_batch(self, builder: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        self.sent.append(TP(topic, partition))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(offset=0))
        return done


def _sender(membership: Membership) -> tuple[BatchSender, FakeProducer]:
    producer = FakeProducer()
    kafka = SimpleNamespace(_ensure_producer=lambda: producer)
    app: Any = SimpleNamespace(in_transaction=False, producer=kafka)
    sender = BatchSender(app)
    sender.membership = membership
    return sender, producer


async def test_a_batch_queued_before_a_pause_past_the_session_timeout_is_not_sent() -> None:
    clock, member = FakeClock(), FakeMember("refused")
    membership = _membership(member, clock)
    membership.confirm()
    sender, producer = _sender(membership)
    clock.now += 14  # queued, then SIGSTOP before the sender task handed it to the producer
    delivered = await sender.submit(TOPIC_PARTITION, object())
    with pytest.raises(MembershipLost):
        await delivered
    assert producer.sent == []


async def test_a_batch_of_a_trusted_member_goes_to_the_producer() -> None:
    clock, member = FakeClock(), FakeMember()
    membership = _membership(member, clock)
    membership.confirm()
    sender, producer = _sender(membership)
    await (await sender.submit(TOPIC_PARTITION, object()))
    assert producer.sent == [TOPIC_PARTITION]
    assert member.heartbeats == 0


async def test_records_of_a_partition_outside_the_active_set_are_read_again_not_dropped() -> None:
    """The active set is taken before the fetch: a partition resumed during it (table recovery
    done) came back with records that were skipped while the position moved past them; the next
    fetch began after them (a burst counted 2 of 6 once re-read: its first records passed for
    applied)."""
    clock, member = FakeClock(), FakeMember()
    membership = _membership(member, clock)
    membership.confirm()
    handled: list[int] = []
    consumer = _batch_consumer(membership, handled)
    consumer._read_offset[TOPIC_PARTITION] = 996
    await consumer._handle({TOPIC_PARTITION: _records(996, 48)}, set(), 7)
    assert handled == []
    assert consumer._n_acked == 0
    assert consumer.sought == [(TOPIC_PARTITION, 996)]


async def test_records_fetched_across_a_rebalance_are_read_again_from_the_lower_read_offset() -> None:
    """A seek to the committed offset (the new generation's) came during the fetch: read from there."""
    handled: list[int] = []
    consumer = _batch_consumer(_membership(FakeMember(), FakeClock()), handled)
    consumer._read_offset[TOPIC_PARTITION] = 100
    await consumer._fetch_again({TOPIC_PARTITION: _records(6544, 20)})
    assert consumer.sought == [(TOPIC_PARTITION, 100)]
    assert handled == []
