"""How every streamapp table is declared and how expired keys leave state and changelog."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from typing import Any

import orjson
from faust.types import TP, TableT
from rocksdict import WriteBatch

from streamapp.app import app
from streamapp.observability.metrics import STATE_RESETS_TOTAL
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.faust_compat import key_index, rocksdb, rocksdb_partitions
from streamapp.runtime.producer import Delivery
from streamapp.types import RecordSink

__all__ = [
    "EVENT_CLOCK_KEY",
    "SWEEP_REST_FACTOR",
    "SWEEP_STEP_KEYS",
    "TableStore",
    "active_partitions",
    "define_table",
    "expire_keys",
    "load_state",
    "remember_changelog_offsets",
    "restore_event_clock",
    "state_steps",
    "store_event_clock",
    "store_states",
    "stored_values",
]

logger = logging.getLogger(__name__)


def define_table(name: str, help: str) -> TableT:
    """A table keyed by entity id as raw UTF-8 bytes (like the by-entity topics), JSON values.

    ``key_type=bytes`` makes faust use the raw codec for keys: JSON keys would be quoted and
    hash to other partitions than the records that feed the table.
    """
    return app.Table(
        name,
        key_type=bytes,
        partitions=app.conf.topic_partitions,  # STREAMAPP_PARTITIONS
        help=help,
        # RocksDB's write buffers are what a burst of writes holds in memory: 16 MiB, two per
        # partition's DB (faust's default: 64 MiB, three), so memory stays bounded under load
        options={"driver": "rocksdict", "write_buffer_size": 16 * 1024 * 1024, "max_write_buffer_number": 2},
    )


class TableStore:
    """A detector's states in a faust table (streamapp.types.StateStore): RocksDB now, changelog
    records with the batch's other records."""

    def __init__(self, table: TableT) -> None:
        self.table = table

    @property
    def name(self) -> str:
        return str(self.table.name)

    def load(self, partition: int, key: bytes) -> bytes | None:
        return load_state(self.table, partition, key, raw=True)  # type: ignore[no-any-return]

    def store(self, states: Iterable[tuple[int, bytes, Any]], sink: RecordSink) -> None:
        store_states(self.table, states, sink)

    def store_clock(self, partition: int, sink: RecordSink) -> None:
        store_event_clock(self.table, partition, sink)

    def remember(self, deliveries: list[Delivery]) -> None:
        remember_changelog_offsets(self.table, deliveries)


def load_state(table: TableT, partition: int, key: bytes, raw: bool = False) -> Any | None:
    """The value of ``key`` in the table's RocksDB for ``partition`` (None when absent; bytes if ``raw``)."""
    value = rocksdb(table.data, partition).get(key)
    if raw or value is None:
        return value
    return orjson.loads(value)


def store_states(table: TableT, states: Iterable[tuple[int, bytes, Any]], batches: RecordSink) -> list[int]:
    """Write each (partition, key, state) to RocksDB now and queue its changelog record in ``batches``.

    faust's ``table[key] = value`` takes the partition from the event being iterated, which is
    wrong for a batch that spans partitions; a by-entity stream's partition is the key's own.
    The changelog records go out with the batch's other records, so they belong to the
    transaction (exactly-once) or the delivery (at-least-once) of the offsets they came from.
    Encoding once serves both the store and the changelog record. Each partition's states go to
    its RocksDB in one atomic write (a WriteBatch: one write-ahead-log append and one memtable
    insertion pass instead of one of each per key; the puts were the largest part of a batch's
    writes). Returns the size in bytes of each state, in order.
    """
    store: Any = table.data
    changelog = table.changelog_topic.get_topic_name()
    index = key_index(store)  # lets views find the key without searching every DB
    writes: dict[int, Any] = {}
    sizes: list[int] = []
    for partition, key, state in states:
        raw = orjson.dumps(state)
        write = writes.get(partition)
        if write is None:
            write = writes[partition] = WriteBatch(raw_mode=True)  # faust opens its DBs in raw mode
        write.put(key, raw)
        index[key] = partition
        batches.add(changelog, key, raw, partition)
        sizes.append(len(raw))
    for partition, write in writes.items():
        rocksdb(store, partition).write(write)
    return sizes


#: the worker's event clock, kept in each partition's RocksDB and changelog next to the states
#: (faust's bookkeeping prefix: views, scans and sweeps skip it), so that a restart reads one key
#: per partition instead of every state (a million keys held the event loop for 2 s)
EVENT_CLOCK_KEY = b"__faust\x00streamapp-event-clock__"


