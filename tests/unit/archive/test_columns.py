"""Event columns parsed in bulk by Arrow's JSON reader are exactly what per-record decoding gives."""

from __future__ import annotations

import pyarrow as pa
import pytest
from aiokafka.structs import ConsumerRecord

from streamapp.archive.columns import bulk_fields, record_fields, records_table

LOGINS = [
    b'{"ts": 1764686000.125, "ip": "10.0.0.1", "user": "u1", "success": true}',
    b'{"ts": 1764686001, "ip": "10.0.0.2", "user": "u2", "success": false}',
    b'{"user": "u3", "ts": 1764686002.5, "ip": "10.0.0.3", "country": null}',
    None,
    b"",
    b'  {"ip": "10.0.0.4", "note": "caf\\u00e9 \\"quoted\\""}\r\n',
    b"null",
    b'{"kafka_offset": "a field named like a meta column is left to kafka_value", "ip": "x"}',
]


@pytest.mark.parametrize(
    "odd",
    [
        b"\xff garbage",  # not JSON
        b"\x00\x00\x00\x00\x07avro",  # an Avro frame
        b'{"ip": "a"} {"ip": "b"}',  # two objects in one value
        b'{"ip":\n"multi-line"}',  # an object spanning lines (valid JSON)
        b'{"ip": "a"}\r{"ip": "b"}',
        b"   ",  # only whitespace
        b'{"ip": 7}',  # a string field given as a number
        b'{"ip": "a", "ip": "b"}',  # a duplicate key
        b'{"ts": NaN}',
        b'{"ts": 18446744073709551616}',  # an integer beyond int64
        b'{"ts": 1e400}',
        b'{"ip": {"nested": [1, 2]}}',
        b'{"when": "2026-12-01T00:00:00Z"}',  # a string Arrow would read as a timestamp
        b'{"ip": "\\ud800"}',  # a lone surrogate
        b'{"ip": "\xff"}',  # invalid UTF-8 in a string
        b'{"ip": "tab\tinside"}',  # a raw control character in a string
        b'{"ip": "a\x01b"}',
        b'{"ts": 01}',
        b'{"ts": 1.}',
        b'{"ts": .5}',
        b'{"ts": +1}',
        b'{"ip": "a",}',  # a trailing comma
        b'{"ip": "a"} // a comment',
        b'{"ip": /* a comment */ "a"}',
        b"{'ip': 'single quotes'}",
        b'{"ts": Infinity}',
        b"[1, 2]",
        b"12",
    ],
)
def test_bulk_columns_equal_per_record_decoding(odd: bytes) -> None:
    values = [*LOGINS, odd, *LOGINS]
    bulk = bulk_fields(values)
    expected = pa.table(record_fields(values))
    assert bulk is None or pa.table(bulk).equals(expected), pa.table(bulk).to_pylist()
    records = [
        ConsumerRecord("t", 0, i, 0, 0, b"k", v, None, 1, len(v or b""), ()) for i, v in enumerate(values)
    ]
    table = records_table(records)
    assert table.drop_columns([c for c in table.column_names if c.startswith("kafka_")]).equals(expected)


def test_plain_json_events_are_read_in_bulk_with_their_types() -> None:
    fields = bulk_fields(LOGINS)
    assert fields is not None, "plain JSON objects need no per-record decoding"
    table = pa.table(fields)
    assert table.equals(pa.table(record_fields(LOGINS)))
    assert table.column_names == ["ts", "ip", "user", "success", "country", "note"]
    assert table.schema.field("ts").type == pa.float64() and table.schema.field("country").type == pa.string()
    assert table["note"].to_pylist()[5] == 'café "quoted"'
