"""Late events and dead letters of one detector batch, queued with the batch's other records."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.structs import ConsumerRecord

from streamapp.observability.metrics import DEAD_LETTERS_TOTAL, EXPIRED_EVENTS_TOTAL, LATE_EVENTS_TOTAL
from streamapp.types import Envelope, RecordSink

if TYPE_CHECKING:  # the detector builds its rejects: a cycle at run time
    from agents.base import Detector

__all__ = ["Rejects", "source_coordinates"]

logger = logging.getLogger(__name__)


class Rejects:
    """Late events and dead letters of one batch, queued with the batch's other records."""

    def __init__(self, batches: RecordSink, source_topic: str, detection: str, detector: Detector) -> None:
        self._batches = batches
        self._source_topic = source_topic
        self._detection = detection
        self._late_events_topic = detector.late_events_topic
        self._dead_letters_topic = detector.dead_letters_topic
        self._late: list[tuple[ConsumerRecord, Envelope[Any], str, float]] = []
        self._dead: list[tuple[ConsumerRecord, str, bool]] = []

    def late(self, record: ConsumerRecord, event: Envelope[Any], reason: str, seconds: float) -> None:
        self._late.append((record, event, reason, seconds))

    def dead(self, record: ConsumerRecord, reason: str, as_read: bool = False) -> None:
        """Queue a dead letter: the input record it was forwarded from, or (``as_read``) itself."""
        self._dead.append((record, reason, as_read))

    def clear_for(self, records: list[ConsumerRecord]) -> None:
        """Forget what these records queued (they are applied again, one at a time)."""
        ids = {id(record) for record in records}
        self._late = [entry for entry in self._late if id(entry[0]) not in ids]
        self._dead = [entry for entry in self._dead if id(entry[0]) not in ids]

    async def queue(self) -> None:
        if self._late:
            await self._queue_late()
        if self._dead:
            await self._queue_dead()

    async def _queue_late(self) -> None:
        target = self._late_events_topic
        await self._batches.prepare(target)
        counter = LATE_EVENTS_TOTAL.labels(topic=self._source_topic)
        for record, event, reason, seconds in self._late:
            value = event.raw.encode() if event.raw is not None else orjson.dumps(event.event)
            headers = source_coordinates(self._source_topic, event.partition, event.offset)
            headers += [
                ("x-error", f"late event for {self._detection}: {reason}".encode()),
                ("x-lateness-seconds", f"{seconds:.3f}".encode()),
            ]
            self._batches.add(target, record.key, value, None, headers)
            counter.inc()
            if reason.startswith("older than the retention"):
                EXPIRED_EVENTS_TOTAL.labels(topic=self._source_topic).inc()

    async def _queue_dead(self) -> None:
        target = self._dead_letters_topic
        await self._batches.prepare(target)
        partitions = self._batches.partitions_of(target)
        for record, reason, as_read in self._dead:
            try:
                if as_read:  # not something the app forwarded: the record itself, where it was read
                    raise ValueError(reason)
                value, headers = _source_of(orjson.loads(record.value), record, self._source_topic)
            except Exception:  # not an envelope at all: the record itself, where it was read
                value = record.value
                headers = source_coordinates(record.topic, record.partition, record.offset)
            headers.append(("x-error", reason.encode()))
            # a record without a key (someone else wrote it) needs a partition: by source position
            partition = None if record.key is not None else max(record.offset, 0) % partitions
            self._batches.add(target, record.key, value, partition, headers)
            DEAD_LETTERS_TOTAL.labels(topic=record.topic).inc()
            logger.warning(
                "dead letter: %s[%d]@%d: %r", record.topic, record.partition, record.offset, reason
            )


def _source_of(
    event: dict[str, Any], record: ConsumerRecord, source_topic: str
) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The input record's value, byte for byte, and its coordinates, from a forwarded event."""
    raw = event.get("raw")
    value = raw.encode() if isinstance(raw, str) else orjson.dumps(event.get("e"))
    src = event.get("src") or [record.partition, record.offset]
    return value, source_coordinates(source_topic, int(src[0]), int(src[1]))


def source_coordinates(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The headers that say where a dead letter or late event was read: its input record's position."""
    return [
        ("x-source-topic", topic.encode()),
        ("x-source-partition", str(partition).encode()),
        ("x-source-offset", str(offset).encode()),
    ]
