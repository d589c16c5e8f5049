"""Decoding Confluent-framed Avro by schema id, with the writer schemas looked up once and cached."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from streamapp.models import InvalidEvent
from streamapp.schema.avro.codec import HEADER, HEADER_BYTES, MAGIC_BYTE, decode_body, jsonable, split_wire
from streamapp.schema.avro.prescan import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_ITEMS, prescan
from streamapp.schema.avro.schemas import ParsedSchema, RegisteredSchema, parse_schema

__all__ = ["DEFAULT_MAX_CACHED", "AvroDecoder", "SchemaLookup", "SubjectsOf"]

logger = logging.getLogger(__name__)

#: how many schema ids each of the decoder's caches holds at most
DEFAULT_MAX_CACHED = 1_000

#: schema id -> the registered schema, or None when the registry does not know the id
SchemaLookup = Callable[[int], Awaitable[RegisteredSchema | None]]

#: schema id -> the subjects it is registered under
SubjectsOf = Callable[[int], Awaitable[frozenset[str]]]


@dataclass(eq=False)  # a decoder with caches: equal only to itself
class AvroDecoder:
    """Decodes Confluent-framed Avro by schema id; writer schemas are looked up once and cached.

    Each record is read with the schema it was written with (the writer schema registered under
    its id), so every version of a schema is read with all of its fields. With ``subjects_of``
    only the ids registered under the topic's subject (``subject``) are accepted. Unknown and
    refused ids are cached for ``unknown_ttl`` seconds, so a flood of bad records does not flood
    the registry. Every cache holds at most ``max_cached`` ids (the oldest go first). Bodies are
    checked by :func:`prescan` before fastavro decodes them.
    """

    lookup: SchemaLookup
    unknown_ttl: float = 30.0
    _: KW_ONLY
    subjects_of: SubjectsOf | None = None
    subject: str = ""
    max_items: int = DEFAULT_MAX_ITEMS
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_cached: int = DEFAULT_MAX_CACHED
    clock: Callable[[], float] = time.monotonic
    _schemas: OrderedDict[int, ParsedSchema] = field(default_factory=OrderedDict, init=False)
    #: id -> (until, reason)
    _refused: OrderedDict[int, tuple[float, str]] = field(default_factory=OrderedDict, init=False)

    @property
    def cached_ids(self) -> list[int]:
        return sorted(self._schemas)

    @property
    def refused_ids(self) -> list[int]:
        return sorted(self._refused)

    def _refusal(self, schema_id: int) -> str | None:
        refused = self._refused.get(schema_id)
        if refused is None:
            return None
        if refused[0] > self.clock():
            return refused[1]
        del self._refused[schema_id]
        return None

    def needs_registry(self, value: bytes | None) -> bool:
        """Whether decoding ``value`` would ask the registry (False: it is answered from the caches)."""
        if value is None or len(value) < HEADER_BYTES or value[0] != MAGIC_BYTE:
            return False
        schema_id = HEADER.unpack_from(value)[1]
        return schema_id not in self._schemas and self._refusal(schema_id) is None

    def _refuse(self, schema_id: int, reason: str) -> InvalidEvent:
        self._refused[schema_id] = (self.clock() + self.unknown_ttl, reason)
        self._refused.move_to_end(schema_id)
        while len(self._refused) > self.max_cached:
            self._refused.popitem(last=False)
        return InvalidEvent(reason)

    async def writer_schema(self, schema_id: int) -> ParsedSchema:
        """The parsed writer schema for ``schema_id``; InvalidEvent when there is none usable."""
        schema = self._schemas.get(schema_id)
        if schema is not None:
            return schema
        refused = self._refusal(schema_id)
        if refused is not None:
            raise InvalidEvent(refused)
        try:
            schema = self._parse(schema_id, await self.lookup(schema_id))
        except InvalidEvent as exc:
            raise self._refuse(schema_id, str(exc)) from None
        if self.subjects_of is not None and self.subject not in await self.subjects_of(schema_id):
            raise self._refuse(
                schema_id, f"schema id {schema_id} is not registered under subject {self.subject}"
            )
        self._schemas[schema_id] = schema
        while len(self._schemas) > self.max_cached:
            self._schemas.popitem(last=False)
        self._refused.pop(schema_id, None)
        logger.info("cached writer schema id %d", schema_id)
        return schema

    @staticmethod
    def _parse(schema_id: int, registered: RegisteredSchema | None) -> ParsedSchema:
        if registered is None:
            raise InvalidEvent(f"unknown schema id {schema_id}: the schema registry has no such schema")
        if registered.schema_type.upper() != "AVRO":
            raise InvalidEvent(f"schema id {schema_id} is a {registered.schema_type} schema, not Avro")
        try:
            return parse_schema(registered.text)
        except ValueError as exc:
            raise InvalidEvent(f"schema id {schema_id}: {exc}") from None

    async def decode(self, value: bytes | None) -> dict[str, Any]:
        """``{"schema_id": id, "value": datum}`` with a JSON-safe datum; InvalidEvent otherwise."""
        schema_id, body = split_wire(value)
        writer = await self.writer_schema(schema_id)
        prescan(body, writer, schema_id, self.max_items, self.max_decoded_bytes)
        return {"schema_id": schema_id, "value": jsonable(decode_body(body, writer, schema_id))}
