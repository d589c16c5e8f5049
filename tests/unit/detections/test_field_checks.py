"""A spec's declared fields refuse hostile records: on the app's topics exactly what its ingest refuses."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.detections.events import compile_parser, compile_parsers
from streamapp.detections.spec import Spec, SpecInvalid, load_file, load_text
from streamapp.models import INPUTS, InvalidEvent, configure_limits
from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
PORT_SCAN = ROOT / "detections" / "port_scan.yaml"
#: a price spike per symbol: stock-prices has no shipped spec
PRICES = """
name: price_spike
version: 1
severity: low
source: {topic: stock-prices, fields: {ts: timestamp, symbol: string, price: number}}
key: symbol
condition: {type: zscore, field: price, value: 4}
alert: {text: "{key} at {price}"}
"""
#: every shipped spec, and PRICES, by its source topic
SPECS: dict[str, list[Spec]] = {"stock-prices": [load_text(PRICES)]}
for _path in sorted((ROOT / "detections").glob("*.yaml")):
    _spec = load_file(_path)
    SPECS.setdefault(_spec.topic, []).append(_spec)
NOW = time.time()
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def default_limits() -> Iterator[None]:
    """Each test starts from and leaves the default limits (they are process-wide)."""
    configure_limits(Settings())
    yield
    configure_limits(Settings())


# -- hostile values ------------------------------------------------------------------------------
IDS = st.one_of(
    st.sampled_from(
        ["ann", "10.0.0.1", "x" * 10_000, "é" * 256, "é" * 257, "\x00", "a\x00b", "\u202e", "Zoë 🧑‍💻",
         "\u2028", "\x85", "\x7f", "__faust", "__faust\x00offset__", "_ok", "", " ", "\ufeff", "🧑‍💻" * 90]
    ),
    st.text(max_size=300),
    st.sampled_from([1, 0, 1.5, True, False, None, [], {}, ["ann"]]),
)  # fmt: skip
NUMBERS = st.one_of(
    st.sampled_from(
        [1e300, -1e300, -1, -0.0, 0, 1e9, 1e9 + 1, 2**63, -273.15, -273.16, 10_000, 10_000.5,
         "NaN", "Infinity", "1e3", "12", True, False, None, [1], {}]
    ),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
)  # fmt: skip
TIMES = st.one_of(
    st.sampled_from(
        [NOW, NOW - 86400, NOW + 200, NOW + 400, NOW + 1e6, 4_102_444_801, 1.7e12, -1, -0.5, 0,
         "2026-01-01T00:00:00+00:00", "2090-01-01T00:00:00+00:00", "2026-01-01T00:00:00",
         "yesterday", "", True, None, [NOW], 1e300]
    ),
    st.floats(min_value=0, max_value=NOW + 200),
)  # fmt: skip
BOOLS = st.sampled_from([True, False, 1, 0, "true", None, []])
#: what a field of each kind may hold in a hostile record
VALUES = {"string": IDS, "number": NUMBERS, "timestamp": TIMES, "bool": BOOLS}
GOOD: dict[str, dict[str, Any]] = {
    "logins": {"ts": NOW, "ip": "10.0.0.1", "user": "ann", "success": False},
    "sensor-readings": {"ts": NOW, "sensor_id": "s-1", "temperature": 21.5},
    "transactions": {"ts": NOW, "txn_id": "t-1", "card_id": "c-1", "amount": 12.5},
    "stock-prices": {"ts": NOW, "symbol": "ACME", "price": 12.5},
}
ABSENT = object()


@st.composite
def hostile(draw: st.DrawFn, topic: str) -> dict[str, Any]:
    """A well-formed record of ``topic`` (as a worker decodes it): some fields hostile or absent."""
    record = dict(GOOD[topic])
    for field, kind in INPUTS[topic].fields.items():
        if draw(st.booleans()):
            value = draw(st.one_of(VALUES[kind], st.just(ABSENT)))
            if value is ABSENT:
                record.pop(field, None)
            else:
                record[field] = value
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(record))  # what the worker parses
    return decoded


#: how far ahead of the wall clock a refused time is: it moves between two calls
_AHEAD = re.compile(r" is \d+ s ahead ")


def _outcome(parse: Any, record: dict[str, Any], record_ts: float | None) -> tuple[str, Any]:
    try:
        return "accepted", parse(record, record_ts)
    except InvalidEvent as exc:
        return "refused", str(exc)


# -- the app's topics: the spec refuses what the ingest refuses -----------------------------------
@pytest.mark.parametrize("topic", ["logins", "sensor-readings", "transactions", "stock-prices"])
@PROPERTY
@given(data=st.data())
def test_specs_on_the_app_topics_refuse_exactly_what_the_ingest_refuses(
    topic: str, data: st.DataObject
) -> None:
    record = data.draw(hostile(topic))
    record_ts = data.draw(st.sampled_from([None, NOW, NOW + 1e6]))
    ingest, event = _outcome(INPUTS[topic].parse, record, record_ts)
    assert len(SPECS[topic]) >= (2 if topic != "stock-prices" else 1)
    for spec in SPECS[topic]:
        got, parsed = _outcome(compile_parser(spec), record, record_ts)
        assert (got, spec.name) == (ingest, spec.name)
        if got == "refused":  # the same reason, word for word (but the wall clock's move between the calls)
            assert _AHEAD.sub("", parsed) == _AHEAD.sub("", event)
            continue
        ts, fields = parsed
        assert ts == event.ts
        assert fields == {field: getattr(event, field) for field in spec.fields}
        # what the ingest hands over (its event) gives the same, without parsing the record again
        from_ingest = compile_parsers(spec)[1]
        assert from_ingest(event, orjson.dumps(record), record_ts) == parsed


def test_the_hostile_values_of_the_brief_are_refused_by_both() -> None:
    spec = load_file(ROOT / "detections" / "amount_spike.yaml")
    parse = compile_parser(spec)
    good = GOOD["transactions"]
    cases = {
        "card_id": ("x" * 10_000, "field 'card_id' is longer than 256 characters"),
        "txn_id": ("\x00", "field 'txn_id' contains the control character U+0000 at position 0"),
        "merchant": ("__faust\x00", "field 'merchant' starts with '__faust'"),
        "amount": (1e300, "field 'amount'=1e+300 exceeds STREAMAPP_MAX_AMOUNT=1000000000"),
        "country": ("\u2028", "field 'country' contains the control character U+2028 at position 0"),
        "ts": ("2090-01-01T00:00:00+00:00", "field 'ts': event time 2090-01-01T00:00:00Z is "),
    }  # fmt: skip
    for field, (value, reason) in cases.items():
        with pytest.raises(InvalidEvent) as info:
            parse({**good, field: value}, None)
        assert str(info.value).startswith(reason)
    # a merchant the spec does not declare is still checked: the ingest refuses the record
    assert "merchant" not in spec.fields
    # ids the ingest takes are taken: right-to-left override and emoji with joiners are not control characters
    assert (
        parse({**good, "card_id": "Zoë 🧑‍💻 \u202egnp.exe"}, None)[1]["card_id"] == "Zoë 🧑‍💻 \u202egnp.exe"
    )


def test_a_declared_field_of_the_contract_keeps_the_contract_type() -> None:
    text = (ROOT / "detections" / "amount_spike.yaml").read_text()
    with pytest.raises(SpecInvalid) as info:
        load_text(text.replace("card_id: string", "card_id: number"), "d.yaml")
    assert str(info.value.errors[0]) == (
        "d.yaml:17: source.fields.card_id: 'card_id' of transactions is a string field "
        "(docs/contract.md), not number"
    )


def test_a_field_beyond_the_contract_is_checked_by_its_kind_after_the_ingest() -> None:
    text = (ROOT / "detections" / "card_velocity.yaml").read_text()
    spec = load_text(
        text.replace("amount: number", "amount: {type: number, max: 500}\n    channel: string").replace(
            "key: card_id", "key: channel"
        )
    )
    parse, good = compile_parser(spec), {**GOOD["transactions"], "channel": "web"}
    assert parse(good, None)[1] == {
        "ts": NOW,
        "txn_id": "t-1",
        "card_id": "c-1",
        "amount": 12.5,
        "channel": "web",
    }
    refused = {
        "card_id": ("a\x00b", "field 'card_id' contains the control character U+0000 at position 1"),
        "amount": (-1, "field 'amount'=-1.0 must not be negative"),
        "channel": ("__faust", "field 'channel' starts with '__faust', the prefix of the stream library's "
                    "own keys (detection card_velocity)"),
    }  # fmt: skip
    for field, (value, reason) in refused.items():
        assert _outcome(parse, {**good, field: value}, None) == ("refused", reason)
    assert _outcome(parse, {**good, "amount": 600}, None) == (
        "refused",
        "field 'amount'=600 is outside -1e+09..500 (detection card_velocity)",
    )
    assert _outcome(parse, {k: v for k, v in good.items() if k != "channel"}, None) == (
        "refused",
        "field 'channel' is missing (detection card_velocity)",
    )
    # from the ingest's event, the record decoded again for the field the topic does not have
    from_ingest = compile_parsers(spec)[1]
    event = INPUTS["transactions"].parse(good, None)
    assert from_ingest(event, orjson.dumps(good), None) == parse(good, None)
    with pytest.raises(InvalidEvent, match="field 'channel' is missing"):
        from_ingest(event, orjson.dumps(GOOD["transactions"]), None)


def test_an_optional_field_of_the_contract_is_required_once_declared() -> None:
    text = (ROOT / "detections" / "amount_spike.yaml").read_text()
    parse = compile_parser(load_text(text.replace("amount: number", "amount: number\n    merchant: string")))
    assert parse({**GOOD["transactions"], "merchant": "m"}, None)[1]["merchant"] == "m"
    assert _outcome(parse, GOOD["transactions"], None) == (
        "refused",
        "field 'merchant' is missing (detection amount_spike)",
    )


# -- other topics: the declared kinds bring the same protections --------------------------------
FLOW = {"ts": NOW, "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "dst_port": 22, "proto": "tcp"}


@PROPERTY
@given(value=IDS)
def test_the_key_of_a_spec_only_topic_is_checked_as_an_ingest_id(value: Any) -> None:
    parse = compile_parser(load_file(PORT_SCAN))
    # the reference: the ingest's own id field (logins' ip) with the same value
    ingest, _ = _outcome(INPUTS["logins"].parse, {**GOOD["logins"], "ip": value}, None)
    got, parsed = _outcome(parse, {**FLOW, "src_ip": value}, None)
    assert got == ingest
    if got == "refused" and isinstance(value, str):
        _, reason = _outcome(INPUTS["logins"].parse, {**GOOD["logins"], "ip": value}, None)
        assert parsed == reason.replace("'ip'", "'src_ip'") + " (detection port_scan)"


def test_numbers_are_finite_not_bool_and_within_the_default_bound() -> None:
    parse = compile_parser(load_file(PORT_SCAN))
    refused = {
        1e300: "field 'dst_port'=1e+300 exceeds STREAMAPP_MAX_AMOUNT=1000000000",
        -1e10: "field 'dst_port'=-1e+10 is below -STREAMAPP_MAX_AMOUNT=-1000000000",
        True: "field 'dst_port' must be a finite number, got bool",
        "NaN": "field 'dst_port' must be a finite number, got string",
        float("nan"): "field 'dst_port' must be a finite number, got float",
        float("-inf"): "field 'dst_port' must be a finite number, got float",
        10**400: "field 'dst_port' must be a finite number, got int",
    }
    for value, reason in refused.items():
        assert _outcome(parse, {**FLOW, "dst_port": value}, None) == (
            "refused",
            f"{reason} (detection port_scan)",
        )
    assert parse({**FLOW, "dst_port": -1e9}, None)[1]["dst_port"] == -1e9
    configure_limits(Settings(max_amount=1000.0))  # the bound follows the setting, read when checked
    assert _outcome(parse, {**FLOW, "dst_port": 1001}, None)[1].startswith(
        "field 'dst_port'=1001 exceeds STREAMAPP_MAX_AMOUNT=1000 "
    )


def test_min_and_max_bound_a_number_field() -> None:
    text = PORT_SCAN.read_text().replace("dst_port: number", "dst_port: {type: number, min: 0, max: 65535}")
    parse = compile_parser(load_text(text))
    assert parse({**FLOW, "dst_port": 65535}, None)[1]["dst_port"] == 65535.0
    for value in (-1, 65536, 1e300):
        assert _outcome(parse, {**FLOW, "dst_port": value}, None)[1] == (
            f"field 'dst_port'={float(value):g} is outside 0..65535 (detection port_scan)"
        )


def test_an_alert_id_is_checked_as_an_id_other_strings_as_strings() -> None:
    spec = load_text(
        """
