"""Decoding of input records: a valid event, or the record goes to dead-letters with its reason."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

import faust
import orjson

from streamapp.app import settings
from streamapp.metrics import DEAD_LETTERS_TOTAL, EVENT_LAG_SECONDS, EVENTS_TOTAL
from streamapp.models import InvalidEvent, Parser, decode_json_object
from streamapp.settings import BATCH_MAX, BATCH_WITHIN_SECONDS
from streamapp.topics import dead_letters_topic

__all__ = ["Decoder", "decode_or_dead_letter", "route", "send_dead_letter"]

logger = logging.getLogger(__name__)
E = TypeVar("E")

#: record value -> the object a parser takes (JSON by default; the Avro decoder is async)
Decoder = Callable[[bytes | None], dict[str, Any] | Awaitable[dict[str, Any]]]


async def send_dead_letter(event: faust.EventT, reason: str) -> None:
    """Publish the record byte-for-byte to dead-letters with the reason and its origin."""
    message = event.message
    # aiokafka hands headers over as a list of (str, bytes) tuples
    headers = cast(list[tuple[str, bytes]], list(message.headers or []))
    headers += [
        ("x-error", reason.encode()),
        ("x-source-topic", message.topic.encode()),
        ("x-source-partition", str(message.partition).encode()),
        ("x-source-offset", str(message.offset).encode()),
    ]
    await dead_letters_topic.send(key=message.key, value=message.value, headers=headers)
    DEAD_LETTERS_TOTAL.labels(topic=message.topic).inc()
    key = message.key.decode(errors="backslashreplace") if message.key is not None else None
    logger.warning(
        "dead letter: %s[%d]@%d key=%r: %s",
        message.topic, message.partition, message.offset, key, reason,
        extra={"topic": message.topic, "partition": message.partition, "offset": message.offset,
               "key": key, "reason": reason},
    )  # fmt: skip


@functools.cache
def _events_of(topic: str) -> Any:
    return EVENTS_TOTAL.labels(topic=topic)  # the labelled child, looked up once per topic


async def decode_or_dead_letter(
    event: faust.EventT, parse: Parser, topic: str, decode: Decoder = decode_json_object
) -> Any | None:
    """The parsed event, or None after dead-lettering a record that cannot be processed."""
    message = event.message
    value: bytes | None = message.value
    try:
        if value is not None and len(value) > settings.max_record_bytes:
            raise InvalidEvent(
                f"record of {len(value)} bytes exceeds STREAMAPP_MAX_RECORD_BYTES={settings.max_record_bytes}"
            )
        obj = decode(value)
        if inspect.isawaitable(obj):
            obj = await obj
        parsed = parse(cast(dict[str, Any], obj), message.timestamp)
    except InvalidEvent as exc:
        await send_dead_letter(event, str(exc))
        return None
    except Exception as exc:  # a decoder bug must not stop the worker or lose the record
        logger.exception("decoding a %s record failed unexpectedly", topic)
        await send_dead_letter(event, f"internal error while decoding: {type(exc).__name__}: {exc}"[:500])
        return None
    _events_of(topic).inc()
    EVENT_LAG_SECONDS.observe(max(0.0, time.time() - parsed.ts))
    return parsed


Rekey = Callable[[Any], Iterable[tuple[faust.TopicT, str]]]


async def route(
    stream: faust.StreamT[bytes],
    parse: Parser,
    source: str,
    rekey: Rekey,
    decode: Decoder = decode_json_object,
) -> None:
    """Decode every record of ``source``; forward valid events to by-entity topics.

    The forwarded value carries the event and its source position ("src"), which the detectors
    use to drop records redelivered after a crash.
    """
    async for events in stream.take_events(BATCH_MAX, BATCH_WITHIN_SECONDS):  # type: ignore[attr-defined]
        # the producer itself (in a transaction: faust's transaction manager), not topic.send():
        # the by-entity topics take raw bytes, so faust's per-record message wrapping is pure cost
        producer = await stream.app.maybe_start_producer()
        for event in events:
            parsed = await decode_or_dead_letter(event, parse, source, decode)
            if parsed is None:
                continue
            message = event.message
            payload = orjson.dumps({"src": [message.partition, message.offset], "e": parsed})
            for topic, key in rekey(parsed):
                await producer.send(topic.get_topic_name(), key.encode(), payload, None, None, None)
