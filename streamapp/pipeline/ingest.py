"""Decoding of input records: a valid event, or the record goes to dead-letters with its reason."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

import faust
from aiokafka.structs import ConsumerRecord

from streamapp.models import InvalidEvent, Parser, decode_json_object, encode_envelope, parse_valid_json
from streamapp.observability.metrics import DEAD_LETTERS_TOTAL, EVENT_LAG_SECONDS, EVENTS_TOTAL, observe_many
from streamapp.runtime.producer import Delivery, RecordBatches, key_partition
from streamapp.runtime.router import Router
from streamapp.runtime.topics import dead_letters_topic
from streamapp.settings import Settings
from streamapp.types import DetectionHandoff, Envelope, ForwardedRecord, RecordSink, Rekey

__all__ = [
    "ENVELOPE_OVERHEAD_BYTES",
    "Decoder",
    "Ingest",
    "decode_or_dead_letter",
    "ingest_for",
    "route_batch",
    "send_dead_letter",
    "to_specs_only",
]

logger = logging.getLogger(__name__)
E = TypeVar("E")

#: record value -> the object a parser takes (JSON by default; the Avro decoder is async)
Decoder = Callable[[bytes | None], dict[str, Any] | Awaitable[dict[str, Any]]]


async def send_dead_letter(record: ConsumerRecord, reason: str, batches: RecordSink, target: str) -> None:
    """Queue the record byte-for-byte for ``target`` (dead-letters), with the reason and its origin."""
    headers = list(record.headers or [])
    headers += [
        ("x-error", reason.encode()),
        ("x-source-topic", record.topic.encode()),
        ("x-source-partition", str(record.partition).encode()),
        ("x-source-offset", str(record.offset).encode()),
    ]
    await batches.prepare(target)
    # unkeyed records spread over the partitions by source position (a key picks its own)
    partition = None if record.key is not None else record.offset % batches.partitions_of(target)
    batches.add(target, record.key, record.value, partition, headers)
    DEAD_LETTERS_TOTAL.labels(topic=record.topic).inc()
    key = record.key.decode(errors="backslashreplace") if record.key is not None else None
    logger.warning(
        "dead letter: %s[%d]@%d key=%r: %s",
        record.topic, record.partition, record.offset, key, reason,
        extra={"topic": record.topic, "partition": record.partition, "offset": record.offset,
               "key": key, "reason": reason},
    )  # fmt: skip


@functools.cache
def _events_of(topic: str) -> Any:
    return EVENTS_TOTAL.labels(topic=topic)  # the labelled child, looked up once per topic


async def decode_or_dead_letter(
    record: ConsumerRecord,
    parse: Parser,
    batches: RecordSink,
    dead_letters: str,
    max_record_bytes: int,
    decode: Decoder = decode_json_object,
) -> Any | None:
    """The parsed event, or None after queueing a record that cannot be processed for ``dead_letters``."""
    value: bytes | None = record.value
    try:
        if value is not None and len(value) > max_record_bytes:
            raise InvalidEvent(
                f"record of {len(value)} bytes exceeds STREAMAPP_MAX_RECORD_BYTES={max_record_bytes}"
            )
        obj = decode(value)
        if not isinstance(obj, dict):  # the Avro decoder is a coroutine function
            obj = await cast(Awaitable[dict[str, Any]], obj)
        parsed = parse(cast(dict[str, Any], obj), record.timestamp / 1000.0)
    except InvalidEvent as exc:
        await send_dead_letter(record, str(exc), batches, dead_letters)
        return None
    except Exception as exc:  # a decoder bug must not stop the worker or lose the record
        logger.exception("decoding a %s record failed unexpectedly", record.topic)
        await send_dead_letter(
            record, f"internal error while decoding: {type(exc).__name__}: {exc}"[:500], batches, dead_letters
        )
        return None
    return parsed


#: a forwarded event may be this much larger than its input record (the broker took that one);
#: one larger goes without its input's copy ("raw"): late-events then carry its fields instead
ENVELOPE_OVERHEAD_BYTES = 4096


@dataclass
class Ingest:
    """The ingest step of one source topic: a batch handler of its fetched records.

    Everything it reads is here, so that it runs in a unit test with fakes (a list as the
    record sink, a router of fake handlers) as it runs on a worker (agents.route_* build them).
    """

    #: the source topic's short name ("logins"): the label of its metrics
    source: str
    parse: Parser
    #: a parsed event -> its by-entity topics and keys
    rekey: Rekey
    #: the app's router: a copartitioned event goes straight to its by-entity topic's handler
    router: Router
    #: a record sink per batch: streamapp.runtime.producer.RecordBatches on a worker
    new_sink: Callable[[], RecordSink]
    dead_letters_topic: str
    max_record_bytes: int
    decode: Decoder = decode_json_object
    #: the detection specs of the topic get its valid events (JSON topics; None: no spec reads it)
    detections: DetectionHandoff | None = None

    async def __call__(self, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        return await route_batch(records, self)


async def route_batch(records: Sequence[ConsumerRecord], ingest: Ingest) -> list[Delivery]:
    """Decode records of ``ingest.source``: valid events to by-entity topics, bad ones to dead-letters.

    The forwarded value is an :class:`~streamapp.types.Envelope` (streamapp.models.encode_envelope):
    the event and its source position, which the detectors use to drop records redelivered
    after a crash, and for JSON the input value ("raw") that late-events and dead-letters keep
    byte for byte. Returns the deliveries of all it produced.

    A record whose entity hashes to the partition it was read from needs no re-keying: the
    by-entity partition of that number belongs to this worker too (faust assigns the same
    partition numbers of topics with equal partition counts to one worker), so the event goes
    straight to that topic's handler (through the router), in order with every other event of
    that entity and source partition (which all take the same path). Producers that key by the
    entity, with Kafka's default partitioner, skip the extra hop for every record.
    """
    batches = ingest.new_sink()
    router, parse, decode, rekey = ingest.router, ingest.parse, ingest.decode, ingest.rekey
    targets: dict[faust.TopicT, tuple[str, int, bool]] = {}  # (name, partitions, copartitioned)
    direct: dict[str, list[ConsumerRecord]] = {}
    lags: list[float] = []
    now = time.time()
    json_values = decode is decode_json_object
    max_bytes = ingest.max_record_bytes
    handoff = ingest.detections
    to_specs: list[tuple[ConsumerRecord, Any]] | None = (
        []
        if handoff is not None and json_values and records and await handoff.wanted(records[0].topic)
        else None
    )
    for record in records:
        parsed = (
            parse_valid_json(record.value, record.timestamp / 1000.0, parse, max_bytes)
            if json_values
            else None
        )
        if parsed is None:  # not plain valid JSON (or not JSON at all): the path that gives reasons
            parsed = await decode_or_dead_letter(
                record, parse, batches, ingest.dead_letters_topic, max_bytes, decode
            )
            if parsed is None:
                continue
        lags.append(now - parsed.ts)
        if to_specs is not None:
            to_specs.append((record, parsed))
        payload: bytes | None = None  # only for events that go somewhere
        for topic, key in rekey(parsed):
            if payload is None:
                # the input value goes along (as text) for late-events, which keep it byte for byte
                raw = record.value.decode() if json_values else None
                envelope = Envelope(record.topic, record.partition, record.offset, parsed, raw)
                payload = encode_envelope(envelope)
                if raw is not None and len(payload) > len(record.value or b"") + ENVELOPE_OVERHEAD_BYTES:
                    # escapes (quotes, backslashes, newlines) make its copy up to twice its size:
                    # more than the broker takes, and the failed delivery would stop the worker
                    envelope.raw = None
                    payload = encode_envelope(envelope)
            target = targets.get(topic)
            if target is None:
                name = topic.get_topic_name()
                await batches.prepare(name, record.topic)
                partitions = batches.partitions_of(name)
                copartitioned = name in router and partitions == batches.partitions_of(record.topic)
                target = targets[topic] = (name, partitions, copartitioned)
            name, partitions, copartitioned = target
            raw_key = key.encode()
            if copartitioned and key_partition(raw_key, partitions) == record.partition:
                direct.setdefault(name, []).append(_forwarded(name, record, raw_key, payload, envelope))
            else:
                batches.add(name, raw_key, payload)
    if lags:
        _events_of(ingest.source).inc(len(lags))
        observe_many(EVENT_LAG_SECONDS, (max(0.0, lag) for lag in lags))
    deliveries = await batches.send()
    for name, forwarded in direct.items():
        deliveries.extend(await router.handle(name, forwarded))
    if to_specs:
        deliveries.extend(await cast(DetectionHandoff, handoff)(to_specs))
    return deliveries


def _forwarded(
    topic: str, source: ConsumerRecord, key: bytes, value: bytes, envelope: Envelope[Any]
) -> ForwardedRecord:
    """The record a by-entity topic would have delivered (no offset of its own: it never went there)."""
    return ForwardedRecord(
        topic=topic,
        partition=source.partition,
        offset=-1,
        timestamp=source.timestamp,
        timestamp_type=source.timestamp_type,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=(),
        envelope=envelope,
    )


def to_specs_only(event: Any) -> tuple[()]:
    """No by-entity topic for the event: the detections of its source topic alone take it
    (the rekey of `logins`, `sensor-readings` and `transactions`)."""
    return ()


def ingest_for(
    app: faust.App,
    settings: Settings,
    *,
    source: str,
    parse: Parser,
    rekey: Rekey,
    decode: Decoder = decode_json_object,
    detections: DetectionHandoff | None = None,
) -> Ingest:
    """The ingest step of ``source`` on a worker: the app's producer and router, its dead-letters topic
    and, for a JSON topic, the detection specs."""
    return Ingest(
        source=source, parse=parse, rekey=rekey, router=app.batch_router,  # type: ignore[attr-defined]
        new_sink=partial(RecordBatches, app), dead_letters_topic=dead_letters_topic.get_topic_name(),
        max_record_bytes=settings.max_record_bytes, decode=decode, detections=detections,
    )  # fmt: skip
