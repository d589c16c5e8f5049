"""Input events and alerts: parsing and validation of the contract's JSON records."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from time import time
from typing import Any

import orjson

from streamapp.settings import Settings
from streamapp.types import Envelope

__all__ = [
    "Alert",
    "LIMITS",
    "MAX_ID_CHARS",
    "RESERVED_ID_PREFIX",
    "InvalidEvent",
    "Limits",
    "Login",
    "SensorReading",
    "StockPrice",
    "Transaction",
    "User",
    "alert_id_for",
    "configure_limits",
    "decode_envelope",
    "decode_json_object",
    "encode_envelope",
    "event_time",
    "id_problem",
    "parse_login",
    "parse_sensor_reading",
    "parse_stock_price",
    "parse_transaction",
    "parse_user",
    "parse_valid_json",
]

# Epoch seconds after 2100-01-01 are almost surely milliseconds sent by mistake.
_MAX_EPOCH_SECONDS = 4_102_444_800.0


class InvalidEvent(ValueError):
    """A record that cannot be processed; ``str(exc)`` is the dead-letter reason."""


@dataclass(slots=True)
class Limits:
    """What the parsers accept of well-formed but hostile input (settings of the same names)."""

    #: STREAMAPP_MAX_CLOCK_SKEW_SECONDS: an event dated further ahead would move the event clock
    #: there and expire every state
    max_clock_skew_seconds: float = 300.0
    #: STREAMAPP_MAX_AMOUNT and STREAMAPP_MAX_PRICE: sums and means of them stay finite
    max_amount: float = 1e9
    max_price: float = 1e9


#: the limits every parser applies; one object, updated in place by :func:`configure_limits`
LIMITS = Limits()


def configure_limits(settings: Settings) -> None:
    """Apply the worker's settings to every parser (the app calls it once, at start)."""
    LIMITS.max_clock_skew_seconds = float(settings.max_clock_skew_seconds)
    LIMITS.max_amount = float(settings.max_amount)
    LIMITS.max_price = float(settings.max_price)


#: the longest entity id (characters)
MAX_ID_CHARS = 256
#: faust keeps its bookkeeping (offsets; our event clock) under keys with this prefix in the same
#: RocksDB as the states: an entity id like that would read or overwrite them
RESERVED_ID_PREFIX = "__faust"
#: C0 (NUL included), DEL, C1 and the Unicode line and paragraph separators: a database refuses
#: NUL, line protocols and log lines break on the others
_UNSAFE_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def id_problem(value: str) -> str | None:
    """Why ``value`` can never be an entity id (a phrase for a reason), or None when it can."""
    if value.startswith(RESERVED_ID_PREFIX):
        return f"starts with {RESERVED_ID_PREFIX!r}, the prefix of the stream library's own keys"
    unsafe = _UNSAFE_CHARACTER.search(value)
    if unsafe is not None:
        return f"contains the control character U+{ord(unsafe.group()):04X} at position {unsafe.start()}"
    return None


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class Login:
    ts: float
    ip: str
    user: str
    success: bool


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class SensorReading:
    ts: float
    sensor_id: str
    temperature: float


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class Transaction:
    ts: float
    txn_id: str
    card_id: str
    amount: float
    merchant: str | None = None
    country: str | None = None


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class StockPrice:
    ts: float
    symbol: str
    price: float


@dataclass(slots=True, frozen=True)
class User:
    """A `users` record (Avro): name and age, every field of its schema version, and the schema id."""

    ts: float
    name: str
    age: int
    schema_id: int
    fields: dict[str, Any]


@dataclass(slots=True, frozen=True)
class Alert:
    """The value of a record on the ``alerts`` topic."""

    alert_id: str
    kind: str
    key: str
    ts: float
    window_start: float | None
    window_end: float | None
    value: float
    threshold: float
    detail: str

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> Alert:
        return cls(**orjson.loads(data))


def alert_id_for(kind: str, key: str, *parts: object) -> str:
    """A deterministic id: the same rule firing on the same input always gives the same id."""
    text = "|".join([kind, key, *(repr(p) for p in parts)])
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


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