name: spike
version: 1
severity: low
source: {topic: payments, fields: {ts: timestamp, ref: string, card: string, amount: number, note: string}}
key: card
condition: {type: ratio, field: amount, value: 10}
alert: {id: ref, text: "{ref} {amount}"}
"""
    )
    parse = compile_parser(spec)
    good = {"ts": NOW, "ref": "r-1", "card": "c", "amount": 5, "note": "free text"}
    assert _outcome(parse, {**good, "ref": "x" * 257}, None) == (
        "refused",
        "field 'ref' is longer than 256 characters (detection spike)",
    )
    assert _outcome(parse, {**good, "card": ""}, None) == (
        "refused",
        "field 'card' must not be empty (detection spike)",
    )
    # a string that is neither the key nor an id is taken as sent (the record size bounds it)
    assert parse({**good, "note": "line\nbreak" * 1000}, None)[1]["note"] == "line\nbreak" * 1000


def test_the_event_time_has_the_ingest_ceiling_under_its_own_name() -> None:
    text = PORT_SCAN.read_text().replace("ts: timestamp", "time: timestamp")
    parse = compile_parser(load_text(text))
    flow = {k: v for k, v in FLOW.items() if k != "ts"}
    got = _outcome(parse, {**flow, "time": NOW + 1e6}, None)[1]
    assert got.startswith("field 'time': event time ") and got.endswith(
        "(STREAMAPP_MAX_CLOCK_SKEW_SECONDS=300) (detection port_scan)"
    )
    assert (
        _outcome(parse, {**flow, "time": -5}, None)[1]
        == "field 'time' is out of range: -5 (detection port_scan)"
    )
    assert parse({**flow, "time": "2026-01-01T00:00:00+00:00"}, None)[0] == 1767225600.0
    # absent: the record's timestamp, with the same ceiling
    assert _outcome(parse, flow, NOW + 1e6)[1].startswith("record timestamp (no field 'time'): event time ")


# -- the schema's min and max --------------------------------------------------------------------
def _errors(text: str) -> list[str]:
    with pytest.raises(SpecInvalid) as caught:
        load_text(text, "d.yaml")
    return [str(e) for e in caught.value.errors]


def test_bounds_are_validated_with_file_and_line() -> None:
    text = PORT_SCAN.read_text()
    assert _errors(text.replace("dst_port: number", "dst_port: {type: number, min: 10, max: 5}")) == [
        "d.yaml:15: source.fields.dst_port.min: min 10 is above max 5"
    ]
    assert _errors(text.replace("proto: string", "proto: {type: string, max: 5}")) == [
        "d.yaml:16: source.fields.proto: min and max bound number fields only; 'proto' is string"
    ]
    assert _errors(text.replace("dst_port: number", "dst_port: {type: number, mn: 0}")) == [
        "d.yaml:15: source.fields.dst_port: Additional properties are not allowed ('mn' was unexpected)"
    ]
    assert _errors(text.replace("dst_port: number", "dst_port: {type: number, max: 1.0e+16}")) == [
        "d.yaml:15: source.fields.dst_port.max: 1e+16 is greater than the maximum of 1000000000000000.0"
    ]


def test_a_record_handed_over_on_a_topic_outside_the_contract_is_decoded_and_parsed_alike() -> None:
    spec = load_file(PORT_SCAN)
    parse, from_record = compile_parsers(spec)
    hostile = {**FLOW, "src_ip": "10.0.0.1\u202e", "dst_port": 1e300}
    for record in (FLOW, {**FLOW, "dst_port": 65535}, hostile):
        assert _outcome(lambda obj, ts: from_record(None, orjson.dumps(obj), ts), record, None) == _outcome(
            parse, record, None
        )
    for value in (b"[1, 2]", b'"flow"', b"{", None):
        with pytest.raises(InvalidEvent):
            from_record(None, value, None)
