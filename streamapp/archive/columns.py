"""Kafka records as an Arrow table: the meta columns, then one column per field of the JSON events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

__all__ = ["HEADERS_TYPE", "META_COLUMNS", "bulk_fields", "parquet_options", "record_fields", "records_table"]

#: columns every object has besides the event's own fields (a field with one of these names is
#: left to ``kafka_value``, which always holds the record's value byte for byte)
META_COLUMNS = (
    "kafka_key", "kafka_partition", "kafka_offset", "kafka_timestamp", "kafka_value", "kafka_headers",
)  # fmt: skip

HEADERS_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))

#: what JSON allows around a value (bytes.strip's default also takes \x0b and \x0c, which JSON refuses)
_JSON_SPACE = b" \t\r\n"
#: the column types Arrow's JSON reader infers exactly as the per-record path does from the same
#: values; anything else (nested, strings read as timestamps) is left to that path
_SCALARS = (pa.bool_(), pa.int64(), pa.float64(), pa.string())
#: Arrow reads an integer beyond int64 as a double; the per-record path keeps it as JSON text
_INT64_BOUND = 2.0**63


def records_table(records: Sequence[Any]) -> pa.Table:
    """A table of Kafka records: the meta columns, then one column per field of the JSON objects.

    ``records`` are aiokafka ``ConsumerRecord`` s (key, value, partition, offset, timestamp, headers).
    A value that is not a JSON object (Avro, garbage) leaves its event fields empty. A field whose
    values mix types, or nest, is kept as JSON text.
    """
    values = [r.value for r in records]
    columns: dict[str, pa.Array] = {
        "kafka_key": pa.array([r.key for r in records], type=pa.binary()),
        "kafka_partition": pa.array([r.partition for r in records], type=pa.int32()),
        "kafka_offset": pa.array([r.offset for r in records], type=pa.int64()),
        "kafka_timestamp": pa.array([r.timestamp for r in records], type=pa.int64()).cast(
            pa.timestamp("ms", tz="UTC")
        ),
        "kafka_value": pa.array(values, type=pa.binary()),
        "kafka_headers": _headers(records),
    }
    fields = bulk_fields(values)
    columns.update(record_fields(values) if fields is None else fields)
    return pa.table(columns)


def _headers(records: Sequence[Any]) -> pa.Array:
    if any(r.headers for r in records):
        return pa.array(
            [[{"key": k, "value": v} for k, v in (r.headers or ())] for r in records], type=HEADERS_TYPE
        )
    # most topics carry no headers: an empty list per record without a Python object per record
    offsets = pa.array([0] * (len(records) + 1), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array([], type=HEADERS_TYPE.value_type))


def bulk_fields(values: Sequence[bytes | None]) -> dict[str, pa.Array] | None:
    """The event fields of ``values`` parsed by Arrow's JSON reader in one go (C++, the GIL released),
    or None when the batch holds anything that reader takes otherwise than :func:`record_fields`.

    Each value is one line (an empty one is ``{}``); a batch with a value spanning lines, two objects
    in one value, garbage, a duplicate key, a NaN, an integer beyond int64, a nested field or a
    string Arrow would read as a timestamp is left to the per-record path, so both give one table.
    """
    if not values:
        return None
    lines = b"\n".join([(v and v.strip(_JSON_SPACE)) or b"{}" for v in values])
    if lines.count(b"\n") != len(values) - 1 or b"\r" in lines:
        return None  # a value spans lines (Arrow also ends a line at \r): rows would not be records
    try:
        lines.decode()  # Arrow's reader does not check UTF-8
        options = pajson.ReadOptions(use_threads=False, block_size=len(lines) + 1)  # one block: one inference
        table = pajson.read_json(pa.py_buffer(lines), read_options=options)
    except (pa.ArrowException, ValueError):  # bad UTF-8, not all JSON objects, duplicate keys
        return None
    if table.num_rows != len(values):
        return None  # a value held two objects on its line
    fields: dict[str, pa.Array] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in META_COLUMNS:
            continue
        if pa.types.is_null(column.type):
            fields[name] = pa.nulls(len(values), type=pa.string())  # as the per-record path keeps it
            continue
        if column.type not in _SCALARS:
            return None
        array = column.combine_chunks()
        if column.type == pa.float64() and not pc.all(pc.less(pc.abs(array), _INT64_BOUND)).as_py():
            return None  # NaN, infinity, or an integer beyond int64 read as a double
        fields[name] = array
    return fields


def record_fields(values: Sequence[bytes | None]) -> dict[str, pa.Array]:
    """The event fields of ``values``, each decoded with orjson: the reference for :func:`bulk_fields`."""
    events: list[dict[str, Any] | None] = []
    shapes: dict[tuple[str, ...], None] = {}  # the events' key sequences, first seen first
    loads, not_json = orjson.loads, orjson.JSONDecodeError
    for value in values:
        event = None
        if value:
            try:
                decoded = loads(value)
            except not_json:
                decoded = None
            if type(decoded) is dict:  # orjson makes plain dicts
                event = decoded
                shapes[tuple(decoded)] = None  # events mostly share a few shapes: cheaper than per key
        events.append(event)
    names: dict[str, None] = {}
    for shape in shapes:
        names.update(dict.fromkeys(k for k in shape if k not in META_COLUMNS))
    return {name: _column([None if e is None else e.get(name) for e in events]) for name in names}


def _column(values: list[Any]) -> pa.Array:
    """One event field as a typed column; mixed or nested values are kept as JSON text."""
    try:
        array = pa.array(values)
        if not (pa.types.is_nested(array.type) or pa.types.is_null(array.type)):
            return array
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    return pa.array([None if v is None else orjson.dumps(v).decode() for v in values], type=pa.string())


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How an object is encoded (``pyarrow.parquet.write_table`` keywords): zstd; dictionaries only for
    text, binary and boolean columns, whose values repeat (keys, IPs, users), not for the numbers and
    raw values, which mostly do not (a dictionary tried on them is built and thrown away); offsets
    and timestamps, which grow, delta-encoded."""
    repeating = [
        f.name
        for f in schema
        if f.name != "kafka_value"
        and (pa.types.is_string(f.type) or pa.types.is_binary(f.type) or pa.types.is_boolean(f.type)
             or pa.types.is_nested(f.type))
    ]  # fmt: skip
    return {
        "compression": "zstd",
        "use_dictionary": repeating,
        "column_encoding": {"kafka_offset": "DELTA_BINARY_PACKED", "kafka_timestamp": "DELTA_BINARY_PACKED"},
    }
