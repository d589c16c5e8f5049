"""AvroProducer: writes records to Kafka in the Confluent wire format with the schema from the registry."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from streamapp.schema.avro import ParsedSchema, encode_record, parse_schema, schema_text
from streamapp.schema.registry_client import SchemaRegistryClient

__all__ = ["DEFAULT_COMPATIBILITY", "AvroProducer", "ensure_registered"]

logger = logging.getLogger(__name__)

#: the project's policy for subjects that have no rule yet: new versions must read old data
DEFAULT_COMPATIBILITY = "BACKWARD"


async def ensure_registered(
    registry: SchemaRegistryClient, subject: str, schema: Any, auto_register: bool = True
) -> int:
    """The id of ``schema`` under ``subject``: looked up, or registered when ``auto_register``.

    A subject registered here for the first time gets the BACKWARD compatibility rule (unless it
    has one already), so a later incompatible version is refused by the registry.
    """
    text = schema_text(schema)
    schema_id = await registry.lookup(subject, text)
    if schema_id is not None:
        return schema_id
    if not auto_register:
        raise LookupError(f"the schema is not registered under {subject!r} (and auto_register is off)")
    if await registry.compatibility(subject) is None:
        await registry.set_compatibility(subject, DEFAULT_COMPATIBILITY)
    schema_id = await registry.register(subject, text)
    logger.info("registered schema id %d under %s", schema_id, subject)
    return schema_id


class AvroProducer:
    """Produce Avro records: the schema is registered (or looked up) once per subject and schema.

    The subject is ``<topic>-value`` (the Confluent TopicNameStrategy). Records are checked against
    the schema before sending, so a bad record fails here with the field's name, not downstream::

        async with AvroProducer("127.0.0.1:9092", "http://127.0.0.1:8081/apis/ccompat/v7") as producer:
            await producer.send("users", {"name": "ann", "age": 31}, bundled_schema("user-v1"), key="ann")
    """

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        registry_url: str,
        *,
        auto_register: bool = True,
        **producer_options: Any,
    ) -> None:
        self._registry = SchemaRegistryClient(registry_url)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers, **{"acks": "all", "linger_ms": 5, **producer_options}
        )
        self._auto_register = auto_register
        self._ids: dict[tuple[str, str], tuple[int, ParsedSchema]] = {}

    async def start(self) -> None:
        await self._registry.__aenter__()
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            await self._registry.close()
            raise

    async def stop(self) -> None:
        try:
            await self._producer.stop()
        finally:
            await self._registry.close()

    async def __aenter__(self) -> AvroProducer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def schema_id(self, subject: str, schema: Any) -> tuple[int, ParsedSchema]:
        """(registry id, parsed schema) of ``schema`` under ``subject``, cached."""
        text = schema_text(schema)
        cached = self._ids.get((subject, text))
        if cached is None:
            parsed = parse_schema(text)  # a bad schema fails before it reaches the registry
            cached = (await ensure_registered(self._registry, subject, text, self._auto_register), parsed)
            self._ids[(subject, text)] = cached
        return cached

    async def serialize(self, topic: str, record: Mapping[str, Any], schema: Any) -> bytes:
        """The wire-format value of ``record`` for ``topic``."""
        schema_id, parsed = await self.schema_id(f"{topic}-value", schema)
        return encode_record(schema_id, parsed, record)

    async def send(
        self,
        topic: str,
        record: Mapping[str, Any],
        schema: Any,
        key: str | bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; await the returned future for its offset."""
        value = await self.serialize(topic, record, schema)
        raw_key = key.encode() if isinstance(key, str) else key
        future: asyncio.Future[RecordMetadata] = await self._producer.send(
            topic, value=value, key=raw_key, headers=headers
        )
        return future

    async def send_raw(
        self, topic: str, value: bytes | None, key: bytes | None = None
    ) -> asyncio.Future[RecordMetadata]:
        """Queue bytes as they are (for tests and re-submission)."""
        future: asyncio.Future[RecordMetadata] = await self._producer.send(topic, value=value, key=key)
        return future

    async def flush(self) -> None:
        await self._producer.flush()
