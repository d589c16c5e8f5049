"""Bounds an Avro body must keep before it is decoded: items, decoded size, depth (nothing is built)."""

from __future__ import annotations

from typing import Any

from streamapp.models import InvalidEvent
from streamapp.schema.avro.schemas import ParsedSchema

__all__ = ["DEFAULT_MAX_DECODED_BYTES", "DEFAULT_MAX_DEPTH", "DEFAULT_MAX_ITEMS", "prescan"]

#: defaults of the decoder's bounds (a users record is a few dozen bytes and a handful of values)
DEFAULT_MAX_ITEMS = 10_000
DEFAULT_MAX_DECODED_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 32
_PER_VALUE_BYTES = 8  # what a decoded value costs at least, for the decoded-size bound


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