def event_time(obj: dict[str, Any], record_ts: float | None) -> float:
    """Event time in epoch seconds from ``ts`` (number or ISO-8601 with offset), else the record's.

    Never more than ``LIMITS.max_clock_skew_seconds`` ahead of the wall clock, however given.
    """
    raw: Any = obj.get("ts")
    kind = type(raw)
    ceiling = time() + LIMITS.max_clock_skew_seconds
    if (kind is float or kind is int) and 0 <= raw <= ceiling:
        # the common case, checked first (NaN fails the comparison); the ceiling is below the
        # milliseconds cut-off (the skew setting is at most a year)
        return float(raw)
    if raw is None:
        if record_ts is None:
            raise InvalidEvent("field 'ts' is missing and the record has no timestamp")
        if record_ts > ceiling:
            raise InvalidEvent(f"record timestamp (no field 'ts'): {_ahead(record_ts, ceiling)}")
        return float(record_ts)
    if isinstance(raw, bool):
        raise InvalidEvent("field 'ts' must be epoch seconds or an ISO-8601 string, got bool")
    if isinstance(raw, int | float):
        ts = float(raw)
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise InvalidEvent(f"field 'ts' is not an ISO-8601 time: {raw[:40]!r}") from None
        if parsed.tzinfo is None:
            raise InvalidEvent("field 'ts' must carry a UTC offset (e.g. 2026-01-01T00:00:00+00:00)")
        ts = parsed.timestamp()
    else:
        raise InvalidEvent(f"field 'ts' must be epoch seconds or an ISO-8601 string, got {_kind(raw)}")
    if not math.isfinite(ts) or ts < 0:
        raise InvalidEvent(f"field 'ts' is out of range: {raw!r}")
    if ts > ceiling:
        if ts > _MAX_EPOCH_SECONDS:
            raise InvalidEvent(f"field 'ts'={raw!r} looks like milliseconds; send epoch seconds")
        raise InvalidEvent(f"field 'ts': {_ahead(ts, ceiling)}")
    return ts


def _ahead(ts: float, ceiling: float) -> str:
    skew = LIMITS.max_clock_skew_seconds
    try:
        when = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):  # beyond year 9999
        when = f"{ts:.0f} (epoch seconds)"
    return (
        f"event time {when} is {ts - (ceiling - skew):.0f} s ahead of the wall clock "
        f"(STREAMAPP_MAX_CLOCK_SKEW_SECONDS={_number_text(skew)})"
    )


