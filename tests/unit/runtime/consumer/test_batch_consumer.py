"""The consumer's hand-off with fakes: a fetch goes to the router by topic, acknowledged once delivered."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from streamapp.runtime.consumer import BatchConsumer, NotProcessed
from streamapp.runtime.producer import Delivery
from streamapp.runtime.router import Router
from tests.unit.fakes import record


class _Handler:
    """A batch handler whose deliveries complete when the test says so."""

    def __init__(self) -> None:
        self.batches: list[list[ConsumerRecord]] = []
        self.futures: list[asyncio.Future[Any]] = []

    async def __call__(self, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        self.batches.append(list(records))
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return [Delivery(TP("out", 0), len(records), future)]


class _TrustedMember:
    """The zombie fence of a worker the group coordinator has just confirmed."""

    async def check(self, generation: int | None) -> None:
        return None


def _consumer(router: Router) -> Any:
    """The state of faust's Consumer that the hand-off reads and writes."""
    monitor = SimpleNamespace(
        messages_received_total=0, messages_received_by_topic=defaultdict(int), tp_read_offsets={},
        track_tp_end_offset=lambda tp, offset: None,
    )  # fmt: skip
    crashed: list[BaseException] = []
    consumer = SimpleNamespace(
        app=SimpleNamespace(monitor=monitor, batch_router=router, loop=asyncio.get_running_loop()),
        batch_router=router, membership=_TrustedMember(), _pending=set(),
        _read_offset=defaultdict(lambda: None),
        _committed_offset=defaultdict(lambda: None), _buffered_partitions=set(), _acked=defaultdict(list),
        _acked_index=defaultdict(set), _n_acked=0, highwater=lambda tp: 1000, crashed=crashed,
    )  # fmt: skip
    consumer._ack_range = partial(BatchConsumer._ack_range, consumer)
    consumer._on_delivered = partial(BatchConsumer._on_delivered, consumer)

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    consumer.crash = crash
    return consumer


def _fetch(topic: str, partition: int, offsets: range) -> list[ConsumerRecord]:
    return [record(topic, b"{}", partition=partition, offset=offset) for offset in offsets]


async def test_a_fetch_goes_to_each_topics_handler_and_is_acknowledged_once_delivered() -> None:
    logins, readings = _Handler(), _Handler()
    router = Router()
    router.declare("logins", logins, "route-logins")
    router.declare("sensor-readings", readings, "route-sensor-readings")
    consumer = _consumer(router)
    fetched = {
        TP("logins", 0): _fetch("logins", 0, range(10, 15)),
        TP("logins", 1): _fetch("logins", 1, range(0, 3)),
        TP("sensor-readings", 0): _fetch("sensor-readings", 0, range(5)),
    }
    await BatchConsumer._handle(consumer, fetched, None)
    assert [len(batch) for batch in logins.batches] == [8] and [len(b) for b in readings.batches] == [5]
    assert consumer._n_acked == 0  # nothing acknowledged before the handler's records are on the broker
    logins.futures[0].set_result(SimpleNamespace(offset=0))
    await asyncio.sleep(0.01)  # gather's callbacks
    assert sorted(consumer._acked[TP("logins", 0)]) == list(range(10, 15))
    assert sorted(consumer._acked[TP("logins", 1)]) == [0, 1, 2]
    assert consumer._acked[TP("sensor-readings", 0)] == []  # its own deliveries are not done yet
    assert consumer.app.monitor.messages_received_total == 13


async def test_records_already_read_are_not_handed_over_again() -> None:
    logins = _Handler()
    router = Router()
    router.declare("logins", logins, "route-logins")
    consumer = _consumer(router)
    await BatchConsumer._handle(consumer, {TP("logins", 0): _fetch("logins", 0, range(0, 5))}, None)
    await BatchConsumer._handle(consumer, {TP("logins", 0): _fetch("logins", 0, range(3, 8))}, None)
    assert [[r.offset for r in batch] for batch in logins.batches] == [[0, 1, 2, 3, 4], [5, 6, 7]]


async def test_a_batch_given_up_is_not_acknowledged_and_a_failed_delivery_crashes_the_worker() -> None:
    logins = _Handler()
    router = Router()
    router.declare("logins", logins, "route-logins")
    consumer = _consumer(router)
    await BatchConsumer._handle(consumer, {TP("logins", 0): _fetch("logins", 0, range(3))}, None)
    logins.futures[0].set_exception(NotProcessed())
    await asyncio.sleep(0.01)  # gather's callbacks
    assert consumer._n_acked == 0 and consumer.crashed == [] and not consumer._pending
    await BatchConsumer._handle(consumer, {TP("logins", 1): _fetch("logins", 1, range(3))}, None)
    logins.futures[1].set_exception(OSError("broker gone"))
    await asyncio.sleep(0.01)
    assert consumer._n_acked == 0 and "broker gone" in str(consumer.crashed[0])


async def test_a_partition_revoked_since_the_fetch_is_handled_without_its_highwater() -> None:
    logins = _Handler()
    router = Router()
    router.declare("logins", logins, "route-logins")
    consumer = _consumer(router)

    def revoked(tp: TP) -> int:
        raise AssertionError("Partition is not assigned")  # what aiokafka's highwater() does

    consumer.highwater = revoked
    await BatchConsumer._handle(consumer, {TP("logins", 0): _fetch("logins", 0, range(3))}, None)
    assert [[r.offset for r in batch] for batch in logins.batches] == [[0, 1, 2]]
