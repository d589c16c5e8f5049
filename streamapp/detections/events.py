"""A spec's source records as events: the declared fields, typed, and the filters over them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from streamapp.detections.spec import Spec
from streamapp.models import InvalidEvent, event_time, id_problem

__all__ = [
    "COMPARE",
    "MATCH_CHARS",
    "Fields",
    "Filter",
    "Parse",
    "compile_filters",
    "compile_parser",
    "parse_event",
]

Fields = dict[str, Any]
#: characters of a field a ``match`` regex looks at
MATCH_CHARS = 4096


Parse = Callable[[Any, float | None], tuple[float, Fields]]


def parse_event(spec: Spec, obj: Any, record_ts: float | None) -> tuple[float, Fields]:
    """(event time, declared fields) of a source record; raises InvalidEvent with the reason."""
    return compile_parser(spec)(obj, record_ts)


def compile_parser(spec: Spec) -> Parse:
    """:func:`parse_event` of one spec, with what it reads of the spec looked up once."""
    declared = tuple(spec.fields.items())
    name, key = spec.name, spec.key

    def parse(obj: Any, record_ts: float | None) -> tuple[float, Fields]:
        if not isinstance(obj, dict):
            raise InvalidEvent(f"value must be a JSON object, got {type(obj).__name__}")
        fields: Fields = {}
        ts: float | None = None
        for field, kind in declared:
            value = obj.get(field)
            if kind == "timestamp":
                ts = fields[field] = event_time({"ts": value}, record_ts)
                continue
            if value is None:
                raise InvalidEvent(f"field {field!r} is missing (detection {name})")
            if kind == "string":
                if not isinstance(value, str):
                    raise InvalidEvent(
                        f"field {field!r} must be a string, got {_kind(value)} (detection {name})"
                    )
            elif kind == "number":
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise InvalidEvent(
                        f"field {field!r} must be a finite number, got {_kind(value)} (detection {name})"
                    )
                value = float(value)
            elif kind == "bool" and value is not True and value is not False:
                raise InvalidEvent(
                    f"field {field!r} must be true or false, got {_kind(value)} (detection {name})"
                )
            fields[field] = value
        if ts is None:
            ts = event_time({}, record_ts)
        entity = fields[key]
        if not entity:
            raise InvalidEvent(f"field {key!r} (the key) is empty (detection {name})")
        problem = id_problem(entity)
        if problem is not None:
            raise InvalidEvent(f"field {key!r} {problem}")
        return ts, fields

    return parse


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
