"""A spec's source records as events: the declared fields, typed, and the filters over them."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from streamapp.detections.spec import Spec
from streamapp.models import InvalidEvent, event_time, id_problem

__all__ = ["COMPARE", "MATCH_CHARS", "Fields", "Filter", "compile_filters", "parse_event"]

Fields = dict[str, Any]
#: characters of a field a ``match`` regex looks at
MATCH_CHARS = 4096


def parse_event(spec: Spec, obj: Any, record_ts: float | None) -> tuple[float, Fields]:
    """(event time, declared fields) of a source record; raises InvalidEvent with the reason."""
    if not isinstance(obj, dict):
        raise InvalidEvent(f"value must be a JSON object, got {type(obj).__name__}")
    fields: Fields = {}
    ts: float | None = None
    for name, kind in spec.fields.items():
        value = obj.get(name)
        if kind == "timestamp":
            ts = event_time({"ts": value}, record_ts)
            fields[name] = ts
            continue
        if value is None:
            raise InvalidEvent(f"field {name!r} is missing (detection {spec.name})")
        if kind == "string":
            if not isinstance(value, str):
                raise InvalidEvent(
                    f"field {name!r} must be a string, got {_kind(value)} (detection {spec.name})"
                )
        elif kind == "number":
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidEvent(
                    f"field {name!r} must be a finite number, got {_kind(value)} (detection {spec.name})"
                )
            value = float(value)
        elif kind == "bool" and not isinstance(value, bool):
            raise InvalidEvent(
                f"field {name!r} must be true or false, got {_kind(value)} (detection {spec.name})"
            )
        fields[name] = value
    if ts is None:
        ts = event_time({}, record_ts)
    key = fields[spec.key]
    if not key:
        raise InvalidEvent(f"field {spec.key!r} (the key) is empty (detection {spec.name})")
    problem = id_problem(key)
    if problem is not None:
        raise InvalidEvent(f"field {spec.key!r} {problem}")
    return ts, fields


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
