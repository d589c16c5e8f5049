"""Event-time buckets: small sorted [start, count] lists that make one table write per event."""

from __future__ import annotations

import math
from bisect import bisect_left

__all__ = [
    "SWEEP_INTERVAL_SECONDS",
    "SWEEP_WORK_SHARE",
    "EventClock",
    "add_to_bucket",
    "bucket_start",
    "buckets_total",
    "drop_buckets_before",
    "next_sweep_in",
]

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


#: expiry sweeps (agents/expire_windows.py): seconds from the start of one to the next, at least
SWEEP_INTERVAL_SECONDS = 5.0
#: on large tables sweeps are spaced so that their work is at most this share of the time
SWEEP_WORK_SHARE = 0.01


def next_sweep_in(started: float, busy: float, now: float) -> float:
    """Seconds to wait before the next sweep: the interval, or longer after a sweep of much work.

    A sweep reads every key; a table of 100,000 keys costs about 0.2 s of work, which every
    5 s would be 4% of the worker. Keys only need to go eventually (the views already hide
    expired windows), so the next sweep waits until the work was at most 1% of the time.
    """
    return max(0.0, started + max(SWEEP_INTERVAL_SECONDS, busy / SWEEP_WORK_SHARE) - now)
