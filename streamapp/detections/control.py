"""The `detections` control topic: compacted, key = detection name, value = its spec JSON (null: disabled)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import Counter

from streamapp.detections.engine import Engine
from streamapp.detections.spec import Spec, SpecInvalid, spec_from_json
from streamapp.runtime.faust_compat import kafka_client
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.runtime.replication import resolve_replication_factor, topic_replication_config
from streamapp.settings import Settings

__all__ = [
    "CONTROL_ERRORS_TOTAL",
    "CONTROL_TOPIC",
    "TOMBSTONE_RETENTION_MS",
    "Registry",
    "ensure_control_topic",
    "follow",
    "publish",
    "read_applied",
]

logger = logging.getLogger(__name__)

CONTROL_TOPIC = "detections"
#: how long the control topic keeps a null record after compaction (100 years: for good)
TOMBSTONE_RETENTION_MS = 100 * 365 * 24 * 3600 * 1000
CONTROL_ERRORS_TOTAL = Counter(
    "streamapp_detection_control_errors",
    "Records of the detections control topic that were ignored (with a logged reason)",
)


@dataclass
class Registry:
    """The detections this worker runs, by name, as the control topic says (latest record wins)."""

    #: the worker's STREAMAPP_RETENTION_SECONDS, which every engine keeps
    retention: float = Settings.retention_seconds
    engines: dict[str, Engine] = field(default_factory=dict)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    #: called with (name, engine or None) after every change
    listeners: list[Callable[[str, Engine | None], None]] = field(default_factory=list)

    def install(self, specs: list[Spec]) -> None:
        """Run ``specs`` as this worker's defaults (the shipped detections, before the control topic
        is read: a record of the same name there replaces or disables one)."""
        for spec in specs:
            engine = self.engines[spec.name] = Engine(spec, self.retention)
            logger.info("detection %s version %d running (shipped)", spec.name, spec.version)
            self._tell(spec.name, engine)

    def apply_record(self, key: bytes | None, value: bytes | None, where: str) -> str | None:
        """Apply one control record; return why it was ignored (logged and counted), or None."""
        reason = self._why_not(key, value)
        if reason is not None:
            CONTROL_ERRORS_TOTAL.inc()
            logger.warning("detections control record %s ignored: %s", where, reason)
            return reason
        return None

    def _why_not(self, key: bytes | None, value: bytes | None) -> str | None:
        if not key:
            return "no key (the key is the detection name)"
        try:
            name = key.decode()
        except UnicodeDecodeError:
            return "key is not UTF-8"
        if value is None:
            if self.engines.pop(name, None) is not None:
                logger.info("detection %s disabled", name)
                self._tell(name, None)
            return None
        try:
            spec = spec_from_json(value)
        except SpecInvalid as exc:
            return f"invalid spec for {name!r}: " + "; ".join(e.reason for e in exc.errors)[:1000]
        if spec.name != name:
            return f"key {name!r} does not match the spec's name {spec.name!r}"
        current = self.engines.get(name)
        if current is not None and current.spec.to_json() == spec.to_json():
            return None
        engine = Engine(spec, self.retention)
        self.engines[name] = engine
        kept = current is not None and current.shape == engine.shape
        logger.info(
            "detection %s version %d running%s", name, spec.version,
            "" if current is None else (" (state kept)" if kept else " (state started afresh)"),
        )  # fmt: skip
        self._tell(name, engine)
        return None

    def _tell(self, name: str, engine: Engine | None) -> None:
        for listener in self.listeners:
            listener(name, engine)

    def for_topic(self, topic: str) -> list[Engine]:
        return [engine for engine in self.engines.values() if engine.spec.topic == topic]

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": e.name, "version": e.spec.version, "severity": e.spec.data["severity"],
                "topic": e.spec.topic, "condition": e.kind, "grace": e.grace, "state_shape": e.shape,
            }
            for e in sorted(self.engines.values(), key=lambda e: e.name)
        ]  # fmt: skip


async def ensure_control_topic(settings: Settings) -> str:
    """Create the compacted control topic if missing; return its full name."""
    name = settings.topic(CONTROL_TOPIC)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **client_kwargs(settings))
    await admin.start()
    try:
        if name not in await admin.list_topics():
            # replicated like every topic of the app (STREAMAPP_REPLICATION_FACTOR)
            described = await admin.describe_cluster()
            factor = resolve_replication_factor(settings.replication_factor, len(described["brokers"]))
            configs = {
                "cleanup.policy": "compact",
                # a null record (disabled) stays: once compacted away, a shipped detection a worker
                # runs by default (streamapp.detections.shipped) would run again at its next start
                "delete.retention.ms": str(TOMBSTONE_RETENTION_MS),
                **topic_replication_config(factor),
            }
            try:
                await admin.create_topics([NewTopic(name, 1, factor, topic_configs=configs)])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return name


async def follow(settings: Settings, registry: Registry, stop: asyncio.Event | None = None) -> None:
    """Read the whole control topic into ``registry``, set ``loaded``, then follow it forever.

    Every worker reads every record (no consumer group): each runs every detection.
    """
    name = await ensure_control_topic(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, group_id=None,
        auto_offset_reset="earliest", **client_kwargs(settings),
    )  # fmt: skip
    await consumer.start()
    try:
        parts = [TopicPartition(name, p) for p in sorted(await _partitions(consumer, name))]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while stop is None or not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for record in records:
                    registry.apply_record(
                        record.key, record.value, f"{tp.topic}[{tp.partition}]@{record.offset}"
                    )
            if not registry.loaded.is_set():
                if all([await consumer.position(tp) >= ends[tp] for tp in parts]):
                    registry.loaded.set()
                    logger.info("detections loaded: %s", ", ".join(registry.engines) or "none")
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> set[int]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(name)
        if parts:
            return set(parts)
        await kafka_client(consumer).force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {name} has no partitions")


async def read_applied(settings: Settings) -> dict[str, Spec]:
    """The detections the control topic holds now (latest valid record per name)."""
    registry = Registry()
    stop = asyncio.Event()
    task = asyncio.create_task(follow(settings, registry, stop))
    waiter = asyncio.create_task(registry.loaded.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    if task in done:
        task.result()  # raises what failed
    waiter.cancel()
    await asyncio.wait_for(task, 10)
    if not registry.loaded.is_set():
        raise RuntimeError("timed out reading the detections control topic")
    return {name: engine.spec for name, engine in registry.engines.items()}


async def publish(settings: Settings, records: list[tuple[str, bytes | None]]) -> None:
    """Write (name, spec JSON or None) records to the control topic and wait for the broker."""
    name = await ensure_control_topic(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **client_kwargs(settings))
    await producer.start()
    try:
        futures = [await producer.send(name, key=key.encode(), value=value) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def spec_json(spec: Spec) -> bytes:
    """The control record value of a spec."""
    return orjson.dumps(spec.data, option=orjson.OPT_SORT_KEYS)
