"""Property-based: random bytes and random JSON never make a decoder raise anything but InvalidEvent."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.models import (
    InvalidEvent,
    decode_json_object,
    parse_login,
    parse_sensor_reading,
    parse_stock_price,
    parse_transaction,
    parse_user,
    parse_valid_json,
)
from streamapp.schema.avro import (
    AvroDecoder,
    RegisteredSchema,
    bundled_schema,
    encode_record,
    parse_schema,
    schema_text,
)

PARSERS: dict[str, Callable[[dict[str, Any], float | None], Any]] = {
    "logins": parse_login,
    "sensor-readings": parse_sensor_reading,
    "transactions": parse_transaction,
    "stock-prices": parse_stock_price,
}
FIELDS = ["ts", "ip", "user", "success", "sensor_id", "temperature", "txn_id", "card_id", "amount",
          "merchant", "country", "symbol", "price", "name", "age"]  # fmt: skip
V1, V2 = bundled_schema("user-v1"), bundled_schema("user-v2")
# database=None: no .hypothesis/ example store in the work tree; failures print their example
PROPERTY = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300)
    | st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00", "yesterday", ""])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
#: objects with the contract's field names and values of any JSON type (the interesting cases)
event_like = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS))


def _accepts_or_refuses(parse: Callable[[dict[str, Any], float | None], Any], obj: Any, ts: Any) -> None:
    try:
        parse(obj, ts)
    except InvalidEvent as exc:
        assert str(exc), "a dead-letter reason must not be empty"


def _decode_then_parse(raw: bytes | None, ts: float | None) -> None:
    for parse in PARSERS.values():
        try:
            obj = decode_json_object(raw)
        except InvalidEvent as exc:
            assert str(exc)
            return
        _accepts_or_refuses(parse, obj, ts)


record_ts = st.none() | st.floats(min_value=0, max_value=4e9)


@PROPERTY
@given(raw=st.binary(max_size=512), ts=record_ts)
def test_random_bytes_at_the_json_decoders(raw: bytes, ts: float | None) -> None:
    _decode_then_parse(raw, ts)


@PROPERTY
@given(value=json_values, ts=record_ts)
def test_random_json_documents_at_the_json_decoders(value: Any, ts: float | None) -> None:
    _decode_then_parse(json.dumps(value).encode(), ts)


@PROPERTY
@given(obj=event_like, ts=record_ts)
def test_random_event_like_objects_at_every_parser(obj: dict[str, Any], ts: float | None) -> None:
    _decode_then_parse(json.dumps(obj).encode(), ts)
    for parse in PARSERS.values():
        _accepts_or_refuses(parse, obj, ts)


@PROPERTY
@given(obj=event_like, junk=st.binary(min_size=1, max_size=8))
def test_json_with_broken_bytes_at_the_json_decoders(obj: dict[str, Any], junk: bytes) -> None:
    text = json.dumps(obj).encode()
    middle = len(text) // 2
    _decode_then_parse(text[:middle] + junk + text[middle:], 1.0)


def _full_path(parse: Callable[[dict[str, Any], float | None], Any], raw: bytes, ts: float | None) -> Any:
    try:
        return parse(decode_json_object(raw), ts)
    except InvalidEvent:
        return None


@PROPERTY
@given(obj=event_like, ts=record_ts)
def test_the_short_json_path_agrees_with_the_full_one(obj: dict[str, Any], ts: float | None) -> None:
    raw = json.dumps(obj).encode()
    for parse in PARSERS.values():
        # the same event where the full path accepts, None (then the full path) where it refuses
        assert parse_valid_json(raw, ts, parse, max_bytes=1 << 20) == _full_path(parse, raw, ts)


@PROPERTY
@given(raw=st.binary(max_size=512), ts=record_ts)
def test_the_short_json_path_refuses_what_the_full_one_refuses(raw: bytes, ts: float | None) -> None:
    for parse in PARSERS.values():
        short = parse_valid_json(raw, ts, parse, max_bytes=1 << 20)
        assert short is None or short == _full_path(parse, raw, ts)


def test_the_short_json_path_leaves_oversized_and_null_records_to_the_full_one() -> None:
    raw = orjson.dumps({"ts": 1.0, "ip": "10.0.0.1", "user": "u", "success": False})
    assert parse_valid_json(raw, None, parse_login, max_bytes=len(raw)) is not None
    assert parse_valid_json(raw, None, parse_login, max_bytes=len(raw) - 1) is None
    assert parse_valid_json(None, 1.0, parse_login, max_bytes=1 << 20) is None


# -- Avro ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run() -> Iterator[Callable[[Any], Any]]:
    """Run a coroutine to completion (hypothesis drives sync tests: one loop for all examples)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


async def _lookup(schema_id: int) -> RegisteredSchema | None:
    return {
        1: RegisteredSchema(1, schema_text(V1)),
        2: RegisteredSchema(2, schema_text(V2)),
        3: RegisteredSchema(3, '"string"'),
        4: RegisteredSchema(4, "{}", "PROTOBUF"),
    }.get(schema_id)


def _avro_decode_then_parse(run: Callable[[Any], Any], value: bytes | None) -> dict[str, Any] | None:
    decoder = AvroDecoder(_lookup)
    try:
        decoded = run(decoder.decode(value))
    except InvalidEvent as exc:
        assert str(exc)
        return None
    assert set(decoded) == {"schema_id", "value"}
    orjson.dumps(decoded)  # JSON-safe, as the re-key topic and the table need
    try:
        parse_user(decoded, 1.0)
    except InvalidEvent as exc:
        assert str(exc)
    return decoded


@PROPERTY
@given(raw=st.binary(max_size=256))
def test_random_bytes_at_the_avro_decoder(run, raw: bytes) -> None:
    _avro_decode_then_parse(run, raw)


@PROPERTY
@given(schema_id=st.sampled_from([0, 1, 2, 3, 4, 999, 2**32 - 1]), body=st.binary(max_size=128))
def test_framed_random_bodies_at_the_avro_decoder(run, schema_id: int, body: bytes) -> None:
    _avro_decode_then_parse(run, struct.pack(">BI", 0, schema_id) + body)


int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
users_v1 = st.fixed_dictionaries({"name": st.text(max_size=300), "age": int32})
users_v2 = st.fixed_dictionaries(
    {"name": st.text(max_size=300), "age": int32, "email": st.none() | st.text(max_size=50)}
)


@PROPERTY
@given(data=st.data())
def test_valid_records_of_both_versions_decode_exactly(run, data: st.DataObject) -> None:
    schema_id = data.draw(st.sampled_from([1, 2]))
    record = data.draw(users_v1 if schema_id == 1 else users_v2)
    value = encode_record(schema_id, parse_schema(V1 if schema_id == 1 else V2), record)
    decoded = _avro_decode_then_parse(run, value)
    assert decoded == {"schema_id": schema_id, "value": record}
    # truncating or extending a valid record is always refused, never misread
    cut = data.draw(st.integers(min_value=0, max_value=len(value) - 1))
    assert _avro_decode_then_parse(run, value[:cut]) is None
    assert _avro_decode_then_parse(run, value + data.draw(st.binary(min_size=1, max_size=4))) is None


@PROPERTY
@given(record=users_v2, flips=st.lists(st.integers(min_value=5), min_size=1, max_size=3))
def test_flipped_bytes_in_a_valid_record(run, record: dict[str, Any], flips: list[int]) -> None:
    value = bytearray(encode_record(2, parse_schema(V2), record))
    for position in flips:
        value[position % len(value)] ^= 0xFF
    _avro_decode_then_parse(run, bytes(value))
