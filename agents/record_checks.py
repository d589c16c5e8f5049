"""What a detector reads back, checked before a rule sees it: by-entity records and stored states.

Only the app writes the by-entity topics: a record found there that it could not have written (a
key no entity can have, an envelope whose event the ingest parser refuses) is refused, and a stored
state that cannot be read is replaced by a fresh one (logged, ``streamapp_state_resets_total``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from streamapp.models import (
    INPUTS,
    MAX_ID_CHARS,
    InvalidEvent,
    Parser,
    decode_envelope,
    id_problem,
)
from streamapp.observability.metrics import STATE_RESETS_TOTAL
from streamapp.rules.base import State
from streamapp.types import Envelope, ForwardedRecord

__all__ = ["PARSERS", "envelope_problem", "key_problem", "reset_state", "stored_state"]

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
