"""The value of a by-entity record: the envelope of a forwarded event, written and read back."""

from __future__ import annotations

from typing import Any

import orjson

from streamapp.models.events import InvalidEvent, Parser
from streamapp.types import Envelope

__all__ = ["decode_envelope", "encode_envelope"]


def encode_envelope(envelope: Envelope[Any]) -> bytes:
    """The value of a by-entity record: ``{"src": [partition, offset], "e": event[, "raw": text]}``."""
    wire: dict[str, Any] = {"src": [envelope.partition, envelope.offset], "e": envelope.event}
    if envelope.raw is not None:
        wire["raw"] = envelope.raw
    return orjson.dumps(wire)


def decode_envelope(value: bytes | None, source_topic: str, parse: Parser) -> Envelope[Any]:
    """The envelope of a by-entity record, its event parsed again by the source's ``parse``.

    Only the app writes the by-entity topics; whatever else is found there raises
    :class:`InvalidEvent` with the reason (a forged event must not move a key's event clock:
    the parser bounds its time by the clock skew).
    """
    try:
        wire = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        raise InvalidEvent("record on an internal topic that is not a JSON event") from None
    if not isinstance(wire, dict) or not isinstance(wire.get("e"), dict):
        raise InvalidEvent("record on an internal topic that is not a forwarded event")
    src = wire.get("src")
    if not (isinstance(src, list) and len(src) == 2 and all(type(n) is int and n >= 0 for n in src)):
        raise InvalidEvent("record on an internal topic whose 'src' is not [partition, offset]")
    try:
        event = parse(wire["e"], None)
    except InvalidEvent as exc:
        raise InvalidEvent(f"record on an internal topic with an event ingest refuses: {exc}") from None
    raw = wire.get("raw")
    return Envelope(source_topic, src[0], src[1], event, raw if isinstance(raw, str) else None)
