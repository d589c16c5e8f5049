"""Changelog records fetched during recovery, written to the tables' RocksDB a partition at a time."""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

import rocksdict
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from streamapp.observability.faust_sensors import count_received
from streamapp.runtime.faust_compat import end_recovery, events_received_at, rocksdb

__all__ = ["restorable", "restore_changelogs"]

logger = logging.getLogger(__name__)

#: where faust's rocksdb store keeps a partition's persisted changelog offset, in the same DB
_FAUST_OFFSET_KEY = b"__faust\0offset__"


def restorable(table: Any) -> bool:
    """Tables on faust's rocksdict store (all of streamapp's): their changelogs are restored here."""
    return bool(getattr(table.data, "use_rocksdict", False))


async def restore_changelogs(
    consumer: Consumer, recovery: Any, fetched: dict[TP, list[ConsumerRecord]]
) -> None:
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
        count_received(consumer.app, tp, len(records), last)
    if recovery.in_recovery and consumer.app.in_transaction and recovery.need_recovery():
        # transaction markers after the last record: the position has passed the highwater
        for tp, remaining in recovery.active_remaining().items():
            if remaining > 0 and tp in fetched:
                highwater = recovery.active_highwaters[tp]
                if (await consumer.position(tp) or 0) > highwater:
                    recovery.active_offsets[tp] = highwater
    if recovery.in_recovery and not recovery.need_recovery():
        recovery.flush_buffers()
        end_recovery(recovery)
        recovery.signal_recovery_end.set()
    if not recovery.tables.standbys_ready and not recovery.standby_remaining_total():
        recovery.tables.on_standbys_ready()


def _skip_changelog_record(record: ConsumerRecord) -> None:
    """A changelog record the app never writes (no key: RocksDB has no null key; faust's own
    offset key, which the restore sets itself): skipped with a warning, recovery goes on."""
    key = record.key[:200].decode(errors="backslashreplace") if record.key is not None else None
    logger.warning(
        "changelog record %s[%d]@%d with key %r skipped: the app never writes it",
        record.topic, record.partition, record.offset, key,
    )  # fmt: skip
