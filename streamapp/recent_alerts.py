"""RecentAlerts: a service that tails the `alerts` topic so any worker can list recent alerts."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from streamapp.app import app, settings
from streamapp.kafka_clients import client_kwargs

__all__ = ["RecentAlerts", "recent_alerts"]

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
        partitions: list[TopicPartition] = []
        while not self.should_stop and not partitions:
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            if not partitions:
                await self.sleep(1.0)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        per_partition = max(1, self.capacity // len(partitions))
        for tp in partitions:
            consumer.seek(tp, max(0, ends[tp] - per_partition))
        while not self.should_stop:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    try:
                        self._alerts.append(orjson.loads(record.value))
                    except (orjson.JSONDecodeError, TypeError):
                        logger.warning("ignoring a non-JSON record on %s", topic)


recent_alerts = RecentAlerts()
app.service(recent_alerts)  # type: ignore[arg-type]  # faust starts instances as well as classes
