"""How every streamapp table is declared and how expired keys leave state and changelog."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import orjson
from faust.types import TP, TableT

from streamapp.app import app, settings
from streamapp.clock import worker_clock

__all__ = ["define_table", "expire_keys", "load_state", "restore_event_clock", "store_state"]

logger = logging.getLogger(__name__)


def define_table(name: str, help: str) -> TableT:
    """A table keyed by entity id as raw UTF-8 bytes (like the by-entity topics), JSON values.

    ``key_type=bytes`` makes faust use the raw codec for keys: JSON keys would be quoted and
    hash to other partitions than the records that feed the table.
    """
    return app.Table(
        name,
        key_type=bytes,
        partitions=settings.partitions,
        help=help,
        options={"driver": "rocksdict"},
    )


def load_state(table: TableT, partition: int, key: bytes) -> Any | None:
    """The value of ``key`` in the table's RocksDB for ``partition`` (None when absent)."""
    raw = table.data._db_for_partition(partition).get(key)  # type: ignore[attr-defined]
    return orjson.loads(raw) if raw is not None else None


async def store_state(table: TableT, partition: int, key: bytes, state: Any) -> None:
    """Write ``key`` to RocksDB and its changelog, both for ``partition``.

    faust's ``table[key] = value`` takes the partition from the event being iterated, which is
    wrong for a batch that spans partitions; a by-entity stream's partition is the key's own.
    The changelog record is handed to the producer now rather than to faust's send buffer, so
    it belongs to the transaction (exactly-once) or flush (at-least-once) of the offsets it came
    from. Encoding once serves both the store and the changelog record.
    """
    raw = orjson.dumps(state)
    store: Any = table.data
    store._db_for_partition(partition).put(key, raw)
    store._key_index[key] = partition  # lets views find the key without searching every DB
    producer = await app.maybe_start_producer()
    delivery: Any = await producer.send(
        table.changelog_topic.get_topic_name(), key, raw, partition, None, None
    )
    delivery.add_done_callback(partial(_remember_changelog_offset, store))


def _remember_changelog_offset(store: Any, delivery: Any) -> None:
    """Keep the changelog offset in RocksDB, so a restart reads the changelog from there on.

    (What faust's own table writes do; under exactly-once only once the transaction commits.)
    """
    if delivery.cancelled() or delivery.exception() is not None:
        return
    metadata = delivery.result()
    if app.in_transaction:
        app.tables.persist_offset_on_commit(store, metadata.topic_partition, metadata.offset)  # type: ignore[attr-defined]
    else:
        store.set_persisted_offset(metadata.topic_partition, metadata.offset)


def _active_partitions(table: TableT) -> Iterator[tuple[int, Any]]:
    """(partition, RocksDB) of the partitions this worker processes (not its standbys)."""
    dbs = getattr(table.data, "_dbs", None)  # rocksdict store: one DB per partition
    if dbs is None:
        return
    changelog = table.changelog_topic.get_topic_name()
    actives = app.assignor.assigned_actives()
    for partition, db in list(dbs.items()):
        if TP(changelog, partition) in actives:
            yield partition, db


def _values(db: Any) -> Iterator[tuple[bytes, Any]]:
    for key, value in db.items():
        # faust keeps its own bookkeeping (the persisted changelog offset) in the same DB
        if not key.startswith(b"__faust"):
            yield key, orjson.loads(value)


def expire_keys(table: TableT, is_expired: Callable[[Any], bool]) -> int:
    """Delete keys whose state has fully expired, from RocksDB and (as tombstones) the changelog.

    Runs outside stream iteration (in a timer), where faust refuses ``del table[key]``; so this
    goes to the store of each *active* partition and writes the tombstone to that partition.
    Standby partitions are left alone: they receive the tombstones through the changelog.
    """
    store: Any = table.data
    removed = 0
    for partition, db in _active_partitions(table):
        doomed = [key for key, value in _values(db) if is_expired(value)]
        for key in doomed:
            db.delete(key)
            store._key_index.pop(key, None)
            table.send_changelog(partition, key, None, value_serializer="raw")  # a real tombstone
        removed += len(doomed)
    if removed:
        logger.info("expired %d keys from table %s", removed, table.name)
    return removed


def restore_event_clock(table: TableT, newest: Callable[[Any], float]) -> None:
    """After recovery, move the worker's event clock to the newest event time in the table.

    Without it the clock restarts at zero and windows that had expired before the restart, but
    whose key was not written since, would show again until new events arrive.
    """
    latest = max(
        (newest(value) for _, db in _active_partitions(table) for _, value in _values(db)), default=0.0
    )
    if latest:
        worker_clock.observe(latest)
