"""Prometheus metrics of the contract, shared by agents and the web view that serves them."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

__all__ = [
    "ALERTS_TOTAL",
    "CONSUMER_LAG",
    "DEAD_LETTERS_TOTAL",
    "EVENTS_TOTAL",
    "EVENT_LAG_SECONDS",
    "EXPIRED_EVENTS_TOTAL",
    "LATE_EVENTS_TOTAL",
    "PARTITION_STALLED",
    "READY",
    "RECOMMENDED_WORKERS",
    "SKIPPED_ALERTS_TOTAL",
    "STATE_RESETS_TOTAL",
    "WEB_ERRORS_TOTAL",
    "observe_many",
]

# The `*_created` series (one per counter and histogram child) double the scrape for a timestamp
# that Prometheus does not use.
disable_created_metrics()

EVENTS_TOTAL = Counter("streamapp_events", "Valid input events processed", ["topic"])
ALERTS_TOTAL = Counter("streamapp_alerts", "Alerts published", ["kind"])
DEAD_LETTERS_TOTAL = Counter("streamapp_dead_letters", "Records sent to the dead-letter topic", ["topic"])
EXPIRED_EVENTS_TOTAL = Counter(
    "streamapp_expired_events",
    "Valid events older than the retention when they arrived (not added to state)",
    ["topic"],
)
LATE_EVENTS_TOTAL = Counter(
    "streamapp_late_events",
    "Valid events that arrived later than the grace (or the retention) allows, sent to late-events",
    ["topic"],
)
EVENT_LAG_SECONDS = Histogram(
    "streamapp_event_lag_seconds",
    "Processing time minus event time",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
CONSUMER_LAG = Gauge(
    "streamapp_consumer_lag",
    "Records behind the end of the partition: highwater minus committed offset, for the partitions "
    "of the topics this worker's agents consume",
    ["topic", "partition"],
)
PARTITION_STALLED = Gauge(
    "streamapp_partition_stalled",
    "1 for each owned partition with records waiting and no progress for STREAMAPP_STALL_SECONDS "
    "(GET /live answers 503 while any is)",
    ["topic", "partition"],
)
WEB_ERRORS_TOTAL = Counter("streamapp_web_errors", "Web requests a view failed on (answered 500 and logged)")
SKIPPED_ALERTS_TOTAL = Counter(
    "streamapp_skipped_alerts",
    "Records of the alerts topic the recent-alerts tail could not read (skipped and logged)",
)
STATE_RESETS_TOTAL = Counter(
    "streamapp_state_resets",
    "Stored states (or event clocks) that could not be read, of the wrong shape, or too far ahead, "
    "and were replaced by a fresh one (each logged)",
    ["table"],
)
RECOMMENDED_WORKERS = Gauge(
    "streamapp_recommended_workers",
    "Workers the group needs to keep up and clear its backlog within STREAMAPP_AUTOSCALE_DRAIN_SECONDS "
    "(from the whole group's lag and measured drain rate; 1 to the partition count; lowered only after "
    "STREAMAPP_AUTOSCALE_SCALE_DOWN_SECONDS); the same on every worker: scale on its max",
)
READY = Gauge("streamapp_ready", "1 once table recovery is done and no rebalance is under way, else 0")


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """``histogram.observe(v)`` for every value, with one locked update per bucket instead of per value.

    (prometheus_client's ``observe`` walks the bucket bounds in Python and takes two locks per
    value: a few microseconds, per event on the hot path.)
    """
    bounds = histogram._upper_bounds  # prometheus_client internals: bounds ascending, last +Inf
    counts = [0] * len(bounds)
    total = 0.0
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bucket with value <= bound, as observe()
        total += value
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    if any(counts):
        histogram._sum.inc(total)
