"""What a detector reads back, checked before a rule sees it: by-entity records and stored states.

Only the app writes the by-entity topics and ``<app id>-detection-events``: a record found there
that it could not have written (a key no entity can have, an envelope whose event the ingest parser
or the spec's field kinds refuse) is refused, and a stored state that cannot be read is replaced by
a fresh one (logged, ``streamapp_state_resets_total``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.structs import ConsumerRecord

from streamapp.models import (
    INPUTS,
    LIMITS,
    MAX_ID_CHARS,
    InvalidEvent,
    Parser,
    decode_envelope,
    event_time,
    id_problem,
)
from streamapp.observability.metrics import STATE_RESETS_TOTAL
from streamapp.rules.base import State
from streamapp.types import Envelope, ForwardedRecord

if TYPE_CHECKING:  # (only for the type: the engine is the spec's, built by the registry)
    from streamapp.detections.engine import Engine

__all__ = ["PARSERS", "detection_record", "envelope_problem", "key_problem", "reset_state", "stored_state"]

logger = logging.getLogger(__name__)

#: source topic -> its ingest parser: an event read back from a by-entity topic must pass it again
#: (only the app writes those topics; whatever else is found there is refused like hostile input)
PARSERS: dict[str, Parser] = {topic: source.parse for topic, source in INPUTS.items()}


def key_problem(key: bytes | None) -> str | None:
    """Why a by-entity record's key cannot be an entity id (a phrase for a reason), or None."""
    if not key:
        return "without a UTF-8 entity key"
    try:
        entity = key.decode()
    except UnicodeDecodeError:
        return "without a UTF-8 entity key"
    if len(entity) > MAX_ID_CHARS:
        return f"whose key is longer than {MAX_ID_CHARS} characters"
    problem = id_problem(entity)  # e.g. faust's own keys: the state would overwrite them
    return None if problem is None else f"whose key {problem}"


def stored_state(raw: bytes | None, table: str, key: bytes, ceiling: float) -> State | None:
    """The stored state decoded, or None when absent or unreadable (logged and counted: a fresh one).

    Only the detector writes states, but a state restored from a changelog someone else wrote
    to may be anything; it must not stop the key (or the loop) for good. A key's event clock
    beyond ``ceiling`` (the wall clock plus the skew: written by a version that took events from
    the future) would make every real event of the key late: such a state is replaced too.
    """
    if raw is None:
        return None
    try:
        state = orjson.loads(raw)
    except orjson.JSONDecodeError:
        state = None
    if not isinstance(state, dict):
        reset_state(table, key, "it is not a JSON object")
        return None
    clock = state.get("clock")
    if isinstance(clock, int | float) and clock > ceiling:
        reset_state(
            table, key, f"its event clock {clock!r} is more than STREAMAPP_MAX_CLOCK_SKEW_SECONDS ahead"
        )
        return None
    return state


def reset_state(table: str, key: bytes, why: str) -> None:
    """Log and count a stored state that is replaced by a fresh one."""
    STATE_RESETS_TOTAL.labels(table=table).inc()
    logger.warning(
        "the stored state of %r in table %s is replaced by a fresh one: %s",
        key[:200].decode(errors="backslashreplace"), table, why,
    )  # fmt: skip


def envelope_problem(
    record: ConsumerRecord, parse: Parser, source_topic: str
) -> tuple[Envelope[Any] | None, str | None]:
    """(envelope, None) for a by-entity record the app could have written, else (None, why).

    Read back from the topic, its event must pass the source's parser again
    (streamapp.models.decode_envelope), which bounds its time by the clock skew: a forged one must
    not move the event clock. Handed over in process, it carries the envelope ingest built.
    """
    if isinstance(record, ForwardedRecord) and record.envelope is not None:
        return record.envelope, None
    try:
        return decode_envelope(record.value, source_topic, parse), None
    except InvalidEvent as exc:
        return None, str(exc)


#: the start of every reason a record of an internal topic is refused with (docs/contract.md)
INTERNAL = "record on an internal topic"


