"""The Confluent wire format of one record: framing, encoding, decoding, JSON-safe datums."""

from __future__ import annotations

import struct

import pytest

from streamapp.models import InvalidEvent
from streamapp.schema.avro.codec import decode_body, encode_record, jsonable, split_wire
from streamapp.schema.avro.schemas import bundled_schema, parse_schema

V1 = bundled_schema("user-v1")


def test_wire_format_is_magic_byte_id_and_avro_body():
    value = encode_record(7, parse_schema(V1), {"name": "ann", "age": 31})
    assert value[0] == 0
    assert struct.unpack(">I", value[1:5]) == (7,)
    # Avro binary: zig-zag varint length 3 -> 0x06, "ann", zig-zag 31 -> 62
    assert value[5:] == b"\x06ann\x3e"
    schema_id, body = split_wire(value)
    assert (schema_id, decode_body(body, parse_schema(V1), schema_id)) == (7, {"name": "ann", "age": 31})


def test_encode_refuses_a_record_that_does_not_fit_the_schema():
    with pytest.raises(ValueError, match="age"):
        encode_record(1, parse_schema(V1), {"name": "ann", "age": "old"})
    with pytest.raises(ValueError, match="does not match"):
        encode_record(1, parse_schema(V1), {"name": "ann", "age": 3, "extra": 1})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "null"),
        (b"", "shorter than the 5-byte header"),
        (b"\x00\x00\x01", "shorter than the 5-byte header"),
        (b'{"name": "ann", "age": 3}', "magic byte is 0x7b.*looks like JSON"),
        (b"\x01\x00\x00\x00\x01\x06ann\x3e", "magic byte is 0x01"),
    ],
)
def test_split_wire_refuses_unframed_values(value, reason):
    with pytest.raises(InvalidEvent, match=reason):
        split_wire(value)


def test_jsonable_makes_avro_values_json_safe():
    import datetime as dt
    import decimal
    import uuid

    out = jsonable(
        {
            "b": b"\x00\xff",
            "d": decimal.Decimal("1.50"),
            "t": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "u": uuid.UUID(int=1),
            "n": float("nan"),
            "l": [1, (2, 3)],
        }
    )
    assert out == {
        "b": "AP8=",
        "d": "1.50",
        "t": "2026-01-01T00:00:00+00:00",
        "u": "00000000-0000-0000-0000-000000000001",
        "n": "nan",
        "l": [1, [2, 3]],
    }
