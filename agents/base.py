"""The loop every detector shares: per batch, load each key's state once, apply, store once, alert.

Every forwarded event is first checked against the lateness model (streamapp.rules.base.lateness):
a late event goes to ``late-events`` and never into state. Rules whose answer depends on the
events before one in event time hold events in their state (``pending``) and judge them once the
key's event clock has passed them by the grace (``judge``); a key that stays quiet is judged
after the grace in wall time, through a tick record sent to its own partition (:class:`HeldKeys`).
A record that makes a rule raise goes to ``dead-letters`` alone; the rest of the batch goes on.
Only the app writes the by-entity topics: a record found there that it could not have written (a
key no entity can have, an envelope whose event the ingest parser refuses) is a dead letter too,
and a stored state that cannot be read, or that makes a valid event raise, is replaced by a fresh
one (logged, ``streamapp_state_resets_total``): no record and no state can stop the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import faust
import orjson
from aiokafka.structs import ConsumerRecord
from faust.types import TableT

from streamapp.app import app, settings
from streamapp.models import (
    MAX_ID_CHARS,
    Alert,
    InvalidEvent,
    Parser,
    id_problem,
    parse_login,
    parse_sensor_reading,
    parse_stock_price,
    parse_transaction,
)
from streamapp.observability.metrics import (
    DEAD_LETTERS_TOTAL,
    EXPIRED_EVENTS_TOTAL,
    LATE_EVENTS_TOTAL,
    STATE_RESETS_TOTAL,
)
from streamapp.pipeline.alerting import publish_alert
from streamapp.rules.base import Apply, Judge, Late, State, step
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.consumer import check_membership, consume_in_batches
from streamapp.runtime.producer import Delivery, RecordBatches
from streamapp.runtime.topics import dead_letters_topic, late_events_topic
from tables.base import load_state, remember_changelog_offsets, store_event_clock, store_state

__all__ = ["TICK", "Apply", "HeldKeys", "Judge", "Updates", "detect", "detect_batch"]

logger = logging.getLogger(__name__)

#: (entity, state after the batch, the events applied to it) -> records for an updates topic
Updates = Callable[[str, State, list[dict[str, Any]]], Iterable[bytes]]

#: the value of a tick record: judge every event the key holds (it has been quiet for the grace)
TICK = b'{"tick":1}'

#: source topic -> its ingest parser: an event read back from a by-entity topic must pass it again
#: (only the app writes those topics; whatever else is found there is refused like hostile input)
_PARSERS: dict[str, Parser] = {
    "logins": parse_login,
    "sensor-readings": parse_sensor_reading,
    "transactions": parse_transaction,
    "stock-prices": parse_stock_price,
}


class HeldKeys:
    """Keys whose state holds events not judged yet, and since when (wall time), per table.

    A key that gets no newer event would hold them forever; :meth:`due` names those held for
    the grace, and the detector's tick task sends each a tick record through its own topic
    partition, so that the judging happens in the stream, in order with the key's events.
    """

    def __init__(self) -> None:
        self._since: dict[tuple[int, bytes], float] = {}

    def update(self, partition: int, key: bytes, state: State, now: float) -> None:
        if state.get("pending"):
            self._since.setdefault((partition, key), now)
        else:
            self._since.pop((partition, key), None)

    def due(self, now: float, grace: float) -> list[tuple[int, bytes]]:
        """Keys held for at least ``grace`` seconds; each is due again only after another grace."""
        due = [held for held, since in self._since.items() if now - since >= grace]
        for held in due:
            self._since[held] = now
        return due

    def __len__(self) -> int:
        return len(self._since)


async def detect_batch(
    records: Sequence[ConsumerRecord],
    table: TableT,
    new_state: Callable[[], State],
    apply: Apply,
    source: str,
    updates: tuple[faust.TopicT, Updates] | None = None,
    judge: Judge | None = None,
    held: HeldKeys | None = None,
) -> list[Delivery]:
    """Run ``apply`` for every record of a by-entity topic against ``table``; return the deliveries.

    The records of one key are applied in arrival order to one loaded state, which is written
    once: a burst of a hot key costs one RocksDB write and one changelog record per batch
    instead of one per event. Alerts are acknowledged by the broker before the states that
    remember them are written: a crash in between re-publishes them (same alert_id) rather
    than losing them.

    With ``updates`` = (topic, make), every key changed by the batch also sends ``make(entity,
    state, applied events)`` to ``topic`` (keyed by the entity), with the changelog records.
    """
    batches = RecordBatches(app)
    rejects = _Rejects(batches, settings.topic(source), table.name)
    by_key: dict[tuple[int, bytes], list[ConsumerRecord]] = {}
    for record in records:
        problem = key_problem(record.key)
        if problem is not None:  # only the app writes these topics: someone else did
            rejects.dead(record, f"record on an internal topic {problem}", as_read=True)
            continue
        by_key.setdefault((record.partition, record.key), []).append(record)
    alerts: list[Alert] = []
    changed_states: list[tuple[int, bytes, State]] = []
    if updates is not None:
        updates_topic, make_updates = updates[0].get_topic_name(), updates[1]
        await batches.prepare(updates_topic)
    step = partial(
        _apply_events, new_state=new_state, apply=apply, judge=judge, rejects=rejects,
        parse=_PARSERS.get(source), table=table.name,
    )  # fmt: skip
    now = time.time()
    ceiling = now + settings.max_clock_skew_seconds
    for (partition, key), key_records in by_key.items():
        raw = load_state(table, partition, key, raw=True)
        stored = stored_state(raw, table.name, key, ceiling)
        try:
            state, found, applied, changed = step(stored, key, key_records, isolate=False)
        except Exception:
            # one of these records makes the rule raise: again one record at a time, each on a
            # copy of the state, so that only the guilty ones go to dead-letters
            rejects.clear_for(key_records)
            stored = orjson.loads(raw) if stored is not None and raw is not None else None  # mutated
            state, found, applied, changed = step(stored, key, key_records, isolate=True)
        alerts.extend(found)
        if changed:
            changed_states.append((partition, key, state))
            if held is not None:
                held.update(partition, key, state, now)
            if updates is not None and applied:
                for value in make_updates(key.decode(), state, applied):
                    batches.add(updates_topic, key, value)
    await rejects.queue()
    deliveries = [d for d in [await publish_alert(alert) for alert in alerts] if d is not None]
    if deliveries:
        await asyncio.gather(*deliveries)
    # the zombie fence: a worker paused past its session timeout (its partitions may have moved)
    # gives the batch up here rather than write states computed from its stale ones; no await
    # between this check and the writes (streamapp.runtime.consumer.fence)
    await check_membership()
    for partition, key, state in changed_states:
        store_state(table, partition, key, state, batches)
    for partition in {partition for partition, _, _ in changed_states}:
        store_event_clock(table, partition, batches)
    sent = await batches.send()
    remember_changelog_offsets(table, sent)
    return sent


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


def envelope_problem(record: ConsumerRecord, parse: Parser | None) -> tuple[Any, str | None]:
    """(event, None) for a by-entity record the app could have written, else (None, why).

    A forwarded event is ``{"src": [partition, offset], "e": fields, ...}``; read back from the
    topic (not handed over in-process), its fields must pass the source's parser again, which
    bounds its time by the clock skew: a forged one must not move the event clock.
    """
    try:
        event = orjson.loads(record.value) if record.value is not None else None
    except orjson.JSONDecodeError:
        return None, "record on an internal topic that is not a JSON event"
    if not isinstance(event, dict) or not isinstance(event.get("e"), dict):
        return None, "record on an internal topic that is not a forwarded event"
    src = event.get("src")
    if not (isinstance(src, list) and len(src) == 2 and all(type(n) is int and n >= 0 for n in src)):
        return None, "record on an internal topic whose 'src' is not [partition, offset]"
    if parse is not None and record.offset >= 0:
        try:
            parse(event["e"], None)
        except InvalidEvent as exc:
            return None, f"record on an internal topic with an event ingest refuses: {exc}"
    return event, None


def _apply_events(
    stored: State | None,
    key: bytes,
    records: list[ConsumerRecord],
    *,
    new_state: Callable[[], State],
    apply: Apply,
    judge: Judge | None,
    rejects: _Rejects,
    parse: Parser | None,
    table: str,
    isolate: bool,
) -> tuple[State, list[Alert], list[dict[str, Any]], bool]:
    """Apply one key's records to its state: (state, alerts, applied events, state changed).

    With ``isolate``, each record is applied to a copy of the state and one that raises goes
    to dead-letters, leaving the state as it was before it; unless the record applies cleanly
    to a fresh state: then the stored state is what fails (a changelog record someone else
    wrote), and the key goes on from the fresh one.
    """
    state = stored if stored is not None else new_state()
    entity = key.decode()
    grace, horizon = settings.grace_seconds, worker_clock.horizon
    alerts: list[Alert] = []
    applied: list[dict[str, Any]] = []
    changed = False
    for record in records:
        if record.value == TICK:
            event = None
        else:
            event, problem = envelope_problem(record, parse)
            if problem is not None:
                rejects.dead(record, problem, as_read=True)
                continue
        before = orjson.dumps(state) if isolate else None
        try:
            outcome = step(state, entity, event, apply, judge, grace, horizon)
        except Exception as exc:
            if not isolate:
                raise
            fresh = new_state()
            try:
                outcome = step(fresh, entity, event, apply, judge, grace, horizon)
            except Exception:
                logger.exception("a %s record made the rule raise", record.topic)
                reason = f"internal error while detecting: {type(exc).__name__}: {exc}"[:500]
                rejects.dead(record, reason)
                state = orjson.loads(before) if before is not None else new_state()
                continue
            reset_state(table, key, f"an event raised {type(exc).__name__} on it ({exc})"[:300])
            state, changed = fresh, True
        if outcome is None:
            continue
        if isinstance(outcome, Late):
            rejects.late(record, event or {}, outcome.reason, outcome.seconds)
            continue
        changed = True
        alerts.extend(outcome)
        if event is not None:
            worker_clock.observe(event["e"]["ts"])
            applied.append(event["e"])
    return state, alerts, applied, changed


class _Rejects:
    """Late events and dead letters of one batch, queued with the batch's other records."""

    def __init__(self, batches: RecordBatches, source_topic: str, detection: str) -> None:
        self._batches = batches
        self._source_topic = source_topic
        self._detection = detection
        self._late: list[tuple[ConsumerRecord, dict[str, Any], str, float]] = []
        self._dead: list[tuple[ConsumerRecord, str, bool]] = []

    def late(self, record: ConsumerRecord, event: dict[str, Any], reason: str, seconds: float) -> None:
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
        target = late_events_topic.get_topic_name()
        await self._batches.prepare(target)
        counter = LATE_EVENTS_TOTAL.labels(topic=self._source_topic)
        for record, event, reason, seconds in self._late:
            value, headers = _source_of(event, record, self._source_topic)
            headers += [
                ("x-error", f"late event for {self._detection}: {reason}".encode()),
                ("x-lateness-seconds", f"{seconds:.3f}".encode()),
            ]
            self._batches.add(target, record.key, value, None, headers)
            counter.inc()
            if reason.startswith("older than the retention"):
                EXPIRED_EVENTS_TOTAL.labels(topic=self._source_topic).inc()

    async def _queue_dead(self) -> None:
        target = dead_letters_topic.get_topic_name()
        await self._batches.prepare(target)
        partitions = self._batches.partitions_of(target)
        for record, reason, as_read in self._dead:
            try:
                if as_read:  # not something the app forwarded: the record itself, where it was read
                    raise ValueError(reason)
                value, headers = _source_of(orjson.loads(record.value), record, self._source_topic)
            except Exception:  # not an envelope at all: the record itself, where it was read
                value, headers = record.value, _coordinates(record.topic, record.partition, record.offset)
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
    return value, _coordinates(source_topic, int(src[0]), int(src[1]))


