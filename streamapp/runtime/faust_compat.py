"""Every private faust / aiokafka attribute streamapp touches, in one place, each with why.

faust-streaming and aiokafka give no public way to do what streamapp does past them (batches
of a whole fetch, RocksDB writes per partition, one transaction per worker, ...): it reads and
writes some of their private attributes. Code elsewhere goes through the functions below (or,
for the subclasses of faust's classes, names the attribute listed in :data:`PRIVATE`), and
tests/unit/runtime/test_faust_compat.py checks every entry of :data:`PRIVATE` against the
installed versions: an upgrade that renames one fails there, naming the attribute and the version.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from typing import Any

__all__ = [
    "PRIVATE",
    "Private",
    "consumer_thread",
    "create_topic_of",
    "default_kafka_producer",
    "end_recovery",
    "events_received_at",
    "group_coordinator",
    "heartbeat",
    "kafka_client",
    "key_index",
    "prometheus_metrics",
    "replace_create_topic",
    "subscribe_also",
    "subscribed_topics",
    "rocksdb",
    "rocksdb_partitions",
    "set_fetch_max_wait",
    "tracked_topics",
    "transaction_lock",
    "transaction_producers",
    "transaction_started",
    "wait_on_metadata",
]


@dataclass(frozen=True)
class Private:
    """A private attribute of a dependency's class: ``owner`` is ``module:Class``."""

    owner: str
    name: str
    #: what streamapp does with it (the test's message says so when it is gone)
    why: str

    @property
    def distribution(self) -> str:
        return "aiokafka" if self.owner.startswith("aiokafka") else "faust-streaming"

    def problem(self) -> str | None:
        """None while the installed version has the attribute; else what broke, for a person."""
        module_name, _, class_name = self.owner.partition(":")
        where = f"{self.distribution} {version(self.distribution)}"
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            return f"{where}: {self.owner} is gone ({exc}); streamapp needs its {self.name} to {self.why}"
        if hasattr(owner, self.name) or f"self.{self.name}" in _sources(owner):
            return None
        return (
            f"{where}: {self.owner} has no attribute {self.name} any more; streamapp uses it to {self.why} "
            f"(update streamapp/runtime/faust_compat.py)"
        )


@cache
def _sources(owner: type) -> str:
    """The source of ``owner`` and its bases: instance attributes are only assigned there."""
    texts = []
    for klass in owner.__mro__:
        try:
            texts.append(inspect.getsource(klass))
        except (OSError, TypeError):  # builtins, C extensions
            continue
    return "\n".join(texts)


_CONSUMER = "faust.transport.consumer:Consumer"
_RECOVERY = "faust.tables.recovery:Recovery"
_STORE = "faust.stores.rocksdb:Store"
_PRODUCER = "faust.transport.drivers.aiokafka:Producer"


#: every private attribute streamapp reads, writes, calls or overrides
def _of(owner: str, **why: str) -> tuple[Private, ...]:
    """The private attributes of one class of a dependency, each with what streamapp does with it."""
    return tuple(Private(owner, name, reason) for name, reason in why.items())