def detection_record(
    key: bytes | None, value: bytes | None, engines: Mapping[str, Engine], ceiling: float
) -> dict[str, Any] | str | None:
    """The message of a ``<app id>-detection-events`` record the app could have written (an event
    envelope or a tick), else why not (the ``x-error`` of its dead letter); None for a tick of a
    detection that does not run (the timer sends ticks only to running ones: nothing is lost).

    A forged event must not reach an engine: its time is bounded by ``ceiling`` (the wall clock
    plus the skew, so it never moves a clock ahead) and its fields must be the spec's, of their
    declared kinds, as the source record's were (the engine would raise on a string where a
    number is summed, or keep an infinite sum).
    """
    name, _, entity = (key or b"").partition(b"\x00")
    # (the detection's name is an id too: faust's own keys start with '__faust', no name does)
    problem = (key_problem(name) or key_problem(entity)) if _ else "without a UTF-8 entity key"
    if problem is None:
        try:
            detection = name.decode()
        except UnicodeDecodeError:
            problem = "without a UTF-8 entity key"
    if problem is not None:
        return f"{INTERNAL} {problem}"
    try:
        message = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return f"{INTERNAL} that is not a JSON event"
    if not isinstance(message, dict):
        return f"{INTERNAL} that is not a forwarded event"
    engine = engines.get(detection)
    if "tick" in message:
        tick, flush = message["tick"], message.get("flush", False)
        if type(tick) not in (int, float) or not tick <= ceiling or type(flush) is not bool:
            return f"{INTERNAL} that is not a tick within STREAMAPP_MAX_CLOCK_SKEW_SECONDS"
        return message if engine is not None else None
    if engine is None:
        return f"{INTERNAL} for detection {detection[:100]!r}, which does not run on this worker"
    fields = message.get("f")
    if not isinstance(fields, dict):
        return f"{INTERNAL} that is not a forwarded event"
    src = message.get("src")
    if not (isinstance(src, list) and len(src) == 2 and all(type(n) is int and n >= 0 for n in src)):
        return f"{INTERNAL} whose 'src' is not [partition, offset]"
    raw = message.get("raw")
    if raw is not None and type(raw) is not str:
        return f"{INTERNAL} that is not a forwarded event"
    try:
        message["ts"] = event_time({"ts": message.get("ts")}, None)
        _check_fields(engine, entity.decode(), fields)
    except InvalidEvent as exc:
        return f"{INTERNAL} with an event ingest refuses: {exc}"
    return message


def _check_fields(engine: Engine, entity: str, fields: dict[str, Any]) -> None:
    """Raise InvalidEvent unless ``fields`` are the spec's, of its kinds, and its key is ``entity``."""
    spec = engine.spec
    suffix = f" (detection {spec.name})"
    for name, kind in spec.fields.items():
        value = fields.get(name)
        if value is None:
            raise InvalidEvent(f"field {name!r} is missing{suffix}")
        if kind == "timestamp":
            try:
                event_time({"ts": value}, None)
            except InvalidEvent as exc:
                raise InvalidEvent(f"{exc}{suffix}".replace("'ts'", repr(name))) from None
        elif kind == "string" and type(value) is not str:
            raise InvalidEvent(f"field {name!r} must be a string{suffix}")
        elif kind == "bool" and type(value) is not bool:
            raise InvalidEvent(f"field {name!r} must be true or false{suffix}")
        elif kind == "number":
            # (the ingest's own bound of a contract field, e.g. a price, may be the larger)
            bound = max(LIMITS.max_amount, LIMITS.max_price)
            low, high = spec.bounds.get(name, (None, None))
            low = -bound if low is None else low
            high = bound if high is None else high
            if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
                raise InvalidEvent(f"field {name!r}={value!r} is not a number within [{low}, {high}]{suffix}")
    if fields.get(spec.key) != entity:
        raise InvalidEvent(f"field {spec.key!r} is not the record's key{suffix}")
