"""Offsets of a handled fetch are acknowledged as ranges that faust's commit logic turns into offsets."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

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
