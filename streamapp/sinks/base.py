"""SinkService: a consumer group per sink that commits offsets only after the database has the batch."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from mode import Service
from prometheus_client import Counter, Gauge

from streamapp.observability.metrics import DEAD_LETTERS_TOTAL
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = [
    "SINK_DEAD_LETTERS_TOTAL",
    "SINK_LAG",
    "SINK_RECORDS_TOTAL",
    "SINK_RETRIES_TOTAL",
    "RowsRefused",
    "SinkRow",
    "SinkService",
    "SinkWriter",
    "backoff_delay",
    "dead_letter_headers",
]

logger = logging.getLogger(__name__)

SINK_RECORDS_TOTAL = Counter(
    "streamapp_sink_records", "Records a sink has written to its database (and committed)", ["sink"]
)
SINK_RETRIES_TOTAL = Counter(
    "streamapp_sink_retries", "Failed sink writes, retried with backoff while consumption pauses", ["sink"]
)
SINK_DEAD_LETTERS_TOTAL = Counter(
    "streamapp_sink_dead_letters",
    "Records a sink could not write (refused as data) and sent to dead-letters",
    ["sink"],
)
SINK_LAG = Gauge(
    "streamapp_sink_lag", "Records in this worker's sink partitions not yet written to the database", ["sink"]
)

#: first retry after this many seconds, doubling up to the cap
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 15.0


def backoff_delay(attempt: int, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with +-20 % jitter: 0.5, 1, 2, 4, 8, 15, 15 ... seconds."""
    delay = min(cap, first * 2 ** min(attempt, 16))
    return float(delay * random.uniform(0.8, 1.2))


@dataclass(frozen=True)
class SinkRow:
    """One row (or point) for the database and the record it was made from."""

    record: ConsumerRecord[bytes, bytes]
    values: tuple[Any, ...]
    kind: str = ""


#: (record, reason) of records that cannot become a row: they go to dead-letters
Refusal = tuple[ConsumerRecord[bytes, bytes], str]


class RowsRefused(Exception):
    """The database answered, and refused the rows as data (not an outage): retrying cannot help."""


