"""Exactly-once for re-keyed pipelines: one Kafka transaction per worker instead of per partition."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import Any

from faust.transport.consumer import TransactionManager
from faust.types import TP, RecordMetadata
from faust.types.tuples import HeadersArg

from streamapp.runtime.faust_compat import (
    default_kafka_producer,
    tracked_topics,
    transaction_producers,
    transaction_started,
)
from streamapp.runtime.producer.metadata import keep_metadata_of

__all__ = [
    "WorkerTransactionManager",
    "discard_state_after_unclean_stop",
    "mark_clean_stop",
    "worker_transactional_id",
]

logger = logging.getLogger(__name__)
_CLEAN_STOP_MARKER = ".clean-stop"


def discard_state_after_unclean_stop(data_dir: Path) -> bool:
    """Delete local table state left by a worker that did not stop cleanly; True if it did.

    RocksDB is written before the transaction that carries the same update commits; after a
    ``kill -9`` the local files may hold updates of an aborted transaction (whose alerts and
    changelog records are gone), and reprocessing would then skip those records. Rebuilding from
    the changelog topics, read committed, gives exactly the committed state.
    """
    tables = data_dir / "tables"
    marker = data_dir / _CLEAN_STOP_MARKER
    unclean = tables.exists() and not marker.exists()
    if unclean:
        logger.warning(
            "the last stop of this worker was not clean: rebuilding its tables from the changelogs "
            "(exactly_once keeps only committed state)"
        )
        shutil.rmtree(tables)
    marker.unlink(missing_ok=True)
    return unclean


def mark_clean_stop(data_dir: Path) -> None:
    """Record that every transaction of this worker was committed or aborted on stop."""
    if data_dir.exists():
        (data_dir / _CLEAN_STOP_MARKER).touch()


def worker_transactional_id(app_id: str, data_dir: str) -> str:
    """Stable for one worker across restarts (so a restart fences its previous incarnation)."""
    return f"{app_id}-eos-{hashlib.sha1(data_dir.encode(), usedforsecurity=False).hexdigest()[:12]}"


class WorkerTransactionManager(TransactionManager):
    """Every record a worker produces, and the source offsets they came from, commit together.

    faust opens one transaction per *destination* partition and commits source offsets in the
    transaction of the *source* partition's number. That is only atomic when output partitions
    equal input partitions; a re-keyed record (source partition 3, by-entity partition 5) lands
    in another transaction than its offset, and a crash between the two commits loses it. One
    transaction per worker makes forwarded records, changelog records, alerts and offsets atomic.
    """

    transactional_id: str = ""

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP]) -> None:
        # faust commits (and so closes the open transaction) before partitions are revoked;
        # the one producer lives on across rebalances
        producers = transaction_producers(self.producer)
        if self.transactional_id not in producers:
            await self._start_transactions([self.transactional_id])
            started = producers.get(self.transactional_id)
            if started is not None:
                # what the default producer tracks: every topic the worker subscribed to (sources,
                # re-keyed, changelogs); topics first written later (alerts) are added on their send
                default = default_kafka_producer(self.producer)
                await keep_metadata_of(started.client, tracked_topics(default.client))
            return
        # a rebalance under load ends the transaction (faust's wait_empty commits with
        # start_new_transaction=False) and nothing begins the next one: the first record after
        # the rebalance failed with IllegalOperation "Can't send messages while not in transaction"
        producer = producers[self.transactional_id]
        if not transaction_started(producer):
            await self.producer.maybe_begin_transaction(self.transactional_id)  # type: ignore[attr-defined]

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: HeadersArg | None,
        *,
        transactional_id: str | None = None,
    ) -> Awaitable[RecordMetadata]:
        p = self.consumer.key_partition(topic, key, partition)
        return await self.producer.send(
            topic, key, value, p, timestamp, headers, transactional_id=self.transactional_id
        )

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        if offsets:
            # records still in faust's send buffer (e.g. expiry tombstones) join this transaction
            await self.producer.buffer.flush()  # type: ignore[attr-defined]
            tid_to_offsets: dict[str, Any] = {self.transactional_id: dict(offsets)}
            await self.producer.commit_transactions(
                tid_to_offsets, self.app.conf.id, start_new_transaction=start_new_transaction
            )
        return True