def _coordinates(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        ("x-source-topic", topic.encode()),
        ("x-source-partition", str(partition).encode()),
        ("x-source-offset", str(offset).encode()),
    ]


async def detect(
    stream: faust.StreamT[bytes],
    table: TableT,
    new_state: Callable[[], State],
    apply: Apply,
    source: str,
    updates: tuple[faust.TopicT, Updates] | None = None,
    judge: Judge | None = None,
    held: HeldKeys | None = None,
) -> None:
    """Run :func:`detect_batch` for every fetch of the stream's topic (see streamapp.runtime.consumer)."""
    await consume_in_batches(
        stream,
        partial(
            detect_batch, table=table, new_state=new_state, apply=apply, source=source,
            updates=updates, judge=judge, held=held,
        ),
    )  # fmt: skip


async def send_ticks(topic: faust.TopicT, held: HeldKeys) -> None:
    """Every second, a tick record to each key that has held events for the grace (wall time)."""
    name = topic.get_topic_name()
    while True:
        await asyncio.sleep(1.0)
        due = held.due(time.time(), settings.grace_seconds)
        if not due:
            continue
        try:
            batches = RecordBatches(app)
            await batches.prepare(name)
            for partition, key in due:
                batches.add(name, key, TICK, partition)
            for delivery in await batches.send():
                await delivery.future
        except Exception:  # the key stays held: the next round sends its tick again
            logger.exception("sending ticks to %s failed", name)