PRIVATE: tuple[Private, ...] = (
    # the batch consumer (streamapp.runtime.consumer): faust's offset bookkeeping, acknowledged as ranges
    *_of(
        _CONSUMER,
        _read_offset="skip records of a fetch already handed over",
        _committed_offset="acknowledge from the committed offset on",
        _acked="acknowledge a fetch's offsets as a range",
        _acked_index="acknowledge a fetch's offsets as a range",
        _n_acked="count the acknowledged offsets like faust's ack()",
        _buffered_partitions="skip partitions paused since the fetch",
        _new_offset="find the offset to commit (unit tests of the ranges)",
        _wait_next_records="take a whole fetch before faust's per-record path (override)",
    ),
    *_of(
        "faust.transport.drivers.aiokafka:Consumer",
        _new_consumer_thread="use its own consumer thread",
    ),
    *_of(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        _create_worker_consumer="shorten the fetch max wait of the aiokafka consumer (override)",
        _highwaters="ask the broker for the last stable offset of partitions not fetched yet (override)",
        _ensure_consumer="reach the aiokafka consumer",
    ),
    *_of(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        _fetch_max_wait_ms="shorten the fetch max wait",
        _client="refresh a consumer's metadata",
    ),
    # the zombie fence (streamapp.runtime.consumer.fence): is this worker still in its group?
    *_of(
        "faust.transport.consumer:ThreadDelegateConsumer",
        _thread="reach the consumer thread",
    ),
    *_of(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",
        _consumer="reach the aiokafka consumer without starting it",
    ),
    *_of(
        "aiokafka.consumer.consumer:AIOKafkaConsumer",
        _coordinator="ask the group coordinator",
    ),
    *_of(
        "aiokafka.consumer.group_coordinator:GroupCoordinator",
        _do_heartbeat="send one heartbeat before writing (refused: the worker has left the group)",
    ),
    # the changelog restore of the batch consumer and the healing recovery (streamapp.runtime.recovery)
    *_of(
        _RECOVERY,
        _active_events_received_at="tell recovery a batch of changelog records arrived",
        _standby_events_received_at="tell recovery a batch of standby records arrived",
        _set_recovery_ended="end recovery after restoring changelogs in batches",
        _set_recovery_started="clear the end signal of the recovery before (override)",
        _build_offsets="discard local state ahead of its changelog (override)",
    ),
    *_of(
        "faust.tables.manager:TableManager",
        _recovery="install the healing recovery",
    ),
    # table state (tables.base, streamapp.runtime.recovery): one RocksDB per partition
    *_of(
        _STORE,
        _db_for_partition="read and write a partition's RocksDB in batches",
        _dbs="sweep and discard the partitions' RocksDBs",
        _key_index="keep faust's key -> partition index in step with our writes",
    ),
    # the producer side (streamapp.runtime.producer, streamapp.runtime.transactions)
    *_of(
        _PRODUCER,
        _ensure_producer="send whole record batches with the aiokafka producer",
        _transaction_producers="send batches with the worker's transactional producer",
        _trn_locks="send batches within the worker's transaction",
    ),
    *_of(
        "aiokafka.producer.producer:AIOKafkaProducer",
        _txn_manager="begin a transaction after a rebalance",
    ),
    *_of(
        "aiokafka.client:AIOKafkaClient",
        _wait_on_metadata="learn a topic's partition count",
        _topics="keep every tracked topic in the metadata",
    ),
    *_of(
        "faust.transport.consumer:TransactionManager",
        _start_transactions="start the one transactional producer",
    ),
    # the app (streamapp.app, streamapp.runtime.replication, streamapp.observability.faust_sensors)
    *_of(
        "faust.app.base:App",
        _new_transport="use the batch consumer and replicated topics (override)",
    ),
    *_of(
        "faust.transport.drivers.aiokafka:Transport",
        _create_topic="create topics with their replication",
    ),
    # topics subscribed while the worker runs (streamapp.runtime.subscriptions)
    *_of(
        "faust.transport.conductor:Conductor",
        _topics="add a channel without waking faust's resubscribing loop (it waits 45 s, then rebalances)",
        _update_indices="index the channels' topics and subscribe to them now",
        _topic_name_index="see which topics the consumer was last subscribed to",
    ),
    *_of(
        "faust.sensors.prometheus:PrometheusMonitor",
        _metrics="count batches in faust's Prometheus metrics",
    ),
)


# -- consumers


def kafka_client(consumer: Any) -> Any:
    """The aiokafka client of an aiokafka consumer (its metadata)."""
    return consumer._client


def consumer_thread(consumer: Any) -> Any:
    """faust's consumer thread of a faust consumer (its ``call_thread`` runs on that loop)."""
    return consumer._thread


def group_coordinator(consumer_thread: Any) -> Any | None:
    """The aiokafka group coordinator behind faust's consumer thread (None before it has one)."""
    aiokafka_consumer = getattr(consumer_thread, "_consumer", None)
    return None if aiokafka_consumer is None else getattr(aiokafka_consumer, "_coordinator", None)


