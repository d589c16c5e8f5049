"""Avro in the Confluent wire format (byte 0, 4-byte big-endian schema id, Avro binary body)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import logging
import struct
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
from fastavro.types import Schema as ParsedSchema
from fastavro.validation import ValidationError

from streamapp.models import InvalidEvent

__all__ = [
    "HEADER_BYTES",
    "MAGIC_BYTE",
    "DEFAULT_MAX_CACHED",
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_ITEMS",
    "AvroDecoder",
    "ParsedSchema",
    "RegisteredSchema",
    "SchemaLookup",
    "SubjectsOf",
    "bundled_schema",
    "decode_body",
    "encode_record",
    "explain_incompatibility",
    "jsonable",
    "load_schema",
    "parse_schema",
    "prescan",
    "schema_text",
    "split_wire",
]

logger = logging.getLogger(__name__)

MAGIC_BYTE = 0
_HEADER = struct.Struct(">BI")
HEADER_BYTES = _HEADER.size  # 5


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema as the registry returns it for an id."""

    schema_id: int
    text: str
    schema_type: str = "AVRO"


#: schema id -> the registered schema, or None when the registry does not know the id
SchemaLookup = Callable[[int], Awaitable[RegisteredSchema | None]]


def bundled_schema(name: str) -> dict[str, Any]:
    """A schema shipped with streamapp (``user-v1``, ``user-v2``, ...) as a JSON object."""
    text = resources.files("streamapp.schema").joinpath("avsc", f"{name}.avsc").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_schema(path: Path) -> Any:
    """A schema file (.avsc, JSON) as a JSON value; ValueError names the file when it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None


def schema_text(schema: Any) -> str:
    """The compact JSON text of a schema, as registered."""
    return schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))


def parse_schema(schema: Any) -> ParsedSchema:
    """Parse an Avro schema (JSON text or value); ValueError with fastavro's reason when invalid."""
    try:
        value = json.loads(schema) if isinstance(schema, str) else schema
        return fastavro.parse_schema(value)
    except Exception as exc:  # fastavro raises SchemaParseException, KeyError, TypeError, ...
        raise ValueError(f"not a valid Avro schema: {type(exc).__name__}: {exc}") from None


def encode_record(schema_id: int, schema: ParsedSchema, record: Mapping[str, Any]) -> bytes:
    """The Confluent wire format of ``record``; ValueError says which field does not fit the schema."""
    try:
        fastavro.validate(record, schema, raise_errors=True, strict=True)
    except ValidationError as exc:
        reasons = "; ".join(str(e) for e in getattr(exc, "errors", None) or [exc])
        raise ValueError(f"record does not match the schema: {reasons}") from None
    if isinstance(schema, dict) and schema.get("type") == "record":
        extra = sorted(set(record) - {f["name"] for f in schema["fields"]})
        if extra:  # Avro would drop them without a word
            raise ValueError(f"record does not match the schema: fields {extra} are not in it")
    out = io.BytesIO()
    out.write(_HEADER.pack(MAGIC_BYTE, schema_id))
    fastavro.schemaless_writer(out, schema, dict(record))
    return out.getvalue()


def split_wire(value: bytes | None) -> tuple[int, bytes]:
    """(schema id, Avro body) of a Confluent-framed value; InvalidEvent when it is not framed so."""
    if value is None:
        raise InvalidEvent("empty record value (null)")
    if len(value) < HEADER_BYTES:
        raise InvalidEvent(
            f"not Confluent Avro: {len(value)} bytes, shorter than the 5-byte header "
            "(magic byte 0 and a 4-byte schema id)"
        )
    magic, schema_id = _HEADER.unpack_from(value)
    if magic != MAGIC_BYTE:
        hint = " (looks like JSON)" if value[:1] in (b"{", b"[") else ""
        raise InvalidEvent(f"not Confluent Avro: magic byte is 0x{magic:02x}, expected 0x00{hint}")
    return schema_id, value[HEADER_BYTES:]


