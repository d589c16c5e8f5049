"""RecentAlerts: a service that tails the `alerts` topic so any worker can list recent alerts."""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from streamapp.app import app, settings
from streamapp.observability.metrics import SKIPPED_ALERTS_TOTAL
from streamapp.runtime.faust_compat import kafka_client
from streamapp.runtime.kafka_clients import client_kwargs

__all__ = ["RecentAlerts", "parse_alert", "recent_alerts"]

#: after a failed fetch the tail waits this long before it fetches again
_RETRY_SECONDS = 1.0


def parse_alert(value: bytes | None) -> dict[str, Any] | None:
    """The alert in an `alerts` record, or None when it is not one a query can use.

    A query reads ``kind``, ``key`` and ``ts`` of every kept alert: one record without them (any
    producer may write to the topic) would make every `GET /alerts` fail until it ages out.
    """
    if value is None:
        return None
    try:
        alert = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(alert, dict):
        return None
    ts = alert.get("ts")
    if not isinstance(alert.get("kind"), str) or not isinstance(alert.get("key"), str):
        return None
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return None
    return alert


logger = logging.getLogger(__name__)


class RecentAlerts(Service):
    """Keeps the newest ``capacity`` alerts of every partition in memory, newest last.

    It reads with its own consumer and no group: every worker sees every alert, whichever worker
    published it, so `GET /alerts` answers the same everywhere.
    """

    def __init__(self, capacity: int = 10_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capacity = capacity
        self._alerts: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._consumer: AIOKafkaConsumer | None = None

    def query(self, kind: str | None, key: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest (by event time) first, filtered by kind and key."""
        found = [
            alert
            for alert in self._alerts
            if (kind is None or alert["kind"] == kind) and (key is None or alert["key"] == key)
        ]
        found.sort(key=lambda alert: alert["ts"], reverse=True)
        return found[:limit]

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            enable_auto_commit=False,
            metadata_max_age_ms=5000,
            **client_kwargs(settings),
        )
        await self._consumer.start()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    @Service.task
    async def _tail(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        topic = settings.topic("alerts")
        while not self.should_stop:
            try:
                await self._seek_to_recent(consumer, topic)
                break
            except Exception:  # no metadata yet, broker away: try again, never end the task
                logger.warning("finding the recent alerts of %s failed; trying again", topic, exc_info=True)
                await self.sleep(_RETRY_SECONDS)
        while not self.should_stop:
            try:
                batch = await consumer.getmany(timeout_ms=1000)
            except Exception:  # a broker hiccup must not end the tail: /alerts would freeze
                logger.warning("fetching %s failed; trying again", topic, exc_info=True)
                await self.sleep(_RETRY_SECONDS)
                continue
            for records in batch.values():
                for record in records:
                    self.add(record.value, f"{record.topic}[{record.partition}]@{record.offset}")

    async def _seek_to_recent(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        partitions: list[TopicPartition] = []
        while not self.should_stop and not partitions:
            await kafka_client(consumer).force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not partitions:
                await self.sleep(1.0)
        if not partitions:
            return
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        per_partition = max(1, self.capacity // len(partitions))
        for tp in partitions:
            consumer.seek(tp, max(0, ends[tp] - per_partition))

    def add(self, value: bytes | None, where: str = "") -> bool:
        """Keep the alert in ``value``; skip (logged and counted) a record that is not one."""
        alert = parse_alert(value)
        if alert is None:
            SKIPPED_ALERTS_TOTAL.inc()
            logger.warning("skipping a record that is not an alert at %s", where)
            return False
        self._alerts.append(alert)
        return True


recent_alerts = RecentAlerts()
app.service(recent_alerts)  # type: ignore[arg-type]  # faust starts instances as well as classes
