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


def _revoking_consumer(in_transaction: bool, acked: list[int]) -> tuple[Any, list[tuple[str, Any]]]:
    """A BatchConsumer with faust's per-partition bookkeeping and what a revocation calls: the
    app's own revocation handler and wait_empty (which commits) record what they saw."""
    from faust.utils.tracing import noop_span

    consumer: Any = BatchConsumer.__new__(BatchConsumer)  # no app, no transport: only the bookkeeping
    consumer.diag = BatchConsumer.Diag(consumer)  # mode's service state flags
    seen: list[tuple[str, Any]] = []
    consumer._acked = defaultdict(list, {TOPIC_PARTITION: list(acked)})
    consumer._acked_index = defaultdict(set, {TOPIC_PARTITION: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    consumer._read_offset = defaultdict(lambda: None, {TOPIC_PARTITION: acked[-1] + 1})
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._active_partitions = {TOPIC_PARTITION}
    consumer._paused_partitions = set()
    consumer.assignment = lambda: {TOPIC_PARTITION}
    consumer.stop_flow = lambda: seen.append(("stop_flow", None))
    consumer.pause_partitions = lambda tps: seen.append(("pause", set(tps)))
    consumer.app = SimpleNamespace(
        in_transaction=in_transaction,
        should_stop=False,
        flow_control=SimpleNamespace(suspend=lambda: None, clear=lambda: None),
        _start_span_from_rebalancing=lambda _name: noop_span(),
    )

    async def wait_empty() -> None:  # faust's: wait for the streams, then commit what is acknowledged
        seen.append(("commit", list(consumer._acked[TOPIC_PARTITION])))

    async def app_revoked(revoked: set[TP]) -> None:
        seen.append(("app", set(revoked)))

    consumer.wait_empty = wait_empty
    consumer._on_partitions_revoked = app_revoked
    return consumer, seen


async def test_exactly_once_commits_a_revoked_partitions_acknowledged_offsets_before_faust_drops_them() -> (
    None
):
    """faust forgot them before its own commit at revocation: the transaction with the records
    produced from them was committed later without them, and the partition's new owner
    processed the records again (alerts committed twice, workers scaled under load)."""
    consumer, seen = _revoking_consumer(in_transaction=True, acked=[5, 6, 7])

    await consumer.on_partitions_revoked({TOPIC_PARTITION})

    assert seen == [
        ("stop_flow", None),
        ("pause", {TOPIC_PARTITION}),
        ("commit", [5, 6, 7]),
        ("app", {TOPIC_PARTITION}),
    ]
    assert TOPIC_PARTITION not in consumer._acked  # then dropped by faust, as before


async def test_at_least_once_revocation_is_faust_s_own() -> None:
    consumer, seen = _revoking_consumer(in_transaction=False, acked=[5, 6, 7])

    await consumer.on_partitions_revoked({TOPIC_PARTITION})

    assert seen == [("app", {TOPIC_PARTITION})]


async def test_the_commit_that_ends_the_transaction_waits_for_a_running_commit_then_commits() -> None:
    """faust's commit returns without committing while another runs; the end of the transaction
    at a rebalance or a stop must commit what was acknowledged meanwhile."""
    import asyncio

    consumer: Any = BatchConsumer.__new__(BatchConsumer)
    running = asyncio.get_running_loop().create_future()
    consumer._commit_fut = running
    commits: list[bool] = []

    async def commit(start_new_transaction: bool = True) -> bool:
        if consumer._commit_fut is not None:  # what faust's commit does while one runs
            return False
        commits.append(start_new_transaction)
        return True

    consumer.commit = commit
    ending = asyncio.ensure_future(consumer.commit_and_end_transactions())
    await asyncio.sleep(0)
    assert not ending.done()  # waits for the running commit
    consumer._commit_fut = None
    running.set_result(None)
    await ending
    assert commits == [False]  # one commit, which ends the transaction (begins no new one)