def decode_body(body: bytes, writer: ParsedSchema, schema_id: int) -> Any:
    """Read one datum written with ``writer``; every byte must belong to it."""
    stream = io.BytesIO(body)
    try:
        datum = fastavro.schemaless_reader(stream, writer, None)
    except EOFError:
        raise InvalidEvent(
            f"corrupt Avro body for schema id {schema_id}: it ends before the record does"
        ) from None
    except Exception as exc:  # bad union index: IndexError; bad UTF-8; absurd lengths; ...
        raise InvalidEvent(
            f"corrupt Avro body for schema id {schema_id}: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    left = len(body) - stream.tell()
    if left:
        raise InvalidEvent(f"corrupt Avro body for schema id {schema_id}: {left} bytes left after the record")
    return datum


def jsonable(value: Any) -> Any:
    """An Avro datum as JSON-safe values: bytes as base64 text, decimals and times as strings."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return str(value)


_PROMOTIONS = {
    ("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"), ("long", "double"),
    ("float", "double"), ("string", "bytes"), ("bytes", "string"),
}  # fmt: skip


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "union[" + ", ".join(_type_name(t) for t in avro_type) + "]"
    if isinstance(avro_type, dict):
        return str(avro_type.get("name") or avro_type.get("type"))
    return str(avro_type)


def _readable(writer: Any, reader: Any) -> bool:
    """Whether data of ``writer`` type can be read as ``reader`` (top-level shapes only)."""
    if writer == reader:
        return True
    if isinstance(reader, list):
        return any(_readable(writer, branch) for branch in reader)
    if isinstance(writer, list):
        return all(_readable(branch, reader) for branch in writer)
    if isinstance(writer, str) and isinstance(reader, str):
        return (writer, reader) in _PROMOTIONS
    return _type_name(writer) == _type_name(reader)  # nested named types: leave the details to the registry


def _field_problems(reader: dict[str, Any], writer: dict[str, Any], writer_role: str) -> list[str]:
    written = {f["name"]: f for f in writer.get("fields", [])}
    for field_ in writer.get("fields", []):
        for alias in field_.get("aliases", []):
            written.setdefault(alias, field_)
    problems = []
    for field_ in reader.get("fields", []):
        name = field_["name"]
        source = next((written[n] for n in [name, *field_.get("aliases", [])] if n in written), None)
        if source is None:
            if "default" not in field_:
                problems.append(
                    f"field {name!r} has no default, and records written with the {writer_role} "
                    "schema lack it"
                )
        elif not _readable(source["type"], field_["type"]):
            problems.append(
                f"field {name!r} is {_type_name(source['type'])} in the {writer_role} schema and "
                f"{_type_name(field_['type'])} in the {'newer' if writer_role == 'older' else 'older'} one: "
                "not convertible"
            )
    return problems


def explain_incompatibility(new: Any, old: Any, level: str | None) -> list[str]:
    """Plain reasons why record schema ``new`` cannot follow ``old`` under ``level`` (may be empty)."""
    try:
        new_value = json.loads(new) if isinstance(new, str) else new
        old_value = json.loads(old) if isinstance(old, str) else old
    except ValueError:
        return []
    if not (isinstance(new_value, dict) and isinstance(old_value, dict)):
        return []
    if new_value.get("type") != "record" or old_value.get("type") != "record":
        return []
    level = (level or "BACKWARD").upper()
    problems = []
    if level.startswith(("BACKWARD", "FULL")):  # the new schema must read old data
        problems += _field_problems(new_value, old_value, "older")
    if level.startswith(("FORWARD", "FULL")):  # the old schema must read new data
        problems += _field_problems(old_value, new_value, "newer")
    return problems


#: defaults of the decoder's bounds (a users record is a few dozen bytes and a handful of values)
DEFAULT_MAX_ITEMS = 10_000
DEFAULT_MAX_DECODED_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_CACHED = 1_000
_PER_VALUE_BYTES = 8  # what a decoded value costs at least, for the decoded-size bound

#: schema id -> the subjects it is registered under
SubjectsOf = Callable[[int], Awaitable[frozenset[str]]]


class _Prescan:
    """Walks an Avro body with its writer schema without building anything: counts and sizes only.

    fastavro builds what the block counts claim: an array of nulls (zero bytes an item) claiming a
    billion items from six bytes is a billion-item list. This walk reads the same bytes, adds up
    the items and the decoded size, and refuses (InvalidEvent) before a block is walked whose
    count would pass the bound, so its cost is bounded by the limits, not by the claims.
    """

    def __init__(
        self, body: bytes, schema: Any, schema_id: int, max_items: int, max_bytes: int, max_depth: int
    ):
        self.body = body
        self.pos = 0
        self.items = 0
        self.size = 0
        self.schema_id = schema_id
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.named: dict[str, Any] = {}
        self._collect(schema)

    def _collect(self, schema: Any) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self._collect(branch)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed") and "name" in schema:
                if schema["name"] in self.named:
                    return
                self.named[schema["name"]] = schema
            for field_ in schema.get("fields", ()):
                self._collect(field_["type"])
            for key in ("items", "values"):
                if key in schema:
                    self._collect(schema[key])
            if isinstance(kind, dict | list):
                self._collect(kind)
            for name, named in (schema.get("__named_schemas") or {}).items():
                self.named.setdefault(name, named)

    def _refuse(self, why: str) -> InvalidEvent:
        return InvalidEvent(f"Avro body for schema id {self.schema_id} refused: {why}")

    def _corrupt(self, why: str) -> InvalidEvent:
        return InvalidEvent(f"corrupt Avro body for schema id {self.schema_id}: {why}")

    def _add(self, size: int) -> None:
        self.size += size
        if self.size > self.max_bytes:
            raise self._refuse(f"it decodes to more than {self.max_bytes} bytes")

    def _long(self) -> int:
        body, pos, shift, value = self.body, self.pos, 0, 0
        while True:
            if pos >= len(body):
                raise self._corrupt("it ends before the record does")
            byte = body[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 63:
                raise self._corrupt("a number longer than 10 bytes")
        self.pos = pos
        return (value >> 1) ^ -(value & 1)

    def _skip(self, n: int) -> None:
        if n < 0:
            raise self._corrupt(f"a negative length ({n})")
        if self.pos + n > len(self.body):
            raise self._corrupt("it ends before the record does")
        self.pos += n

    def scan(self, schema: Any, depth: int = 0) -> None:
        if depth > self.max_depth:
            raise self._refuse(f"values nested deeper than {self.max_depth}")
        self._add(_PER_VALUE_BYTES)
        if isinstance(schema, list):  # a union: the branch index, then the branch
            index = self._long()
            if not 0 <= index < len(schema):
                raise self._corrupt(f"union branch {index} of {len(schema)}")
            self.scan(schema[index], depth + 1)
            return
        if isinstance(schema, dict):
            kind = schema["type"]
            if kind in ("record", "error"):
                for field_ in schema["fields"]:
                    self.scan(field_["type"], depth + 1)
            elif kind == "enum":
                index = self._long()
                if not 0 <= index < len(schema["symbols"]):
                    raise self._corrupt(f"enum symbol {index} of {len(schema['symbols'])}")
            elif kind == "fixed":
                self._skip(int(schema["size"]))
                self._add(int(schema["size"]))
            elif kind in ("array", "map"):
                self._blocks(schema["items"] if kind == "array" else schema["values"], kind == "map", depth)
            else:  # a logical type on a primitive, or a nested type definition
                self.scan(kind, depth + 1)
            return
        if schema in ("null",):
            return
        if schema == "boolean":
            self._skip(1)
        elif schema in ("int", "long"):
            self._long()
        elif schema == "float":
            self._skip(4)
        elif schema == "double":
            self._skip(8)
        elif schema in ("bytes", "string"):
            n = self._long()
            self._skip(n)
            self._add(n)
        elif schema in self.named:
            self.scan(self.named[schema], depth + 1)
        else:
            raise self._refuse(f"unknown type {str(schema)[:80]!r} in the schema")

    def _blocks(self, item: Any, keyed: bool, depth: int) -> None:
        while True:
            count = self._long()
            if count == 0:
                return
            if count < 0:  # a block with its size in bytes
                count = -count
                self._long()
            self.items += count
            if self.items > self.max_items:  # before walking the block: its claims cost nothing
                raise self._refuse(
                    f"arrays and maps claim {self.items} or more items, over the limit of {self.max_items}"
                )
            for _ in range(count):
                if keyed:
                    n = self._long()
                    self._skip(n)
                    self._add(n)
                self.scan(item, depth + 1)


def prescan(
    body: bytes,
    writer: ParsedSchema,
    schema_id: int,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> None:
    """Refuse (InvalidEvent with the reason) a body whose arrays and maps hold more than
    ``max_items`` items in all, that decodes to more than ``max_decoded_bytes``, or nests deeper
    than ``max_depth``, without decoding it."""
    _Prescan(body, writer, schema_id, max_items, max_decoded_bytes, max_depth).scan(writer)


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
        schema_id = _HEADER.unpack_from(value)[1]
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
