"""Prometheus metrics of the contract, shared by agents and the web view that serves them."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

__all__ = [
    "ALERTS_TOTAL",
    "CONSUMER_LAG",
    "DEAD_LETTERS_TOTAL",
    "EVENTS_TOTAL",
    "EVENT_LAG_SECONDS",
    "EXPIRED_EVENTS_TOTAL",
    "READY",
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
READY = Gauge("streamapp_ready", "1 once table recovery is done and no rebalance is under way, else 0")
