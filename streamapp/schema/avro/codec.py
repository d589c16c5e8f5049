"""The Confluent wire format (byte 0, 4-byte big-endian schema id, Avro binary body) of one record."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import struct
import uuid
from collections.abc import Mapping
from typing import Any

import fastavro
from fastavro.validation import ValidationError

from streamapp.models import InvalidEvent
from streamapp.schema.avro.schemas import ParsedSchema

__all__ = ["HEADER", "HEADER_BYTES", "MAGIC_BYTE", "decode_body", "encode_record", "jsonable", "split_wire"]

MAGIC_BYTE = 0
HEADER = struct.Struct(">BI")
HEADER_BYTES = HEADER.size  # 5


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
    out.write(HEADER.pack(MAGIC_BYTE, schema_id))
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
    magic, schema_id = HEADER.unpack_from(value)
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
