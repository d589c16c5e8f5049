"""Worker metrics: faust's sensors beside the contract's, consumer lag per partition, readiness."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.sensors.prometheus import MS_LATENCY_BUCKETS, FaustMetrics, PrometheusMonitor
from faust.types import TP
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from streamapp.app import app
from streamapp.metrics import CONSUMER_LAG, READY
from streamapp.web import is_ready

__all__ = [
    "FAUST_METRICS_PREFIX",
    "LAG_INTERVAL_SECONDS",
    "consumed_topics",
    "install_faust_sensors",
    "measure_consumer_lag",
    "report_consumer_lag",
]

logger = logging.getLogger(__name__)

#: faust's sensors are served as ``faust_*`` whatever the app id, so dashboards need no app id
FAUST_METRICS_PREFIX = "faust"
LAG_INTERVAL_SECONDS = 5.0
_POSITION_TIMEOUT_SECONDS = 0.5

_lag_labels: set[tuple[str, str]] = set()


def install_faust_sensors(
    faust_app: faust.App, registry: CollectorRegistry = REGISTRY, prefix: str = FAUST_METRICS_PREFIX
) -> FaustMetrics:
    """Make faust's Prometheus monitor the app's monitor, its metrics in ``registry``.

    What ``faust.sensors.prometheus.setup_prometheus_sensors`` does, less two things: it would
    add a second ``/metrics`` route (streamapp.web serves the one registry, contract metrics and
    faust's together), and its ``*_events_runtime_ms`` name fails ``promtool check metrics``
    (abbreviated unit): that histogram is served as ``faust_events_runtime_latency``, in
    milliseconds like faust's other latency histograms.
    """
    metrics = FaustMetrics.create(registry, prefix)
    registry.unregister(metrics.events_runtime_latency)
    metrics = metrics._replace(
        events_runtime_latency=Histogram(
            f"{prefix}_events_runtime_latency",
            "Events runtime in ms",
            registry=registry,
            buckets=MS_LATENCY_BUCKETS,
        )
    )
    faust_app.monitor = PrometheusMonitor(metrics=metrics)
    return metrics


def consumed_topics(faust_app: faust.App) -> set[str]:
    """Names of the topics the agents consume: the input topics and the internal by-entity ones."""
    return {name for agent in faust_app.agents.values() for name in agent.get_topic_names()}


async def _position(consumer: Any, tp: TP) -> int | None:
    """The consumer's position, or None when it has none within a moment (reset pending, revoked)."""
    try:
        position: int | None = await asyncio.wait_for(consumer.position(tp), _POSITION_TIMEOUT_SECONDS)
    except (TimeoutError, KafkaError, AssertionError):
        return None
    return position


async def measure_consumer_lag(faust_app: faust.App) -> dict[TP, int]:
    """Records behind the end, per assigned partition of the consumed topics.

    highwater (from the consumer's last fetch) minus the committed offset as the monitor saw it
    committed; before this worker's first commit on a partition, the last read offset + 1, and
    before the first read, the consumer's position (the committed offset it was seeked to).
    No broker request: all of it is the consumer's own state.
    """
    consumer = faust_app.consumer
    monitor = faust_app.monitor
    topics = consumed_topics(faust_app)
    highwaters: dict[TP, int] = {}
    for tp in consumer.assignment():
        if tp.topic not in topics:
            continue
        try:
            highwater = consumer.highwater(tp)
        except (KafkaError, AssertionError, KeyError):  # revoked between assignment() and now
            continue
        if highwater is not None:  # None: not fetched yet
            highwaters[tp] = highwater
    behind: dict[TP, int | None] = {}
    for tp in highwaters:
        committed = monitor.tp_committed_offsets.get(tp)
        read = monitor.tp_read_offsets.get(tp)
        behind[tp] = committed if committed is not None else (read + 1 if read is not None else None)
    unread = [tp for tp, offset in behind.items() if offset is None]
    positions = await asyncio.gather(*(_position(consumer, tp) for tp in unread))
    behind.update(zip(unread, positions, strict=True))
    return {tp: max(0, highwaters[tp] - offset) for tp, offset in behind.items() if offset is not None}


@app.timer(interval=LAG_INTERVAL_SECONDS)
async def report_consumer_lag() -> None:
    """Set ``streamapp_consumer_lag`` for this worker's partitions; drop partitions it lost."""
    try:
        lags = await measure_consumer_lag(app)
    except ConsumerNotStarted:
        return
    except Exception:  # a metric must never take the worker down
        logger.warning("measuring consumer lag failed", exc_info=True)
        return
    labels = set()
    for tp, lag in lags.items():
        label = (tp.topic, str(tp.partition))
        CONSUMER_LAG.labels(*label).set(lag)
        labels.add(label)
    for label in _lag_labels - labels:
        try:
            CONSUMER_LAG.remove(*label)
        except KeyError:
            pass
    _lag_labels.clear()
    _lag_labels.update(labels)


install_faust_sensors(app)
READY.set_function(lambda: 1.0 if is_ready() else 0.0)
