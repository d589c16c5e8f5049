"""Well-formed hostile input at ingest: future event times, huge numbers and unsafe ids are refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest

from streamapp.models import (
    LIMITS,
    InvalidEvent,
    configure_limits,
    decode_json_object,
    event_time,
    id_problem,
    parse_login,
    parse_sensor_reading,
    parse_stock_price,
    parse_transaction,
    parse_user,
    parse_valid_json,
)
from streamapp.settings import Settings, SettingsError, load_settings

FAR = datetime(2090, 1, 1, tzinfo=UTC).timestamp()


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    """Each test starts from and leaves the default limits (they are process-wide)."""
    configure_limits(Settings())
    yield
    configure_limits(Settings())


def _refusal(parse, obj, record_ts=None) -> str:
    """The dead-letter reason; the short path must refuse too (None: the full path gives the reason)."""
    assert parse_valid_json(orjson.dumps(obj), record_ts, parse, max_bytes=1 << 20) is None
    with pytest.raises(InvalidEvent) as info:
        parse(decode_json_object(orjson.dumps(obj)), record_ts)
    return str(info.value)


def _login(**fields):
    return {"ts": time.time(), "ip": "10.0.0.1", "user": "ann", "success": False, **fields}


# -- settings ------------------------------------------------------------------------------------
def test_limit_settings_default_and_apply():
    settings = load_settings({})
    assert (settings.max_clock_skew_seconds, settings.max_amount, settings.max_price) == (300, 1e9, 1e9)
    configure_limits(
        load_settings({"STREAMAPP_MAX_CLOCK_SKEW_SECONDS": "60", "STREAMAPP_MAX_AMOUNT": "5000",
                       "STREAMAPP_MAX_PRICE": "2.5e3"})
    )  # fmt: skip
    assert (LIMITS.max_clock_skew_seconds, LIMITS.max_amount, LIMITS.max_price) == (60, 5000, 2500)


@pytest.mark.parametrize(
    "name", ["STREAMAPP_MAX_CLOCK_SKEW_SECONDS", "STREAMAPP_MAX_AMOUNT", "STREAMAPP_MAX_PRICE"]
)
@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "lots", "1e300"])
def test_bad_limit_settings_are_refused_naming_the_variable(name, value):
    with pytest.raises(SettingsError) as info:
        load_settings({name: value})
    assert str(info.value).startswith(f"{name}={value!r} is invalid: must be a positive number")


# -- event time ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ts", [FAR, int(FAR), "2090-01-01T00:00:00+00:00", "2090-01-01T01:00:00+01:00"])
def test_event_time_far_ahead_is_refused_however_given(ts):
    reason = _refusal(parse_login, _login(ts=ts))
    ahead = FAR - time.time()
    assert reason.startswith("field 'ts': event time 2090-01-01T00:00:00Z is ")
    assert reason.endswith(" s ahead of the wall clock (STREAMAPP_MAX_CLOCK_SKEW_SECONDS=300)")
    assert abs(int(reason.split(" is ")[1].split(" s ")[0]) - ahead) < 60


def test_record_timestamp_far_ahead_is_refused_when_ts_is_absent():
    obj = _login()
    del obj["ts"]
    reason = _refusal(parse_login, obj, record_ts=FAR)
    assert reason.startswith("record timestamp (no field 'ts'): event time 2090-01-01T00:00:00Z is ")
    assert "STREAMAPP_MAX_CLOCK_SKEW_SECONDS=300" in reason
    # a Kafka timestamp beyond year 9999 still gets a reason, not an error
    assert "(epoch seconds) is" in _refusal(parse_login, obj, record_ts=9e15)


def test_every_topic_applies_the_clock_bound():
    far = {"ts": FAR}
    objs = [
        (parse_sensor_reading, {**far, "sensor_id": "s1", "temperature": 20.0}),
        (parse_transaction, {**far, "txn_id": "t1", "card_id": "c1", "amount": 5.0}),
        (parse_stock_price, {**far, "symbol": "ACME", "price": 5.0}),
    ]
    for parse, obj in objs:
        assert "ahead of the wall clock" in _refusal(parse, obj)
    user = {"schema_id": 1, "value": {"name": "ann", "age": 30}}
    with pytest.raises(InvalidEvent, match="record timestamp .* ahead of the wall clock"):
        parse_user(user, FAR)


def test_event_time_within_the_skew_is_kept_exactly():
    now = time.time()
    for ts in (now, now + 290, now - 86400 * 365):
        assert event_time({"ts": ts}, None) == ts
        assert parse_valid_json(orjson.dumps(_login(ts=ts)), None, parse_login, 1 << 20).ts == ts
    assert event_time({}, now + 290) == now + 290


def test_clock_skew_setting_moves_the_bound():
    now = time.time()
    configure_limits(Settings(max_clock_skew_seconds=3600))
    assert event_time({"ts": now + 3000}, None) == now + 3000
    configure_limits(Settings(max_clock_skew_seconds=10))
    with pytest.raises(InvalidEvent, match=r"STREAMAPP_MAX_CLOCK_SKEW_SECONDS=10\)"):
        event_time({"ts": now + 3000}, None)


def test_milliseconds_still_get_their_own_hint():
    assert "looks like milliseconds" in _refusal(parse_login, _login(ts=1_700_000_000_000))


# -- numbers -------------------------------------------------------------------------------------
def test_amount_above_the_ceiling_is_refused_naming_the_setting():
    txn = {"ts": time.time(), "txn_id": "t1", "card_id": "c1"}
    assert parse_transaction({**txn, "amount": 1e9}, None).amount == 1e9
    reason = _refusal(parse_transaction, {**txn, "amount": 1e300})
    assert reason == "field 'amount'=1e+300 exceeds STREAMAPP_MAX_AMOUNT=1000000000"
    configure_limits(Settings(max_amount=100.0))
    assert _refusal(parse_transaction, {**txn, "amount": 100.5}).endswith("STREAMAPP_MAX_AMOUNT=100")
    assert "must not be negative" in _refusal(parse_transaction, {**txn, "amount": -1})


def test_price_above_the_ceiling_is_refused_naming_the_setting():
    tick = {"ts": time.time(), "symbol": "ACME"}
    assert parse_stock_price({**tick, "price": 1e9}, None).price == 1e9
    assert parse_stock_price({**tick, "price": 5e-324}, None).price == 5e-324
    reason = _refusal(parse_stock_price, {**tick, "price": 1.5e308})
    assert reason == "field 'price'=1.5e+308 exceeds STREAMAPP_MAX_PRICE=1000000000"
    assert "must be positive" in _refusal(parse_stock_price, {**tick, "price": 0})


# -- identifiers ---------------------------------------------------------------------------------
UNSAFE = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", UNSAFE)
@pytest.mark.parametrize("field", ["ip", "user"])
def test_ids_with_control_characters_are_refused_naming_the_field(field, char):
    reason = _refusal(parse_login, _login(**{field: f"ann{char}x"}))
    assert reason == f"field {field!r} contains the control character U+{ord(char):04X} at position 3"
    assert char not in reason  # the reason reaches logs and headers: no raw control character


@pytest.mark.parametrize("value", ["__faust\x00offset__", "__faust\x00streamapp-event-clock__",
                                   "__faust", "__faustian"])  # fmt: skip
def test_ids_with_the_stream_library_prefix_are_refused(value):
    reason = _refusal(parse_login, _login(user=value))
    assert reason.startswith("field 'user' starts with '__faust'")


def test_every_id_field_of_every_topic_is_checked():
    now = time.time()
    cases = [
        (parse_login, _login(), ["ip", "user"]),
        (parse_sensor_reading, {"ts": now, "sensor_id": "s1", "temperature": 1.0}, ["sensor_id"]),
        (parse_transaction, {"ts": now, "txn_id": "t", "card_id": "c", "amount": 1.0,
                             "merchant": "m", "country": "NL"},
         ["txn_id", "card_id", "merchant", "country"]),
        (parse_stock_price, {"ts": now, "symbol": "ACME", "price": 1.0}, ["symbol"]),
    ]  # fmt: skip
    for parse, obj, fields in cases:
        parse(obj, None)
        for field in fields:
            for bad in ("a\x00b", "__faust\x00offset__", "line\u2028break"):
                assert _refusal(parse, {**obj, field: bad}).startswith(f"field {field!r} ")
    user = {"schema_id": 1, "value": {"name": "x\nadmin", "age": 30}}
    with pytest.raises(InvalidEvent, match="field 'name' contains the control character U\\+000A"):
        parse_user(user, now)


@pytest.mark.parametrize(
    "value",
    ["_ann", "__fausT", "_faust", "ann_faust", "Zoë", "👩‍💻 dev", "名前", "a b", "soft\u00adhyphen",
     "x\u200by", "\u00a0nbsp", "O'Brien \"quoted\" \\ back,slash=eq"],
)  # fmt: skip
def test_safe_ids_pass_unchanged(value):
    assert id_problem(value) is None
    assert parse_login(_login(user=value), None).user == value
    assert parse_valid_json(orjson.dumps(_login(user=value)), None, parse_login, 1 << 20).user == value