def store_event_clock(table: TableT, partition: int, batches: RecordSink) -> None:
    """Write the worker's event clock for ``partition`` (RocksDB now, changelog with ``batches``).

    Written with every batch that changes states of the partition, after the batch's events
    moved the clock: the value is never behind the newest event in the partition's states.
    """
    raw = repr(worker_clock.newest).encode()
    rocksdb(table.data, partition).put(EVENT_CLOCK_KEY, raw)
    batches.add(table.changelog_topic.get_topic_name(), EVENT_CLOCK_KEY, raw, partition)


def remember_changelog_offsets(table: TableT, deliveries: list[Delivery]) -> None:
    """Once delivered, keep each changelog partition's last offset in RocksDB (what faust's writes do).

    A restart then reads the changelog from there on; under exactly-once only once the
    transaction commits. Under at-least-once a batch that does not follow the offset kept before
    (another worker wrote the partition in between: this one was paused past its session while
    the batch was in flight) is not kept: the local state lacks those records, and the next
    recovery must read them.
    """
    changelog = table.changelog_topic.get_topic_name()
    store: Any = table.data
    for delivery in deliveries:
        if delivery.tp.topic == changelog:
            delivery.future.add_done_callback(partial(_remember_changelog_offset, table.app, store, delivery))


#: (store, changelog partition) whose gap was logged (once until an offset is kept again)
_gaps_logged: set[tuple[int, TP]] = set()


def _remember_changelog_offset(app: Any, store: Any, delivery: Delivery, future: Any) -> None:
    if future.cancelled() or future.exception() is not None:
        return
    if app.in_transaction:  # (transaction markers take offsets; a zombie's transaction is aborted)
        app.tables.persist_offset_on_commit(store, delivery.tp, delivery.last_offset)  # type: ignore[attr-defined]
        return
    kept = store.persisted_offset(delivery.tp)
    first = delivery.last_offset - delivery.records + 1
    if kept is not None and first > kept + 1:
        if (id(store), delivery.tp) not in _gaps_logged:
            _gaps_logged.add((id(store), delivery.tp))
            logger.warning(
                "%s[%d]: offsets %d-%d were written by another worker since this one's last write "
                "(it was paused past its session?): its local state lacks them, the next recovery "
                "reads them", delivery.tp.topic, delivery.tp.partition, kept + 1, first - 1,
            )  # fmt: skip
        return
    _gaps_logged.discard((id(store), delivery.tp))
    store.set_persisted_offset(delivery.tp, delivery.last_offset)


def active_partitions(table: TableT) -> Iterator[tuple[int, Any]]:
    """(partition, RocksDB) of the partitions this worker processes (not its standbys)."""
    dbs = rocksdb_partitions(table.data)  # rocksdict store: one DB per partition
    changelog = table.changelog_topic.get_topic_name()
    actives = table.app.assignor.assigned_actives()
    for partition, db in list(dbs.items()):
        if TP(changelog, partition) in actives:
            yield partition, db


def stored_values(db: Any, from_key: bytes | None = None) -> Iterator[tuple[bytes, Any]]:
    """(key, decoded value) from ``from_key`` on, lazily (faust's bookkeeping keys skipped).

    A value that is not JSON (restored from a changelog record someone else wrote) reads as None.
    """
    for key, value in db.items(from_key=from_key):
        # faust keeps its own bookkeeping (the persisted changelog offset) in the same DB
        if not key.startswith(b"__faust"):
            try:
                yield key, orjson.loads(value)
            except orjson.JSONDecodeError:
                yield key, None


def state_steps(
    table: TableT, keys_per_step: int
) -> Iterator[tuple[int, Any, list[tuple[bytes, Any]], bool]]:
    """(partition, RocksDB, up to ``keys_per_step`` keys with their states, more to come) of the
    partitions this worker processes, a step at a time, for sweeps that let the loop run between
    steps: a partition revoked between two steps (its DB closed) ends there."""
    for partition, db in list(active_partitions(table)):
        cursor: bytes | None = None
        while rocksdb_partitions(table.data).get(partition) is db:
            step = list(islice(stored_values(db, cursor), keys_per_step + 1))
            more = len(step) > keys_per_step
            cursor = step.pop()[0] if more else None  # the next step starts at this key
            yield partition, db, step, more
            if not more:
                break


#: keys read per step of an expiry sweep; the event loop runs other work between steps
SWEEP_STEP_KEYS = 1000
#: a sweep rests this many times as long as each step took: it takes at most a tenth of the CPU
SWEEP_REST_FACTOR = 9.0


