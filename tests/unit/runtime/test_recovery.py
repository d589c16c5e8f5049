"""The healing recovery: each recovery ends once its own active partitions are restored."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

import faust
from aiokafka.structs import ConsumerRecord
from faust.types import TP, TableT

from streamapp.runtime.consumer.changelog_restore import restore_changelogs
from streamapp.runtime.faust_compat import rocksdb
from streamapp.runtime.recovery import HealingRecovery, HealingTableManager


def _record(tp: TP, offset: int, key: bytes) -> ConsumerRecord:
    return ConsumerRecord(
        topic=tp.topic, partition=tp.partition, offset=offset, timestamp=0, timestamp_type=0,
        key=key, value=b'{"buckets": [[0.0, 1]]}', checksum=None, serialized_key_size=len(key),
        serialized_value_size=0, headers=(),
    )  # fmt: skip


def _changelog(tp: TP, *keys: bytes) -> list[ConsumerRecord]:
    return [_record(tp, offset, key) for offset, key in enumerate(keys)]


def _assign_active(recovery: HealingRecovery, table: TableT, tp: TP, records: int) -> None:
    """What a rebalance and faust's recovery set up before reading: a new active partition whose
    changelog holds ``records`` records, none of them in the local state yet."""
    recovery.add_active(table, tp)
    recovery.active_highwaters[tp] = records - 1  # faust's highwater: the last offset
    recovery.active_offsets[tp] = -1


async def test_a_recovery_right_after_one_ended_by_the_batched_restore_waits_for_its_own_records(
    make_table: Callable[..., faust.Table],
) -> None:
    table = make_table(app_options={"TableManager": HealingTableManager}, key_type=bytes)
    app = table.app
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    assert isinstance(recovery, HealingRecovery)
    consumer = SimpleNamespace(app=app)
    changelog = table.changelog_topic.get_topic_name()
    first, second = TP(changelog, 0), TP(changelog, 1)

    # one rebalance: the batched restore reads the active partition and ends the recovery
    _assign_active(recovery, table, first, 2)
    recovery._set_recovery_started()
    await restore_changelogs(consumer, recovery, {first: _changelog(first, b"10.0.0.1", b"10.0.0.2")})  # type: ignore[arg-type]
    assert not recovery.in_recovery and recovery.signal_recovery_end.is_set()

    # the next one, seconds later, with a new active partition: faust's recovery starts, resumes
    # the partition and waits for the end signal
    _assign_active(recovery, table, second, 3)
    recovery._set_recovery_started()
    assert recovery.need_recovery()
    ended = asyncio.ensure_future(recovery.signal_recovery_end.wait())
    await asyncio.sleep(0.01)
    assert not ended.done(), "the recovery ended before any record of its new partition was read"

    keys = [b"10.0.0.3", b"10.0.0.4", b"10.0.0.5"]
    await restore_changelogs(consumer, recovery, {second: _changelog(second, *keys)})  # type: ignore[arg-type]
    await asyncio.wait_for(ended, timeout=1.0)
    assert not recovery.in_recovery
    assert all(rocksdb(table.data, 1).get(key) is not None for key in keys)
    await app.stop()
