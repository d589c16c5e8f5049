"""Avro schemas: the ones bundled with streamapp, schema files, registered texts, parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
from fastavro.types import Schema as ParsedSchema

__all__ = ["ParsedSchema", "RegisteredSchema", "bundled_schema", "load_schema", "parse_schema", "schema_text"]


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema as the registry returns it for an id."""

    schema_id: int
    text: str
    schema_type: str = "AVRO"


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