class SinkWriter(Protocol):
    """A database client: opened and closed with the service, ``write`` raises when it did not write.

    ``write`` raises :class:`RowsRefused` when the database refused the rows themselves (a NUL in
    a text, a line it cannot parse); any other exception is an outage, retried with backoff.
    """

    name: str

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def rows(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> tuple[list[SinkRow], list[Refusal]]:
        """The rows of the batch, and the records that cannot be rows, with the reason."""
        ...

    async def write(self, rows: Sequence[SinkRow]) -> int:
        """Write the rows idempotently; return how many rows or points it wrote."""
        ...


def dead_letter_headers(record: ConsumerRecord[Any, Any], reason: str) -> list[tuple[str, bytes]]:
    """The record's headers plus the reason and its origin (as streamapp.pipeline.ingest.send_dead_letter)."""
    return [
        *(record.headers or []),
        ("x-error", reason.encode()),
        ("x-source-topic", record.topic.encode()),
        ("x-source-partition", str(record.partition).encode()),
        ("x-source-offset", str(record.offset).encode()),
    ]


class SinkService(Service):
    """Reads ``topics`` with the consumer group ``<app id>-sink-<name>`` and writes batches to a database.

    Flow: fetch up to ``STREAMAPP_MAX_POLL_RECORDS`` records, write them in one batch (retried with
    exponential backoff while the database is down or slow), then commit the offsets. While it
    retries it does not fetch: aiokafka keeps at most one fetch per partition in memory, the
    records pile up in Kafka, not in the worker (backpressure), and the sink catches up from its
    committed offsets when the database answers again. At-least-once delivery plus idempotent
    writes (upserts by primary key; InfluxDB points overwrite by series and time) give every row
    exactly once. The group is the sink's own, so a stalled sink never holds up the detectors.

    Hostile data never wedges it: a record that cannot become a row, or a row the database refuses
    as data (not an outage), goes to ``dead-letters`` with the reason, and the rest is written.
    """

    def __init__(
        self,
        writer: SinkWriter,
        topics: Sequence[str],
        settings: Settings,
        prepare: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prepare = prepare
        self.writer = writer
        self.topics = list(topics)
        self.settings = settings
        self.group_id = f"{settings.app_id}-sink-{writer.name}"
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None  # dead letters, started at the first
        self._dead_letters = SINK_DEAD_LETTERS_TOTAL.labels(sink=writer.name)
        self._records = SINK_RECORDS_TOTAL.labels(sink=writer.name)
        self._retries = SINK_RETRIES_TOTAL.labels(sink=writer.name)
        self._lag = SINK_LAG.labels(sink=writer.name)

    @property
    def label(self) -> str:
        return f"{type(self).__name__}({self.writer.name})"

    async def on_start(self) -> None:
        if self.prepare is not None:
            await self.prepare()  # e.g. create the topics with the app's partition count first
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.max_poll_records,
            # at most this much per partition is prefetched while the sink waits for its database
            max_partition_fetch_bytes=256 * 1024,
            fetch_max_bytes=8 * 1024 * 1024,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            metadata_max_age_ms=5_000,
            isolation_level=(
                "read_committed"
                if self.settings.processing_guarantee == "exactly_once"
                else "read_uncommitted"
            ),
            **client_kwargs(self.settings),
        )
        await self._consumer.start()
        logger.info(
            "%s sink: reading %s as group %s", self.writer.name, ", ".join(self.topics), self.group_id
        )

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()  # uncommitted batches are read again by the next owner
        if self._producer is not None:
            await self._producer.stop()
        await self.writer.close()

    @Service.task
    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            await self.writer.open()  # create the tables now; when down, the first write retries
        except Exception as exc:
            logger.warning("%s sink: database not reachable at start (%s); will retry", self.writer.name, exc)
        while not self.should_stop:
            batch = await consumer.getmany(timeout_ms=1000, max_records=self.settings.max_poll_records)
            records = [record for part in batch.values() for record in part]
            if records and not await self._write(records):
                return  # stopping: nothing committed, the batch is read again
            if batch:
                await self._commit(consumer, batch)
            await self._update_lag(consumer)

    def _rows(self, records: list[ConsumerRecord[bytes, bytes]]) -> tuple[list[SinkRow], list[Refusal]]:
        """The writer's rows; should it fail on the whole batch, record by record (isolation)."""
        try:
            return self.writer.rows(records)
        except Exception:
            logger.exception(
                "%s sink: making rows of a batch failed; trying record by record", self.writer.name
            )
        rows: list[SinkRow] = []
        refused: list[Refusal] = []
        for record in records:
            try:
                more, bad = self.writer.rows([record])
            except Exception as exc:
                bad = [
                    (record, f"{self.writer.name} sink: internal error: {type(exc).__name__}: {exc}"[:500])
                ]
                more = []
            rows += more
            refused += bad
        return rows, refused

    async def _write(self, records: list[ConsumerRecord[bytes, bytes]]) -> bool:
        """Write until it works (True), or until the service stops (False).

        Records that cannot become rows, and rows the database refuses as data, go to
        dead-letters; the rest of the batch is written. A refused batch is written again row by
        row to find the bad rows (an outage meanwhile resumes the backoff from the row it reached).
        """
        rows, refused = self._rows(records)
        if refused and not await self._dead_letter(refused):
            return False
        attempt = 0
        one_by_one = False
        while rows and not self.should_stop:
            if attempt and self._consumer is not None:
                # a rebalance while we waited moved partitions to another worker, which writes them
                # from the committed offsets: writing our older copy after it could undo newer points
                owned = self._consumer.assignment()
                rows = [r for r in rows if TopicPartition(r.record.topic, r.record.partition) in owned]
                if not rows:
                    return True
            try:
                if attempt:
                    await self.writer.open()
                if not one_by_one:
                    written = await self.writer.write(rows)
                    rows = []
                else:
                    written = 0
                    while rows:
                        try:
                            written += await self.writer.write(rows[:1])
                        except RowsRefused as exc:
                            if not await self._dead_letter([(rows[0].record, self._reason(exc))]):
                                return False
                        rows = rows[1:]  # an outage raises before this: the row is tried again
            except RowsRefused as exc:
                if len(rows) == 1:
                    if not await self._dead_letter([(rows[0].record, self._reason(exc))]):
                        return False
                    return True
                logger.warning(
                    "%s sink: the database refused a batch of %d rows as data (%s); writing them one by "
                    "one to find the bad rows", self.writer.name, len(rows), str(exc)[:200],
                )  # fmt: skip
                one_by_one = True
                continue
            except Exception as exc:  # any failure of the database or the network: retry
                self._retries.inc()
                delay = backoff_delay(attempt)
                log = logger.warning if attempt < 3 or attempt % 10 == 0 else logger.debug
                log(
                    "%s sink: writing %d records failed (attempt %d: %s: %s); consumption paused, "
                    "retrying in %.1f s", self.writer.name, len(rows), attempt + 1,
                    type(exc).__name__, str(exc)[:200], delay,
                )  # fmt: skip
                attempt += 1
                if self._consumer is not None:
                    await self._update_lag(self._consumer, pending=len(rows))
                await self.sleep(delay)
                continue
            if attempt:
                logger.info("%s sink: written again after %d failed attempts", self.writer.name, attempt)
            self._records.inc(written)
            return True
        return not rows

    def _reason(self, exc: RowsRefused) -> str:
        return f"{self.writer.name} sink: the database refused the row: {exc}"[:500]

    async def _dead_letter(self, refused: list[Refusal]) -> bool:
        """Send the records byte for byte to dead-letters with their reasons; False when stopping.

        Waits for the broker's acknowledgement (retried with backoff): the sink commits the
        batch's offsets only after its dead letters are safe.
        """
        topic = self.settings.topic("dead-letters")
        attempt = 0
        while not self.should_stop:
            try:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.settings.bootstrap_servers, acks="all",
                        enable_idempotence=True, **client_kwargs(self.settings),
                    )  # fmt: skip
                    await producer.start()
                    self._producer = producer
                sent = [
                    await self._producer.send(
                        topic, key=record.key, value=record.value, headers=dead_letter_headers(record, reason)
                    )
                    for record, reason in refused
                ]
                await asyncio.gather(*sent)
            except Exception as exc:
                delay = backoff_delay(attempt)
                logger.warning(
                    "%s sink: sending %d dead letters failed (%s: %s); retrying in %.1f s",
                    self.writer.name, len(refused), type(exc).__name__, str(exc)[:200], delay,
                )  # fmt: skip
                attempt += 1
                await self.sleep(delay)
                continue
            for record, reason in refused:
                DEAD_LETTERS_TOTAL.labels(topic=record.topic).inc()
                self._dead_letters.inc()
                key = record.key.decode(errors="backslashreplace") if record.key is not None else None
                logger.warning(
                    "dead letter: %s[%d]@%d key=%r: %s", record.topic, record.partition, record.offset, key,
                    reason, extra={"topic": record.topic, "partition": record.partition,
                                   "offset": record.offset, "key": key, "reason": reason},
                )  # fmt: skip
            return True
        return False

    async def _commit(
        self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        owned = consumer.assignment()
        offsets = {tp: part[-1].offset + 1 for tp, part in batch.items() if part and tp in owned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # the group moved on (rebalance): the new owner writes the batch again, idempotently
            logger.warning(
                "%s sink: commit failed (%s); the batch will be written again", self.writer.name, exc
            )

    async def _update_lag(self, consumer: AIOKafkaConsumer, pending: int = 0) -> None:
        """Records behind the partitions' ends, counting the batch in hand (``pending``)."""
        behind = pending
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                behind += max(0, highwater - await consumer.position(tp))
        self._lag.set(behind)