def _number_text(value: float) -> str:
    """A setting's value as a user wrote it: 300, 1000000000, 0.5."""
    return str(int(value)) if value.is_integer() else repr(value)


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _text(obj: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """An entity id: a string of 1 to 256 characters (or absent if not ``required``), see id_problem."""
    value = obj.get(name)
    if type(value) is str and 0 < len(value) <= MAX_ID_CHARS and value.isprintable() and value[0] != "_":
        # the common case, checked first: printable text has no control character, and only
        # ids starting with "_" may carry the reserved prefix (the checks cost about 50 ns)
        return value
    if value is None:
        if required:
            raise InvalidEvent(f"field {name!r} is missing")
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"field {name!r} must be a string, got {_kind(value)}")
    if required and not value:
        raise InvalidEvent(f"field {name!r} must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent(f"field {name!r} is longer than {MAX_ID_CHARS} characters")
    problem = id_problem(value)  # not printable is not yet unsafe: "Zoë 🧑‍💻" has a joiner (U+200D)
    if problem is not None:
        raise InvalidEvent(f"field {name!r} {problem}")
    return value


def _number(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent(f"field {name!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"field {name!r} must be a number, got {_kind(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidEvent(f"field {name!r} must be finite")
    return result


def parse_login(obj: dict[str, Any], record_ts: float | None) -> Login:
    success = obj.get("success")
    if success is None:
        raise InvalidEvent("field 'success' is missing")
    if not isinstance(success, bool):
        raise InvalidEvent(f"field 'success' must be true or false, got {_kind(success)}")
    return Login(
        ts=event_time(obj, record_ts),
        ip=_text(obj, "ip") or "",
        user=_text(obj, "user") or "",
        success=success,
    )


def parse_sensor_reading(obj: dict[str, Any], record_ts: float | None) -> SensorReading:
    temperature = _number(obj, "temperature")
    # below absolute zero or hotter than any sensor survives: a unit or encoding bug upstream
    if not -273.15 <= temperature <= 10_000:
        raise InvalidEvent(f"field 'temperature'={temperature} is outside -273.15..10000")
    return SensorReading(
        ts=event_time(obj, record_ts), sensor_id=_text(obj, "sensor_id") or "", temperature=temperature
    )


def parse_transaction(obj: dict[str, Any], record_ts: float | None) -> Transaction:
    amount = _number(obj, "amount")
    if not 0 <= amount <= LIMITS.max_amount:
        if amount < 0:
            raise InvalidEvent(f"field 'amount'={amount} must not be negative")
        raise InvalidEvent(
            f"field 'amount'={amount:g} exceeds STREAMAPP_MAX_AMOUNT={_number_text(LIMITS.max_amount)}"
        )
    return Transaction(
        ts=event_time(obj, record_ts),
        txn_id=_text(obj, "txn_id") or "",
        card_id=_text(obj, "card_id") or "",
        amount=amount,
        merchant=_text(obj, "merchant", required=False),
        country=_text(obj, "country", required=False),
    )


def parse_stock_price(obj: dict[str, Any], record_ts: float | None) -> StockPrice:
    price = _number(obj, "price")
    if not 0 < price <= LIMITS.max_price:
        if price <= 0:
            raise InvalidEvent(f"field 'price'={price} must be positive")
        raise InvalidEvent(
            f"field 'price'={price:g} exceeds STREAMAPP_MAX_PRICE={_number_text(LIMITS.max_price)}"
        )
    return StockPrice(ts=event_time(obj, record_ts), symbol=_text(obj, "symbol") or "", price=price)


_MAX_AGE = 150


def parse_user(obj: dict[str, Any], record_ts: float | None) -> User:
    """A decoded Avro `users` record, ``{"schema_id": id, "value": datum}``, checked field by field."""
    value, schema_id = obj.get("value"), obj.get("schema_id")
    if not isinstance(schema_id, int):
        raise InvalidEvent("the record carries no schema id")
    if not isinstance(value, dict):
        raise InvalidEvent(f"value must be an Avro record, got {_kind(value)}")
    age = value.get("age")
    if age is None:
        raise InvalidEvent("field 'age' is missing")
    if isinstance(age, bool) or not isinstance(age, int):
        raise InvalidEvent(f"field 'age' must be an integer, got {_kind(age)}")
    if not 0 <= age <= _MAX_AGE:
        raise InvalidEvent(f"field 'age'={age} is outside 0..{_MAX_AGE}")
    return User(
        ts=event_time(value, record_ts),
        name=_text(value, "name") or "",
        age=age,
        schema_id=schema_id,
        fields=value,
    )


Parser = Callable[[dict[str, Any], float | None], Any]


def encode_envelope(envelope: Envelope[Any]) -> bytes:
    """The value of a by-entity record: ``{"src": [partition, offset], "e": event[, "raw": text]}``."""
    wire: dict[str, Any] = {"src": [envelope.partition, envelope.offset], "e": envelope.event}
    if envelope.raw is not None:
        wire["raw"] = envelope.raw
    return orjson.dumps(wire)


def decode_envelope(value: bytes | None, source_topic: str, parse: Parser) -> Envelope[Any]:
    """The envelope of a by-entity record, its event parsed again by the source's ``parse``.

    Only the app writes the by-entity topics; whatever else is found there raises
    :class:`InvalidEvent` with the reason (a forged event must not move a key's event clock:
    the parser bounds its time by the clock skew).
    """
    try:
        wire = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        raise InvalidEvent("record on an internal topic that is not a JSON event") from None
    if not isinstance(wire, dict) or not isinstance(wire.get("e"), dict):
        raise InvalidEvent("record on an internal topic that is not a forwarded event")
    src = wire.get("src")
    if not (isinstance(src, list) and len(src) == 2 and all(type(n) is int and n >= 0 for n in src)):
        raise InvalidEvent("record on an internal topic whose 'src' is not [partition, offset]")
    try:
        event = parse(wire["e"], None)
    except InvalidEvent as exc:
        raise InvalidEvent(f"record on an internal topic with an event ingest refuses: {exc}") from None
    raw = wire.get("raw")
    return Envelope(source_topic, src[0], src[1], event, raw if isinstance(raw, str) else None)
