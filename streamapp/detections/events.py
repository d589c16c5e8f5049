"""A spec's source records as events: the declared fields, typed, and the filters over them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from streamapp.detections.spec import Spec
from streamapp.models import INPUTS, LIMITS, InvalidEvent, decode_json_object, event_time
from streamapp.models.fields import number_text, text_field

__all__ = [
    "COMPARE",
    "MATCH_CHARS",
    "Fields",
    "Filter",
    "Parse",
    "ParseIngested",
    "compile_filters",
    "compile_parser",
    "compile_parsers",
    "parse_event",
]

Fields = dict[str, Any]
#: characters of a field a ``match`` regex looks at
MATCH_CHARS = 4096


Parse = Callable[[Any, float | None], tuple[float, Fields]]
#: (the app ingest's event of a record, the record's value, its timestamp) -> (event time, fields)
ParseIngested = Callable[[Any, bytes | None, float | None], tuple[float, Fields]]


def parse_event(spec: Spec, obj: Any, record_ts: float | None) -> tuple[float, Fields]:
    """(event time, declared fields) of a source record; raises InvalidEvent with the reason."""
    return compile_parser(spec)(obj, record_ts)


def compile_parser(spec: Spec) -> Parse:
    """:func:`parse_event` of one spec, with what it reads of the spec looked up once."""
    return compile_parsers(spec)[0]


def compile_parsers(spec: Spec) -> tuple[Parse, ParseIngested]:
    """(:func:`compile_parser`; for a spec on an input topic of the app, the same from the event the
    app's ingest parsed already (agents.run_detections.handoff), without parsing the record again,
    its JSON decoded again only when the spec declares fields the topic does not have; on another
    topic, the record's JSON decoded and parsed as by the first).

    On a topic of the contract (streamapp.models.INPUTS) the record must first pass the app's
    ingest parser, which gives the reason of a refusal and the values of the contract's fields:
    a spec refuses what the ingest refuses, with the same reason. The other fields are checked
    by their declared kind: the key and an alert id as ids (streamapp.models.fields.text_field),
    numbers finite and within their bounds, the event time within the clock skew.
    """
    name, key, kinds, bounds = spec.name, spec.key, spec.fields, spec.bounds
    source = INPUTS.get(spec.topic)
    ids = {key, spec.data["alert"].get("id")}
    #: the fields the ingest parser's event gives, in their declared order
    taken = tuple(f for f in kinds if source is not None and f in source.fields)
    optional = tuple(f for f in taken if source is not None and f in source.optional)
    #: (field, kind, an id?, min, max) of the fields checked here (bounds None: -/+ STREAMAPP_MAX_AMOUNT)
    own = tuple(
        (field, kind, field in ids, *bounds.get(field, (None, None)))
        for field, kind in kinds.items()
        if field not in taken or field in bounds
    )
    time_field = spec.time_field
    own_time = time_field is not None and time_field not in taken
    suffix = f" (detection {name})"

    def check(obj: dict[str, Any], fields: Fields, record_ts: float | None) -> float | None:
        """The spec's own fields into ``fields``; the event time if one of them is it."""
        ts: float | None = None
        for field, kind, is_id, low, high in own:
            value = obj.get(field)
            if kind == "timestamp":
                ts = fields[field] = _event_time(field, value, record_ts, suffix)
                continue
            if value is None:
                raise InvalidEvent(f"field {field!r} is missing{suffix}")
            if kind == "string":
                if type(value) is not str:
                    raise InvalidEvent(f"field {field!r} must be a string, got {_kind(value)}{suffix}")
                if is_id:
                    try:
                        text_field(obj, field)
                    except InvalidEvent as exc:
                        raise InvalidEvent(f"{exc}{suffix}") from None
            elif kind == "number":
                kind_ = type(value)
                if not (
                    (kind_ is float or kind_ is int)
                    and (-LIMITS.max_amount if low is None else low) <= value
                    and value <= (LIMITS.max_amount if high is None else high)
                ):  # NaN fails too
                    raise InvalidEvent(_number_problem(field, value, low, high) + suffix)
                value = float(value)
            elif kind == "bool" and value is not True and value is not False:
                raise InvalidEvent(f"field {field!r} must be true or false, got {_kind(value)}{suffix}")
            fields[field] = value
        return ts

    if source is None:

        def parse(obj: Any, record_ts: float | None) -> tuple[float, Fields]:
            if not isinstance(obj, dict):
                raise InvalidEvent(f"value must be a JSON object, got {type(obj).__name__}")
            fields: Fields = {}
            ts = check(obj, fields, record_ts)
            return (ts if ts is not None else _event_time(None, None, record_ts, suffix)), fields

        def parse_record(event: Any, value: bytes | None, record_ts: float | None) -> tuple[float, Fields]:
            return parse(decode_json_object(value), record_ts)

        return parse, parse_record

    ingest, get, taken_time = source.parse, _getter(taken), time_field in taken

    def from_event(event: Any, obj: dict[str, Any] | None, record_ts: float | None) -> tuple[float, Fields]:
        fields = get(event)
        for field in optional:
            if fields[field] is None:
                raise InvalidEvent(f"field {field!r} is missing{suffix}")
        ts = check(obj, fields, record_ts) if own and obj is not None else None
        if taken_time:
            return event.ts, fields
        if own_time and ts is not None:
            return ts, fields
        return _event_time(None, None, record_ts, suffix), fields

    def parse_contract(obj: Any, record_ts: float | None) -> tuple[float, Fields]:
        if not isinstance(obj, dict):
            raise InvalidEvent(f"value must be a JSON object, got {type(obj).__name__}")
        return from_event(ingest(obj, record_ts), obj, record_ts)  # InvalidEvent: the ingest's reason

    def parse_ingested(event: Any, value: bytes | None, record_ts: float | None) -> tuple[float, Fields]:
        return from_event(event, decode_json_object(value) if own else None, record_ts)

    return parse_contract, parse_ingested


def _getter(names: tuple[str, ...]) -> Callable[[Any], Fields]:
    """``lambda e: {"ts": e.ts, ...}`` of an event's attributes ``names``: a dict display, a quarter of
    what ``dict(zip(names, attrgetter(*names)(e)))`` costs per event. The names are the contract's
    (streamapp.models.INPUTS), never a spec's text."""
    if not all(name.isidentifier() for name in names):
        raise ValueError(f"not attribute names: {names}")
    getter: Callable[[Any], Fields] = eval(  # noqa: S307
        "lambda e: {" + ", ".join(f"{name!r}: e.{name}" for name in names) + "}"
    )
    return getter


def _event_time(field: str | None, value: Any, record_ts: float | None, suffix: str) -> float:
    """The event time of a timestamp field (None: the record's), with the ingest's checks and reasons."""
    try:
        return event_time({} if field is None else {"ts": value}, record_ts)
    except InvalidEvent as exc:
        reason = str(exc) if field in (None, "ts") else str(exc).replace("'ts'", repr(field))
        raise InvalidEvent(reason + suffix) from None


def _number_problem(field: str, value: Any, low: float | None, high: float | None) -> str:
    """Why a number field's value is refused (it is: not a number, or outside its bounds)."""
    try:
        finite = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    except OverflowError:  # an int beyond any float (Python input: JSON gives none)
        finite = False
    if not finite:
        return f"field {field!r} must be a finite number, got {_kind(value)}"
    limit = LIMITS.max_amount
    if low is None and high is None:
        if value > limit:
            return f"field {field!r}={value:g} exceeds STREAMAPP_MAX_AMOUNT={number_text(limit)}"
        return f"field {field!r}={value:g} is below -STREAMAPP_MAX_AMOUNT=-{number_text(limit)}"
    low, high = -limit if low is None else low, limit if high is None else high
    return f"field {field!r}={value:g} is outside {low:g}..{high:g}"


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


Filter = Callable[[Fields], bool]
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: _same(a, b),
    "!=": lambda a, b: not _same(a, b),
}


def _same(a: Any, b: Any) -> bool:
    # true is not 1 here: a bool equals only a bool
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def compile_filters(filters: Iterable[dict[str, Any]]) -> Filter:
    """One predicate for a list of filters (all must hold)."""
    tests: list[Filter] = []
    for flt in filters:
        name = flt["field"]
        op, arg = next((k, v) for k, v in flt.items() if k != "field")
        tests.append(_filter(name, op, arg))
    if not tests:
        return lambda fields: True
    if len(tests) == 1:  # the common case: the test itself, without a generator per event
        return tests[0]
    return lambda fields: all(test(fields) for test in tests)


def _filter(name: str, op: str, arg: Any) -> Filter:
    if op in COMPARE:
        compare = COMPARE[op]
        return lambda f: compare(f[name], arg)
    if op == "in":
        options = list(arg)
        return lambda f: any(COMPARE["=="](f[name], o) for o in options)
    if op == "is":
        return lambda f: f[name] is arg
    if op == "contains":
        return lambda f: arg in f[name]
    if op == "match":
        pattern = re.compile(arg)
        return lambda f: pattern.search(f[name][:MATCH_CHARS]) is not None
    raise ValueError(f"unknown filter {op!r}")