async def expire_keys(
    table: TableT,
    is_expired: Callable[[bytes, Any], bool],
    removed: Callable[[int, bytes], None] | None = None,
) -> tuple[int, float]:
    """Delete keys whose state has fully expired, from RocksDB and (as tombstones) the changelog.

    Runs outside stream iteration (in the expiry task), where faust refuses ``del table[key]``; so this
    goes to the store of each *active* partition and writes the tombstone to that partition.
    Standby partitions are left alone: they receive the tombstones through the changelog.
    The sweep reads a thousand keys at a time and rests nine times as long as the step took,
    so a table of a million keys neither stops the agents for seconds nor takes more than a
    tenth of the worker's CPU while it runs; each step checks and deletes without yielding, so
    no write of an agent falls between a key's check and its deletion. ``is_expired(key, state)``
    says which go; ``removed(partition, key)`` sees every key that goes. Returns (keys removed,
    seconds of work, rests not counted).
    """
    store: Any = table.data
    count = 0
    busy = 0.0
    started = time.monotonic()
    for partition, db, step, more in state_steps(table, SWEEP_STEP_KEYS):
        for key, value in step:
            try:
                expired = is_expired(key, value)
            except Exception:  # unreadable or of the wrong shape: as good as no state at all
                expired = True
                STATE_RESETS_TOTAL.labels(table=table.name).inc()
                logger.warning(
                    "the stored state of %r in table %s cannot be read: removed",
                    key[:200].decode(errors="backslashreplace"), table.name,
                )  # fmt: skip
            if expired:
                db.delete(key)
                key_index(store).pop(key, None)
                table.send_changelog(partition, key, None, value_serializer="raw")  # a real tombstone
                count += 1
                if removed is not None:
                    removed(partition, key)
        took = time.monotonic() - started
        busy += took
        if more:
            await asyncio.sleep(took * SWEEP_REST_FACTOR)
        started = time.monotonic()
    if count:
        logger.info("expired %d keys from table %s", count, table.name)
    return count, busy


def restore_event_clock(table: TableT, newest: Callable[[Any], float], max_clock_skew_seconds: float) -> None:
    """After recovery, move the worker's event clock to the newest event time in the table.

    Without it the clock restarts at zero and windows that had expired before the restart, but
    whose key was not written since, would show again until new events arrive. Each partition's
    :data:`EVENT_CLOCK_KEY` (restored from the changelog like any state) gives it in one read.

    A clock more than ``STREAMAPP_MAX_CLOCK_SKEW_SECONDS`` ahead of the wall clock (poisoned by
    a version that took events from the future) or unreadable is ignored, with one warning line
    naming the table and partition, and rewritten from the partition's states (those within the
    bound): it would expire every state and count every real event as too old.
    """
    ceiling = time.time() + max_clock_skew_seconds
    latest = 0.0
    for partition, db in active_partitions(table):
        raw = db.get(EVENT_CLOCK_KEY)
        clock = _clock_value(raw)
        if clock is not None and clock <= ceiling:
            latest = max(latest, clock)
            continue
        # none (a partition written before the clock key existed), poisoned or unreadable: the states
        from_states = max(
            (t for t in (_newest_of(newest, value) for _, value in stored_values(db)) if t <= ceiling),
            default=0.0,
        )
        latest = max(latest, from_states)
        if raw is not None:
            _repair_clock(table, partition, db, raw, from_states, max_clock_skew_seconds)
    if latest:
        worker_clock.observe(latest)


def _clock_value(raw: bytes | None) -> float | None:
    """A stored event clock as a finite number, or None (absent or unreadable)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _newest_of(newest: Callable[[Any], float], state: Any) -> float:
    try:
        value = float(newest(state))
    except Exception:  # a state of the wrong shape: it says nothing about time
        return 0.0
    return value if math.isfinite(value) else 0.0


def _repair_clock(table: TableT, partition: int, db: Any, raw: bytes, repaired: float, skew: float) -> None:
    """Replace a poisoned or unreadable clock in RocksDB and, best effort, in the changelog."""
    STATE_RESETS_TOTAL.labels(table=table.name).inc()
    logger.warning(
        "event clock of table %s partition %d is %r, not a time within "
        "STREAMAPP_MAX_CLOCK_SKEW_SECONDS=%g of the wall clock: ignored, rewritten as %r",
        table.name, partition, raw[:40], skew, repaired or None,
    )  # fmt: skip
    value = repr(repaired).encode() if repaired else None
    if value is None:
        db.delete(EVENT_CLOCK_KEY)
    else:
        db.put(EVENT_CLOCK_KEY, value)
    try:  # the next batch of the partition writes its clock anyway; until then a restart repairs again
        table.send_changelog(partition, EVENT_CLOCK_KEY, value, value_serializer="raw")
    except Exception as exc:
        logger.warning(
            "the repaired clock of table %s partition %d is not in the changelog yet: %r",
            table.name, partition, exc,
        )  # fmt: skip
