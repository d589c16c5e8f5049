"""How every streamapp table is declared and how expired keys leave state and changelog."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from faust.types import TP, TableT

from streamapp.app import app, settings

__all__ = ["define_table", "expire_keys"]

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


def expire_keys(table: TableT, is_expired: Callable[[Any], bool]) -> int:
    """Delete keys whose state has fully expired, from RocksDB and (as tombstones) the changelog.

    Runs outside stream iteration (in a timer), where faust refuses ``del table[key]``; so this
    goes to the store of each *active* partition and writes the tombstone to that partition.
    Standby partitions are left alone: they receive the tombstones through the changelog.
    """
    store: Any = table.data
    dbs = getattr(store, "_dbs", None)  # rocksdict store: one DB per partition
    if dbs is None:
        return 0
    changelog = table.changelog_topic.get_topic_name()
    actives = app.assignor.assigned_actives()
    removed = 0
    for partition, db in list(dbs.items()):
        if TP(changelog, partition) not in actives:
            continue
        doomed = [
            key
            for key, value in db.items()
            # faust keeps its own bookkeeping (the persisted changelog offset) in the same DB
            if not key.startswith(b"__faust") and is_expired(orjson.loads(value))
        ]
        for key in doomed:
            db.delete(key)
            store._key_index.pop(key, None)
            table.send_changelog(partition, key, None, value_serializer="raw")  # a real tombstone
        removed += len(doomed)
    if removed:
        logger.info("expired %d keys from table %s", removed, table.name)
    return removed
