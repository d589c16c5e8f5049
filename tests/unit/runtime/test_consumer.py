"""Offsets of a handled fetch are acknowledged as ranges that faust's commit logic turns into offsets."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.types import TP
from intervaltree import IntervalTree

from streamapp.runtime.consumer import BatchConsumer

TOPIC_PARTITION = TP("logins", 3)


def _consumer(committed: int | None = None) -> Any:
    """The bookkeeping faust's Consumer keeps per partition (what _ack_range and _new_offset use)."""
    return SimpleNamespace(
        _committed_offset=defaultdict(lambda: committed),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _n_acked=0,
    )


def _commit_offset(consumer: Any) -> int | None:
    """What faust would commit now (its own _new_offset on our bookkeeping)."""
    return BatchConsumer._new_offset(consumer, TOPIC_PARTITION)  # type: ignore[arg-type]


def test_a_range_commits_the_offset_after_its_last_record() -> None:
    consumer = _consumer()
    BatchConsumer._ack_range(consumer, TOPIC_PARTITION, 0, 499)
    assert consumer._n_acked == 500
    assert _commit_offset(consumer) == 500


def test_consecutive_fetches_with_transaction_markers_between_them_commit_to_the_end() -> None:
    # under exactly-once a commit marker takes an offset: records 0-9, marker 10, records 11-20
    consumer = _consumer(committed=0)
    BatchConsumer._ack_range(consumer, TOPIC_PARTITION, 0, 9)
    BatchConsumer._ack_range(consumer, TOPIC_PARTITION, 10, 20)  # starts at the next offset expected
    assert _commit_offset(consumer) == 21


def test_offsets_below_the_committed_one_are_not_acknowledged_again() -> None:
    consumer = _consumer(committed=100)
    BatchConsumer._ack_range(consumer, TOPIC_PARTITION, 90, 120)
    assert consumer._acked[TOPIC_PARTITION][0] == 100
    assert _commit_offset(consumer) == 121


def test_an_overlapping_range_after_a_seek_adds_only_new_offsets() -> None:
    consumer = _consumer()
    BatchConsumer._ack_range(consumer, TOPIC_PARTITION, 0, 9)
    BatchConsumer._ack_range(consumer, TOPIC_PARTITION, 5, 14)
    assert sorted(consumer._acked[TOPIC_PARTITION]) == list(range(15))
    assert _commit_offset(consumer) == 15


def test_a_range_that_is_all_committed_already_is_ignored() -> None:
    consumer = _consumer(committed=50)
    BatchConsumer._ack_range(consumer, TOPIC_PARTITION, 10, 20)
    assert consumer._n_acked == 0
    assert _commit_offset(consumer) is None


async def test_exactly_once_highwaters_of_partitions_not_fetched_yet_are_asked_of_the_broker() -> None:
    """faust's LSO comes from the last fetch: None right after a rebalance, which its recovery
    read as an empty changelog (nothing restored)."""
    from streamapp.runtime.consumer.batch_consumer import _ConsumerThread

    fetched, fresh = TP("c", 0), TP("c", 1)
    asked: list[list[TP]] = []

    async def end_offsets(partitions: list[TP]) -> dict[TP, int]:
        asked.append(list(partitions))
        return {tp: 40 for tp in partitions}

    aiokafka_consumer = SimpleNamespace(
        last_stable_offset=lambda tp: 17 if tp == fetched else None, end_offsets=end_offsets
    )
    thread: Any = SimpleNamespace(
        _ensure_consumer=lambda: aiokafka_consumer, consumer=SimpleNamespace(in_transaction=True)
    )
    assert await _ConsumerThread._highwaters(thread, [fetched, fresh]) == {fetched: 17, fresh: 40}
    assert asked == [[fresh]]


def _record(offset: int, tp: TP = TOPIC_PARTITION) -> ConsumerRecord:
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=0, timestamp_type=0,
        key=b"k", value=b"v", checksum=None, serialized_key_size=1, serialized_value_size=1, headers=(),
    )  # fmt: skip


def _fetching_consumer(assigned: set[TP], read: dict[TP, int]) -> Any:
    """What _fetch_again and _handle use of faust's Consumer: the assignment, read offsets, seek."""
    seeks: list[tuple[TP, int]] = []
    consumer = SimpleNamespace(
        assignment=lambda: assigned,
        _read_offset=defaultdict(lambda: None, read),
        _buffered_partitions=set(),
        seeks=seeks,
    )

    async def seek(tp: TP, offset: int) -> None:  # faust's seek: the position and the read offset
        seeks.append((tp, offset))
        consumer._read_offset[tp] = offset

    consumer.seek = seek
    consumer._fetch_again = partial(BatchConsumer._fetch_again, consumer)  # type: ignore[arg-type]
    return consumer


async def test_records_not_handled_after_a_rebalance_are_fetched_again_from_their_first_offset() -> None:
    """A fetch that a rebalance overtook moved the position past its records: unhandled and never
    read again, the next fetch's acknowledged range covered them (their keys' states were lost)."""
    revoked = TP("logins", 1)
    consumer = _fetching_consumer({TOPIC_PARTITION}, {TOPIC_PARTITION: 456})
    await BatchConsumer._fetch_again(
        consumer, {TOPIC_PARTITION: [_record(456), _record(457)], revoked: [_record(9, revoked)]}
    )
    assert consumer.seeks == [(TOPIC_PARTITION, 456)]  # a revoked partition is its next owner's


async def test_a_seek_to_the_committed_offset_meanwhile_is_not_undone() -> None:
    # the records came from the position before the rebalance; the committed offset is lower
    consumer = _fetching_consumer({TOPIC_PARTITION}, {TOPIC_PARTITION: 400})
    await BatchConsumer._fetch_again(consumer, {TOPIC_PARTITION: [_record(456)]})
    assert consumer.seeks == [(TOPIC_PARTITION, 400)]


async def test_records_of_a_partition_paused_since_the_fetch_are_not_acknowledged_but_read_again() -> None:
    consumer = _fetching_consumer({TOPIC_PARTITION}, {TOPIC_PARTITION: 456})
    consumer._committed_offset = defaultdict(lambda: 456)
    await BatchConsumer._handle(consumer, {TOPIC_PARTITION: [_record(456), _record(457)]}, active=set())
    assert consumer.seeks == [(TOPIC_PARTITION, 456)]
    assert consumer._read_offset[TOPIC_PARTITION] == 456  # the next fetch starts there
