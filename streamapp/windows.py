"""Event-time buckets: small sorted [start, count] lists that make one table write per event."""

from __future__ import annotations

import math
from bisect import bisect_left

__all__ = ["EventClock", "add_to_bucket", "bucket_start", "buckets_total", "drop_buckets_before"]

Buckets = list[list[float]]


def bucket_start(ts: float, size: float) -> float:
    """Start of the tumbling bucket of ``size`` seconds (aligned to epoch) holding ``ts``."""
    return float(math.floor(ts / size) * size)


def add_to_bucket(buckets: Buckets, start: float, amount: float = 1) -> None:
    """Add ``amount`` to the bucket starting at ``start``; ``buckets`` stays sorted by start."""
    if buckets and buckets[-1][0] == start:  # the common case: in-order events
        buckets[-1][1] += amount
        return
    i = bisect_left(buckets, start, key=lambda b: b[0])
    if i < len(buckets) and buckets[i][0] == start:
        buckets[i][1] += amount
    else:
        buckets.insert(i, [start, amount])


def buckets_total(buckets: Buckets, start: float, end: float) -> float:
    """Sum of the buckets whose start lies in ``[start, end)``."""
    return sum(b[1] for b in buckets if start <= b[0] < end)


def drop_buckets_before(buckets: Buckets, horizon: float, size: float) -> None:
    """Remove buckets that ended at or before ``horizon`` (expired)."""
    keep = 0
    while keep < len(buckets) and buckets[keep][0] + size <= horizon:
        keep += 1
    if keep:
        del buckets[:keep]


class EventClock:
    """The newest event time this worker has seen: windows older than it minus retention expire.

    Event time rather than wall-clock time, so that replaying last week's topic rebuilds last
    week's windows instead of expiring them on arrival.
    """

    def __init__(self, retention_seconds: float) -> None:
        self.retention_seconds = retention_seconds
        self.newest = 0.0

    def observe(self, ts: float) -> None:
        if ts > self.newest:
            self.newest = ts

    @property
    def horizon(self) -> float:
        """Windows ending at or before this time are expired (0 until events arrive)."""
        return self.newest - self.retention_seconds if self.newest else 0.0
