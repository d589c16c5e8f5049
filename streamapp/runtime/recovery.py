"""Local table state ahead of its changelog (a reset broker, another cluster's data) is rebuilt, not fatal."""

from __future__ import annotations

import gc
import logging
import shutil
from typing import Any

from faust.tables import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP
from faust.types.transports import ConsumerT

from streamapp.runtime import heap
from streamapp.runtime.faust_compat import key_index, rocksdb_partitions

__all__ = ["HealingRecovery", "HealingTableManager", "discard_partition"]

logger = logging.getLogger(__name__)


def discard_partition(store: Any, partition: int) -> None:
    """Drop one partition's local RocksDB (its keys and its persisted changelog offset)."""
    db = rocksdb_partitions(store).pop(partition, None)
    if db is not None and hasattr(db, "close"):
        db.close()
    del db
    with heap.thawed():
        gc.collect()  # rocksdict releases its lock on the files when the object goes
    index = key_index(store)
    for key in [key for key, owner in index.items() if owner == partition]:
        index.pop(key, None)
    shutil.rmtree(store.partition_path(partition), ignore_errors=True)


class HealingRecovery(Recovery):
    """faust's recovery, with one check before it reads the changelogs, and each recovery
    waiting for its own end.

    faust raises ``ConsistencyError`` and the worker dies when a partition's persisted offset is
    beyond the changelog's end. Here that partition's local state is discarded first, so recovery
    reads the changelog from its beginning, as for a partition never seen before.
    """

    def _set_recovery_started(self) -> None:
        """A recovery that starts has not ended: the end signal of the one before is cleared.

        The batched restore (streamapp.runtime.consumer.changelog_restore) sets the signal when
        a recovery ends, and only faust's changelog loop clears it, when it next wakes (every
        5 s while the batch consumer leaves its queue empty). Left set, it would end the next
        rebalance's recovery at once, before any record of its new active partitions is read:
        they stay paused and their keys are missing from the state.
        """
        super()._set_recovery_started()
        self.signal_recovery_end.clear()

    async def _build_offsets(self, consumer: ConsumerT, tps: set[TP], destination: Any, title: str) -> None:
        persisted = {tp: destination[tp] for tp in tps if destination.get(tp) is not None}
        if persisted:
            ends = await consumer.highwaters(*persisted)
            # the persisted offset is the last offset applied; the end is the next offset to write
            ahead = {tp: (offset, ends.get(tp) or 0) for tp, offset in persisted.items()
                     if offset >= 0 and offset >= (ends.get(tp) or 0)}  # fmt: skip
            if ahead:
                where = ", ".join(
                    f"{tp.topic}[{tp.partition}] at {o}, end {e}" for tp, (o, e) in ahead.items()
                )
                for tp in ahead:
                    table: Any = self.tp_to_table[tp]
                    discard_partition(table.data, tp.partition)
                    destination[tp] = None
                logger.warning(
                    "local state of %d %s changelog partition(s) is ahead of the changelog (%s): the "
                    "broker's data was reset or the data dir comes from another cluster; discarded "
                    "and rebuilt from the changelog",
                    len(ahead), title,
                    where,
                )  # fmt: skip
        await super()._build_offsets(consumer, tps, destination, title)


class HealingTableManager(TableManager):
    """faust's table manager with :class:`HealingRecovery` (``TableManager=`` of the app)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = HealingRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
