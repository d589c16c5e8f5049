"""Dead letters: list them with their reasons; re-submit chosen ones byte-for-byte to their source topic."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streamapp.runtime.faust_compat import kafka_client
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = [
    "DeadLetter",
    "DeadLetterError",
    "read_dead_letters",
    "resubmit",
]

logger = logging.getLogger(__name__)

#: headers streamapp adds when it dead-letters a record (dropped again when re-submitting)
DLQ_HEADERS = ("x-error", "x-source-topic", "x-source-partition", "x-source-offset")
RESUBMITTED_HEADER = "x-resubmitted-from"


class DeadLetterError(RuntimeError):
    """A dead-letter operation cannot be done; the message says why."""


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letters topic."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, value in reversed(self.headers):  # the newest reason wins after a re-submit
            if key == name:
                return value.decode("utf-8", errors="replace")
        return None

    @property
    def position(self) -> str:
        """``partition:offset`` in the dead-letters topic: what `dlq resubmit` takes."""
        return f"{self.partition}:{self.offset}"

    @property
    def error(self) -> str:
        return self.header("x-error") or "(no x-error header)"

    @property
    def source_topic(self) -> str | None:
        return self.header("x-source-topic")

    @property
    def source(self) -> str:
        topic = self.source_topic or "?"
        return f"{topic}[{self.header('x-source-partition') or '?'}]@{self.header('x-source-offset') or '?'}"

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the record had before streamapp dead-lettered it."""
        return [(k, v) for k, v in self.headers if k not in DLQ_HEADERS and k != RESUBMITTED_HEADER]

    def summary(self) -> dict[str, Any]:
        """A JSON-safe description for `streamapp dlq list --json`."""
        return {
            "position": self.position,
            "time": _iso(self.timestamp_ms),
            "source": self.source,
            "error": self.error,
            "key": _preview(self.key, 40),
            "value_bytes": None if self.value is None else len(self.value),
            "value": _preview(self.value, 80),
        }

    def describe(self) -> str:
        size = "null" if self.value is None else f"{len(self.value)} B"
        return (
            f"{self.position:>8}  {_iso(self.timestamp_ms)}  {self.source}  key={_preview(self.key, 24)}  "
            f"value={size} {_preview(self.value, 40)}\n          x-error: {self.error}"
        )


def _iso(timestamp_ms: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _preview(data: bytes | None, width: int) -> str:
    """Text as a quoted string, anything else as a bytes literal; cut at ``width`` bytes."""
    if data is None:
        return "null"
    more = "..." if len(data) > width else ""
    try:
        text = data[:width].decode("utf-8")
    except UnicodeDecodeError:
        return repr(data[:width]) + more
    return (repr(text) if text.isprintable() else repr(data[:width])) + more


def _matches(letter: DeadLetter, settings: Settings, source_topic: str | None) -> bool:
    if source_topic is None:
        return True
    return letter.source_topic in (source_topic, settings.topic(source_topic))


def _letter(record: Any) -> DeadLetter:
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value,
        headers=tuple((str(k), bytes(v)) for k, v in record.headers or ()),
    )


async def read_dead_letters(
    settings: Settings,
    *,
    source_topic: str | None = None,
    limit: int | None = None,
    positions: Iterable[tuple[int | None, int]] | None = None,
) -> list[DeadLetter]:
    """Dead letters in (time, partition, offset) order, the newest ``limit`` of them.

    ``source_topic`` keeps those from one topic (contract name or full name); ``positions``
    (partition or None for "any", offset) keeps exactly those records of the dead-letters topic.
    """
    topic = settings.topic("dead-letters")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, group_id=None,
        auto_offset_reset="earliest", max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024, **client_kwargs(settings),
    )  # fmt: skip
    await _start(consumer, settings)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            await kafka_client(consumer).force_metadata_update()
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise DeadLetterError(f"topic {topic} does not exist (no record was ever dead-lettered)")
        wanted = list(positions) if positions is not None else None
        letters = await _read(consumer, [TopicPartition(topic, p) for p in partitions], wanted)
    finally:
        await consumer.stop()
    letters = [letter for letter in letters if _matches(letter, settings, source_topic)]
    if wanted is not None:
        letters = [letter for letter in letters if _wanted(letter, wanted)]
    letters.sort(key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))
    return letters[-limit:] if limit else letters


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer, settings: Settings) -> None:
    try:
        await client.start()
    except KafkaError as exc:
        await client.stop()
        raise DeadLetterError(f"cannot reach the broker at {settings.broker}: {exc}") from None


def _wanted(letter: DeadLetter, wanted: list[tuple[int | None, int]]) -> bool:
    return any(p in (None, letter.partition) and o == letter.offset for p, o in wanted)


async def _read(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], wanted: list[tuple[int | None, int]] | None
) -> list[DeadLetter]:
    consumer.assign(parts)
    starts = await consumer.beginning_offsets(parts)
    ends = await consumer.end_offsets(parts)
    # with exact positions, read only from the smallest wanted offset of each partition
    for tp in parts:
        offsets = [o for p, o in (wanted or []) if p in (None, tp.partition)]
        if wanted is not None and not offsets:
            ends[tp] = starts[tp]  # nothing wanted here
            continue
        consumer.seek(tp, max(starts[tp], min(offsets)) if offsets else starts[tp])
    letters: list[DeadLetter] = []
    pending = {tp for tp in parts if ends[tp] > starts[tp]}
    while pending:
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)
        if not pending:
            break
        batch = await consumer.getmany(*pending, timeout_ms=1000)
        for tp, records in batch.items():
            letters.extend(_letter(r) for r in records if r.offset < ends[tp])
    return letters


async def resubmit(settings: Settings, letters: list[DeadLetter]) -> list[tuple[DeadLetter, str]]:
    """Produce each dead letter's key and value, byte-for-byte, to its source topic.

    The record keeps the headers it had originally and gets ``x-resubmitted-from:
    dead-letters:<partition>:<offset>``. Returns (letter, "topic[partition]@offset" written).
    """
    for letter in letters:
        if not letter.source_topic:
            raise DeadLetterError(f"dead letter {letter.position} has no x-source-topic header")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True,
        max_request_size=max(4 * settings.max_record_bytes, 8 * 1024 * 1024),
        **client_kwargs(settings),
    )  # fmt: skip
    await _start(producer, settings)
    done: list[tuple[DeadLetter, str]] = []
    try:
        for letter in letters:
            assert letter.source_topic is not None
            headers = letter.original_headers() + [
                (RESUBMITTED_HEADER, f"{settings.topic('dead-letters')}:{letter.position}".encode())
            ]
            meta = await producer.send_and_wait(
                letter.source_topic, value=letter.value, key=letter.key, headers=headers
            )
            done.append((letter, f"{meta.topic}[{meta.partition}]@{meta.offset}"))
            logger.info("re-submitted dead letter %s to %s", letter.position, done[-1][1])
    finally:
        await producer.stop()
    return done
