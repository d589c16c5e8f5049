"""Broker-side helpers of the harness: topics, watermarks, committed offsets, group lag (confluent-kafka)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["Broker"]

logger = logging.getLogger("bench")

_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group committed nothing for the partition


class Broker:
    """One bootstrap address; keeps an admin client and one offset-reading consumer per group."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self._readers: dict[str, Consumer] = {}

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def _reader(self, group: str) -> Consumer:
        # a consumer that never subscribes does not join the group: it only reads offsets
        if group not in self._readers:
            self._readers[group] = Consumer(
                {"bootstrap.servers": self.bootstrap, "group.id": group, "enable.auto.commit": False}
            )
        return self._readers[group]

    # -- topics ---------------------------------------------------------------------------------
    def topics(self) -> set[str]:
        return set(self.admin.list_topics(timeout=15).topics)

    def create_topic(self, name: str, partitions: int) -> None:
        future = self.admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        try:
            future[name].result(30)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise

    def delete_topics(self, names: Iterable[str]) -> int:
        """Delete these topics (errors are logged, not raised); the number deleted."""
        names = sorted(names)
        if not names:
            return 0
        deleted = 0
        for name, future in self.admin.delete_topics(names, operation_timeout=30).items():
            try:
                future.result(60)
                deleted += 1
            except KafkaException as exc:
                logger.warning("could not delete topic %s: %s", name, exc)
        return deleted

    def partitions(self, topic: str) -> list[int]:
        meta = self.admin.list_topics(topic, timeout=15).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    # -- offsets --------------------------------------------------------------------------------
    def watermarks(self, topic: str, group: str = "bench-watermarks") -> dict[int, tuple[int, int]]:
        """partition -> (low, high) offsets of ``topic``."""
        reader = self._reader(group)
        return {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=15, cached=False)
            for p in self.partitions(topic)
        }

    def records(self, topic: str) -> int:
        """Records held by ``topic`` (high minus low watermark, summed over its partitions)."""
        return sum(high - low for low, high in self.watermarks(topic).values())

    def committed(self, group: str, topic: str) -> dict[int, int | None]:
        """partition -> offset ``group`` committed for ``topic`` (None when it committed nothing)."""
        tps = [TopicPartition(topic, p) for p in self.partitions(topic)]
        if not tps:
            return {}
        result = self._reader(group).committed(tps, timeout=15)
        return {tp.partition: (tp.offset if tp.offset != _NO_OFFSET else None) for tp in result}

    def lag(self, group: str, topics: Iterable[str]) -> int:
        """Records of ``topics`` that ``group`` has not committed yet."""
        total = 0
        for topic in topics:
            marks = self.watermarks(topic, group)
            for partition, offset in self.committed(group, topic).items():
                low, high = marks.get(partition, (0, 0))
                total += max(0, high - (low if offset is None else offset))
        return total
