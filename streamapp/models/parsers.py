"""Record values parsed into the contract's events, or refused with the reason (InvalidEvent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from streamapp.models.events import (
    InvalidEvent,
    Login,
    Parser,
    SensorReading,
    StockPrice,
    Transaction,
    User,
)
from streamapp.models.fields import LIMITS, event_time, kind_of, number_field, number_text, text_field

__all__ = [
    "INPUTS",
    "Input",
    "decode_json_object",
    "parse_login",
    "parse_sensor_reading",
    "parse_stock_price",
    "parse_transaction",
    "parse_user",
    "parse_valid_json",
]


def decode_json_object(value: bytes | None) -> dict[str, Any]:
    """Decode a record value that must be a UTF-8 JSON object."""
    if value is None:
        raise InvalidEvent("empty record value (null)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("value is not UTF-8 text") from None
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"value must be a JSON object, got {type(obj).__name__}")
    return obj


def parse_valid_json(
    value: bytes | None, record_ts: float | None, parse: Parser, max_bytes: int
) -> Any | None:
    """The parsed event of a valid JSON record; None for anything else (then take the full path).

    ``parse(decode_json_object(value), record_ts)`` without building a reason for what is wrong:
    the per-record path of the ingest agents. On None the caller decodes again on the path
    that says why (streamapp.pipeline.ingest.decode_or_dead_letter), so any doubt costs only time.
    """
    if value is None or len(value) > max_bytes:
        return None
    try:
        obj = orjson.loads(value)
        return parse(obj, record_ts) if type(obj) is dict else None
    except Exception:
        return None


def parse_login(obj: dict[str, Any], record_ts: float | None) -> Login:
    success = obj.get("success")
    if success is None:
        raise InvalidEvent("field 'success' is missing")
    if not isinstance(success, bool):
        raise InvalidEvent(f"field 'success' must be true or false, got {kind_of(success)}")
    return Login(
        ts=event_time(obj, record_ts),
        ip=text_field(obj, "ip") or "",
        user=text_field(obj, "user") or "",
        success=success,
    )


def parse_sensor_reading(obj: dict[str, Any], record_ts: float | None) -> SensorReading:
    temperature = number_field(obj, "temperature")
    # below absolute zero or hotter than any sensor survives: a unit or encoding bug upstream
    if not -273.15 <= temperature <= 10_000:
        raise InvalidEvent(f"field 'temperature'={temperature} is outside -273.15..10000")
    return SensorReading(
        ts=event_time(obj, record_ts), sensor_id=text_field(obj, "sensor_id") or "", temperature=temperature
    )


def parse_transaction(obj: dict[str, Any], record_ts: float | None) -> Transaction:
    amount = number_field(obj, "amount")
    if not 0 <= amount <= LIMITS.max_amount:
        if amount < 0:
            raise InvalidEvent(f"field 'amount'={amount} must not be negative")
        raise InvalidEvent(
            f"field 'amount'={amount:g} exceeds STREAMAPP_MAX_AMOUNT={number_text(LIMITS.max_amount)}"
        )
    return Transaction(
        ts=event_time(obj, record_ts),
        txn_id=text_field(obj, "txn_id") or "",
        card_id=text_field(obj, "card_id") or "",
        amount=amount,
        merchant=text_field(obj, "merchant", required=False),
        country=text_field(obj, "country", required=False),
    )


def parse_stock_price(obj: dict[str, Any], record_ts: float | None) -> StockPrice:
    price = number_field(obj, "price")
    if not 0 < price <= LIMITS.max_price:
        if price <= 0:
            raise InvalidEvent(f"field 'price'={price} must be positive")
        raise InvalidEvent(
            f"field 'price'={price:g} exceeds STREAMAPP_MAX_PRICE={number_text(LIMITS.max_price)}"
        )
    return StockPrice(ts=event_time(obj, record_ts), symbol=text_field(obj, "symbol") or "", price=price)


_MAX_AGE = 150


def parse_user(obj: dict[str, Any], record_ts: float | None) -> User:
    """A decoded Avro `users` record, ``{"schema_id": id, "value": datum}``, checked field by field."""
    value, schema_id = obj.get("value"), obj.get("schema_id")
    if not isinstance(schema_id, int):
        raise InvalidEvent("the record carries no schema id")
    if not isinstance(value, dict):
        raise InvalidEvent(f"value must be an Avro record, got {kind_of(value)}")
    age = value.get("age")
    if age is None:
        raise InvalidEvent("field 'age' is missing")
    if isinstance(age, bool) or not isinstance(age, int):
        raise InvalidEvent(f"field 'age' must be an integer, got {kind_of(age)}")
    if not 0 <= age <= _MAX_AGE:
        raise InvalidEvent(f"field 'age'={age} is outside 0..{_MAX_AGE}")
    return User(
        ts=event_time(value, record_ts),
        name=text_field(value, "name") or "",
        age=age,
        schema_id=schema_id,
        fields=value,
    )


@dataclass(frozen=True)
class Input:
    """A JSON input topic of the contract (docs/contract.md, "Input topics") as the app ingests it."""

    #: the ingest parser: the typed event, or InvalidEvent with the dead-letter reason
    parse: Parser
    #: every field, with its kind as a detection spec declares it (the event's attribute of that name)
    fields: dict[str, str]
    #: the fields a record may leave out (the event's attribute is None then)
    optional: frozenset[str] = field(default_factory=frozenset)


#: contract topic name -> the topic as the app ingests it; a detection spec on one of them refuses
#: what the ingest refuses (streamapp.detections.events.compile_parser)
INPUTS: dict[str, Input] = {
    "logins": Input(parse_login, {"ts": "timestamp", "ip": "string", "user": "string", "success": "bool"}),
    "sensor-readings": Input(
        parse_sensor_reading, {"ts": "timestamp", "sensor_id": "string", "temperature": "number"}
    ),
    "transactions": Input(
        parse_transaction,
        {
            "ts": "timestamp",
            "txn_id": "string",
            "card_id": "string",
            "amount": "number",
            "merchant": "string",
            "country": "string",
        },
        frozenset({"merchant", "country"}),
    ),
    "stock-prices": Input(parse_stock_price, {"ts": "timestamp", "symbol": "string", "price": "number"}),
}
