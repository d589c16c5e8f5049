"""An input event's fields checked one at a time: entity ids, numbers, event time, within the limits."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from time import time
from typing import Any

from streamapp.models.events import InvalidEvent
from streamapp.settings import Settings

# what the models package exports; kind_of, number_field, number_text and text_field are the
# parsers' own field readers
__all__ = [
    "LIMITS",
    "MAX_ID_CHARS",
    "RESERVED_ID_PREFIX",
    "Limits",
    "configure_limits",
    "event_time",
    "id_problem",
]

# Epoch seconds after 2100-01-01 are almost surely milliseconds sent by mistake.
_MAX_EPOCH_SECONDS = 4_102_444_800.0


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
        raise InvalidEvent(f"field 'ts' must be epoch seconds or an ISO-8601 string, got {kind_of(raw)}")
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
        f"(STREAMAPP_MAX_CLOCK_SKEW_SECONDS={number_text(skew)})"
    )


def number_text(value: float) -> str:
    """A setting's value as a user wrote it: 300, 1000000000, 0.5."""
    return str(int(value)) if value.is_integer() else repr(value)


def kind_of(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "bool"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def text_field(obj: dict[str, Any], name: str, *, required: bool = True) -> str | None:
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
        raise InvalidEvent(f"field {name!r} must be a string, got {kind_of(value)}")
    if required and not value:
        raise InvalidEvent(f"field {name!r} must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidEvent(f"field {name!r} is longer than {MAX_ID_CHARS} characters")
    problem = id_problem(value)  # not printable is not yet unsafe: "Zoë 🧑‍💻" has a joiner (U+200D)
    if problem is not None:
        raise InvalidEvent(f"field {name!r} {problem}")
    return value


def number_field(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent(f"field {name!r} is missing")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"field {name!r} must be a number, got {kind_of(value)}")
    result = float(value)
    if not math.isfinite(result):
        raise InvalidEvent(f"field {name!r} must be finite")
    return result
