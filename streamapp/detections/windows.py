"""The windows and aggregates of a threshold condition: which windows hold an event, and a window's value."""

from __future__ import annotations

import math
from typing import Any

import orjson

__all__ = ["aggregate", "window_starts"]


def aggregate(fn: str, values: list[Any]) -> float:
    """The aggregate of a window's values (in event-time order)."""
    if fn == "count":
        return float(len(values))
    if fn == "distinct_count":
        return float(len({orjson.dumps(v) for v in values}))
    if not values:
        return 0.0
    if fn == "sum":
        return float(sum(values))
    if fn == "min":
        return float(min(values))
    if fn == "max":
        return float(max(values))
    n = len(values)
    mean = sum(values) / n
    if fn == "mean":
        return float(mean)
    if fn == "stddev":
        return math.sqrt(max(0.0, sum(v * v for v in values) / n - mean * mean))
    raise ValueError(f"unknown aggregate {fn!r}")


def window_starts(wtype: str, ts: float, size: float, advance: float) -> list[float]:
    """Starts of the tumbling or hopping windows [start, start + size) holding ``ts``, oldest first."""
    if wtype == "tumbling":
        return [math.floor(ts / size) * size]
    last = math.floor(ts / advance)
    starts = []
    k = last
    while k * advance > ts - size:
        starts.append(k * advance)
        k -= 1
    return sorted(s for s in starts if s <= ts < s + size)
