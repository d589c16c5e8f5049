"""Worker metrics: faust's sensors beside the contract's, consumer lag per partition, readiness, liveness."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.sensors.prometheus import MS_LATENCY_BUCKETS, FaustMetrics, PrometheusMonitor
from faust.types import TP
from mode import Service
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram

from streamapp.app import app, settings
from streamapp.observability.autoscale import GroupSample, WorkerRecommender
from streamapp.observability.liveness import PartitionProgress
from streamapp.observability.metrics import CONSUMER_LAG, PARTITION_STALLED, READY, RECOMMENDED_WORKERS
from streamapp.runtime.faust_compat import kafka_client
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.web.views import is_ready, watchdog

__all__ = [
    "AUTOSCALE_INTERVAL_SECONDS",
    "FAUST_METRICS_PREFIX",
    "GroupWatcher",
    "LAG_INTERVAL_SECONDS",
    "check_liveness",
    "consumed_topics",
    "install_faust_sensors",
    "measure_consumer_lag",
    "measure_progress",
    "report_consumer_lag",
]

logger = logging.getLogger(__name__)

#: faust's sensors are served as ``faust_*`` whatever the app id, so dashboards need no app id
FAUST_METRICS_PREFIX = "faust"
LAG_INTERVAL_SECONDS = 5.0
AUTOSCALE_INTERVAL_SECONDS = 5.0
_POSITION_TIMEOUT_SECONDS = 0.5

_lag_labels: set[tuple[str, str]] = set()
_stalled_labels: set[tuple[str, str]] = set()


def install_faust_sensors(
    faust_app: faust.App, registry: CollectorRegistry = REGISTRY, prefix: str = FAUST_METRICS_PREFIX
) -> FaustMetrics:
    """Make faust's Prometheus monitor the app's monitor, its metrics in ``registry``.

    What ``faust.sensors.prometheus.setup_prometheus_sensors`` does, less two things: it would
    add a second ``/metrics`` route (streamapp.web.views serves the one registry, contract metrics and
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


async def measure_progress(faust_app: faust.App) -> dict[TP, PartitionProgress]:
    """Where processing stands, per assigned partition of the consumed topics.

    ``done``: the committed offset as the monitor saw it committed; before this worker's first
    commit on a partition, the last read offset + 1, and before the first read, the consumer's
    position (the committed offset it was seeked to). ``highwater`` comes from the consumer's last
    fetch; partitions not fetched yet are left out. No broker request: all of it is the consumer's
    own state.
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
    done: dict[TP, int | None] = {}
    reads: dict[TP, int | None] = {}
    for tp in highwaters:
        committed = monitor.tp_committed_offsets.get(tp)
        read = reads[tp] = monitor.tp_read_offsets.get(tp)
        done[tp] = committed if committed is not None else (read + 1 if read is not None else None)
    # the position of every partition not done to its highwater: unread ones need it as their
    # start, lagging ones to tell records that wait from transaction markers
    # (streamapp.observability.liveness)
    asked = [tp for tp, offset in done.items() if offset is None or offset < highwaters[tp]]
    positions = dict(
        zip(asked, await asyncio.gather(*(_position(consumer, tp) for tp in asked)), strict=True)
    )
    found = {}
    for tp, offset in done.items():
        start = offset if offset is not None else positions.get(tp)
        if start is None:
            continue
        found[tp] = PartitionProgress(
            done=start, highwater=highwaters[tp], read=reads[tp], position=positions.get(tp)
        )
    return found


async def measure_consumer_lag(faust_app: faust.App) -> dict[TP, int]:
    """Records behind the end, per assigned partition of the consumed topics: highwater - done."""
    return {tp: progress.lag for tp, progress in (await measure_progress(faust_app)).items()}


def _set_labels(gauge: Gauge, known: set[tuple[str, str]], values: dict[tuple[str, str], float]) -> None:
    """Set ``gauge`` for these labels and drop the children of labels not among them any more."""
    for label, value in values.items():
        gauge.labels(*label).set(value)
    for label in known - set(values):
        try:
            gauge.remove(*label)
        except KeyError:
            pass
    known.clear()
    known.update(values)


def check_liveness(progress: dict[TP, PartitionProgress] | None, ready: bool) -> None:
    """One look of the watchdog (``progress`` None: the consumer is not started), and its metric."""
    if progress is None or not ready:
        watchdog.pause()
        stalls = []
    else:
        stalls = watchdog.observe(progress)
        for stall in stalls:
            logger.warning(
                "partition %s[%d] stalled: %d records wait, no progress for %.0f s",
                stall.tp.topic, stall.tp.partition, stall.lag, stall.seconds,
            )  # fmt: skip
    _set_labels(PARTITION_STALLED, _stalled_labels, {(s.tp.topic, str(s.tp.partition)): 1.0 for s in stalls})


@app.timer(interval=LAG_INTERVAL_SECONDS)
async def report_consumer_lag() -> None:
    """Set ``streamapp_consumer_lag`` for this worker's partitions, drop partitions it lost; feed
    the liveness watchdog."""
    progress: dict[TP, PartitionProgress] | None
    try:
        progress = await measure_progress(app)
    except ConsumerNotStarted:
        progress = None
    except Exception:  # a metric must never take the worker down
        logger.warning("measuring consumer lag failed", exc_info=True)
        return  # the watchdog goes silent: repeated failures for stall_seconds fail /live
    try:
        check_liveness(progress, is_ready())
    except Exception:
        logger.warning("liveness check failed", exc_info=True)
    if progress is not None:
        lags = {(tp.topic, str(tp.partition)): float(p.lag) for tp, p in progress.items()}
        _set_labels(CONSUMER_LAG, _lag_labels, lags)


class GroupWatcher(Service):
    """Samples the whole consumer group (every partition of the consumed topics, not only this
    worker's) and keeps ``streamapp_recommended_workers`` (see streamapp.observability.autoscale).

    Its own admin client and group-less read_committed consumer: two requests per look, whatever
    the partition count, and nothing shared with faust's consumer.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recommender = WorkerRecommender(
            partitions=settings.partitions,
            drain_seconds=settings.autoscale_drain_seconds,
            scale_down_seconds=settings.autoscale_scale_down_seconds,
        )
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._failures = 0
        self._consumer_started = False

    async def on_start(self) -> None:
        RECOMMENDED_WORKERS.set(1)
        kwargs = client_kwargs(settings)
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000, **kwargs
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False,
            isolation_level="read_committed", metadata_max_age_ms=30_000, **kwargs,
        )  # fmt: skip

    async def on_stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()
        if self._consumer is not None and self._consumer_started:
            await self._consumer.stop()

    async def sample(self) -> GroupSample | None:
        """One look at the group; None while the app consumes nothing yet."""
        admin, consumer = self._admin, self._consumer
        assert admin is not None and consumer is not None
        topics = consumed_topics(app)
        parts = [TopicPartition(t, p) for t in sorted(topics) for p in consumer.partitions_for_topic(t) or ()]
        if len(parts) < len(topics):
            await kafka_client(consumer).force_metadata_update()  # topics created after start
            parts = [
                TopicPartition(t, p) for t in sorted(topics) for p in consumer.partitions_for_topic(t) or ()
            ]
        if not parts:
            return None
        committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=parts)
        ends = await consumer.end_offsets(parts)
        missing = [tp for tp in parts if committed.get(tp) is None or committed[tp].offset < 0]
        starts = await consumer.beginning_offsets(missing) if missing else {}
        done = sum(starts[tp] if tp in starts else committed[tp].offset for tp in parts)
        return GroupSample(
            at=asyncio.get_running_loop().time(), end=sum(ends.values()), done=done,
            members=await self._members(admin),
        )  # fmt: skip

    async def _members(self, admin: AIOKafkaAdminClient) -> int:
        responses = await admin.describe_consumer_groups([settings.app_id])
        # DescribeGroups: groups = [(error_code, group_id, state, protocol_type, protocol, members, ...)]
        return sum(len(group[5]) for response in responses for group in response.groups)

    @Service.task
    async def _watch(self) -> None:
        assert self._consumer is not None
        while not self.should_stop:
            try:
                if not self._consumer_started:  # started here, not in on_start: retried on failure
                    assert self._admin is not None
                    await self._admin.start()
                    await self._consumer.start()
                    self._consumer_started = True
                found = await self.sample()
                if found is not None:
                    before = self.recommender.recommended
                    after = self.recommender.observe(found)
                    RECOMMENDED_WORKERS.set(after)
                    capacity = self.recommender.capacity
                    log_change = logger.info if after != before else logger.debug
                    log_change(
                        "autoscale: group lag %d, %d members, capacity %s records/s per worker: "
                        "%d workers recommended", found.lag, found.members,
                        f"{capacity:.0f}" if capacity else "unmeasured", after,
                    )  # fmt: skip
                self._failures = 0
            except Exception:  # a broker away: keep the last recommendation, try again
                self._failures += 1
                log = logger.warning if self._failures in (1, 10) else logger.debug
                log("sampling the consumer group for autoscaling failed", exc_info=True)
            await self.sleep(AUTOSCALE_INTERVAL_SECONDS)


group_watcher = GroupWatcher()
app.service(group_watcher)  # type: ignore[arg-type]  # faust starts instances as well as classes

install_faust_sensors(app)
READY.set_function(lambda: 1.0 if is_ready() else 0.0)
