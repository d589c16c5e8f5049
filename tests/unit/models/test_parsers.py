"""Event parsing: valid records become events; every kind of bad record gets a readable reason."""

from __future__ import annotations

import pytest

from streamapp.models.events import InvalidEvent, Login, User
from streamapp.models.parsers import (
    decode_json_object,
    parse_login,
    parse_sensor_reading,
    parse_stock_price,
    parse_transaction,
    parse_user,
)


def test_login_with_epoch_seconds():
    obj = decode_json_object(b'{"ts": 1700000000.5, "ip": "1.2.3.4", "user": "ann", "success": false}')
    assert parse_login(obj, None) == Login(1700000000.5, "1.2.3.4", "ann", False)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (b'{"ip": "1.2.3.4", "user": "a", "ts": 1}', "'success' is missing"),
        (b'{"ip": 7, "user": "a", "success": true, "ts": 1}', "'ip' must be a string"),
        (b'{"ip": "1.2.3.4", "user": "a", "success": "no", "ts": 1}', "'success' must be true or false"),
        (b'{"ip": "1.2.3.4", "user": "a", "success": true, "ts": "yesterday"}', "ISO-8601"),
        (b'{"ip": "1.2.3.4", "user": "a", "success": true, "ts": "2023-11-14T22:13:20"}', "offset"),
        (b'{"ip": "1.2.3.4", "user": "a", "success": true, "ts": 1700000000000}', "milliseconds"),
        (b'{"ip": "", "user": "a", "success": true, "ts": 1}', "'ip' must not be empty"),
    ],
)
def test_bad_login_records_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent, match=reason):
        parse_login(decode_json_object(raw), 1.0)


def test_null_value_is_refused():
    with pytest.raises(InvalidEvent, match="null"):
        decode_json_object(None)


def test_other_topics_validate_types_and_ranges():
    assert parse_sensor_reading({"ts": 1, "sensor_id": "s1", "temperature": 21.5}, None).temperature == 21.5
    with pytest.raises(InvalidEvent, match="temperature"):
        parse_sensor_reading({"ts": 1, "sensor_id": "s1", "temperature": -500}, None)
    with pytest.raises(InvalidEvent, match="must be a number"):
        parse_sensor_reading({"ts": 1, "sensor_id": "s1", "temperature": True}, None)
    txn = parse_transaction({"ts": 1, "txn_id": "t", "card_id": "c", "amount": 5}, None)
    assert txn.amount == 5.0 and txn.merchant is None
    with pytest.raises(InvalidEvent, match="negative"):
        parse_transaction({"ts": 1, "txn_id": "t", "card_id": "c", "amount": -5}, None)
    with pytest.raises(InvalidEvent, match="positive"):
        parse_stock_price({"ts": 1, "symbol": "ACME", "price": 0}, None)


def test_parse_user_keeps_every_field_of_the_version_and_the_schema_id():
    user = parse_user({"schema_id": 2, "value": {"name": "ann", "age": 31, "email": None}}, 1700000000.0)
    assert user == User(1700000000.0, "ann", 31, 2, {"name": "ann", "age": 31, "email": None})


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"schema_id": 5, "value": "ann"}, "must be an Avro record, got string"),
        ({"schema_id": 1, "value": {"name": "ann"}}, "'age' is missing"),
        ({"schema_id": 1, "value": {"age": 3}}, "'name' is missing"),
        ({"schema_id": 1, "value": {"name": "", "age": 3}}, "'name' must not be empty"),
        ({"schema_id": 1, "value": {"name": "ann", "age": "3"}}, "'age' must be an integer"),
        ({"schema_id": 1, "value": {"name": "ann", "age": -1}}, "outside 0..150"),
        ({"schema_id": 1, "value": {"name": "ann", "age": 2**31 - 1}}, "outside 0..150"),
        ({"value": {"name": "ann", "age": 3}}, "no schema id"),
    ],
)
def test_parse_user_refuses_wrong_fields(obj, reason):
    with pytest.raises(InvalidEvent, match=reason):
        parse_user(obj, 1700000000.0)