def heartbeat(coordinator: Any) -> Callable[[], Awaitable[bool]]:
    """One heartbeat, as the coordinator's heartbeat task sends it: on UnknownMemberId or
    IllegalGeneration it resets the generation and asks to rejoin (False)."""
    return coordinator._do_heartbeat  # type: ignore[no-any-return]


def set_fetch_max_wait(consumer: Any, milliseconds: int) -> None:
    """How long the broker may hold a fetch that finds no data (read when the fetcher starts)."""
    consumer._fetch_max_wait_ms = milliseconds


# -- recovery


def events_received_at(recovery: Any, standby: bool) -> MutableMapping[Any, float]:
    """When recovery last saw changelog records of each (active or standby) partition."""
    return recovery._standby_events_received_at if standby else recovery._active_events_received_at  # type: ignore[no-any-return]


def end_recovery(recovery: Any) -> None:
    recovery._set_recovery_ended()


# -- table stores


def rocksdb(store: Any, partition: int) -> Any:
    """The RocksDB (rocksdict) of one partition of a table's store, opened if need be."""
    return store._db_for_partition(partition)


def rocksdb_partitions(store: Any) -> dict[int, Any]:
    """The open RocksDBs of a store by partition ({} for a store of another kind)."""
    dbs = getattr(store, "_dbs", None)
    return dbs if dbs is not None else {}


def key_index(store: Any) -> MutableMapping[bytes, int]:
    """faust's key -> partition index of a store (its views find a key without searching every DB)."""
    return store._key_index  # type: ignore[no-any-return]


# -- producers


def default_kafka_producer(producer: Any) -> Any:
    """The aiokafka producer behind faust's producer (started if need be)."""
    return producer._ensure_producer()


def transaction_producers(producer: Any) -> MutableMapping[str, Any]:
    """faust's transactional aiokafka producers by transactional id."""
    return producer._transaction_producers  # type: ignore[no-any-return]


def transaction_lock(producer: Any, transactional_id: str) -> Any:
    """The lock faust holds while a transactional producer sends or commits."""
    return producer._trn_locks[transactional_id]


def transaction_started(kafka_producer: Any) -> bool:
    """Whether an aiokafka transactional producer is within a transaction."""
    return bool(kafka_producer._txn_manager.is_in_transaction())


async def wait_on_metadata(client: Any, topic: str) -> None:
    """Wait until an aiokafka client's metadata has ``topic`` (its partitions)."""
    await client._wait_on_metadata(topic)


def tracked_topics(client: Any) -> set[str]:
    """The topics an aiokafka client keeps in its metadata (empty: every topic)."""
    return set(client._topics)


# -- the app


CreateTopic = Callable[..., Any]


def create_topic_of(transport: Any) -> CreateTopic:
    """faust's transport's topic creation (every topic faust creates goes through it)."""
    return transport._create_topic  # type: ignore[no-any-return]


def replace_create_topic(transport: Any, create: CreateTopic) -> None:
    transport._create_topic = create


async def subscribe_also(app: Any, channels: Iterable[Any]) -> None:
    """Subscribe the consumer to the topics of ``channels`` too, now (a rebalance follows).

    Not the conductor's ``add``: it wakes faust's resubscribing loop, which sleeps 45 s and then
    subscribes again to the same topics (each subscribe is a rebalance of the whole group).
    ``_update_indices`` creates the internal topics that are missing, as at start.
    """
    conductor = app.topics
    for channel in channels:
        conductor._topics.add(channel)
    await app.consumer.subscribe(await conductor._update_indices())


def subscribed_topics(app: Any) -> set[str]:
    """The topics of the consumer's last subscription (empty before the first)."""
    return set(app.topics._topic_name_index)


def prometheus_metrics(monitor: Any) -> Any | None:
    """faust's Prometheus metrics of a PrometheusMonitor (None for another monitor)."""
    return getattr(monitor, "_metrics", None)
