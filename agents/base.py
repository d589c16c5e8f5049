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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import faust
import orjson
from aiokafka.structs import ConsumerRecord

from streamapp.models import (
    MAX_ID_CHARS,
    Alert,
    InvalidEvent,
    Parser,
    decode_envelope,
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
from streamapp.rules.base import Apply, Judge, Late, State, step
from streamapp.runtime.consumer import check_membership, drain_to_router
from streamapp.runtime.producer import Delivery
from streamapp.settings import Settings
from streamapp.types import Envelope, ForwardedRecord, RecordSink, StateStore

__all__ = ["TICK", "Apply", "Detector", "HeldKeys", "Judge", "Updates", "detect", "detect_batch"]

logger = logging.getLogger(__name__)

#: (entity, state after the batch, the typed events applied to it) -> records for an updates topic
Updates = Callable[[str, State, list[Any]], Iterable[bytes]]

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


class EventClock(Protocol):
    """The worker's event clock (streamapp.runtime.clock.worker_clock): retention horizon, newest event."""

    @property
    def horizon(self) -> float: ...

    def observe(self, ts: float) -> None: ...


@dataclass
class Detector:
    """One detector: its rule, its state and where its output goes; a batch handler of a by-entity topic.

    Everything it reads is here, so that the loop runs in a unit test with fakes (a dict as the
    state store, a list as the record sink) as it runs on a worker (built by :func:`detector_for`).
    """

    #: the source topic's short name ("logins"): its ingest parser checks every envelope again
    source: str
    store: StateStore
    new_state: Callable[[], State]
    apply: Apply
    settings: Settings
    #: a record sink per batch: streamapp.runtime.producer.RecordBatches on a worker
    new_sink: Callable[[], RecordSink]
    #: streamapp.pipeline.alerting.Alerting.publish: the delivery to wait for, or None
    publish_alert: Callable[[Alert], Awaitable[Awaitable[Any] | None]]
    clock: EventClock
    #: the topic names of late events and dead letters
    late_events_topic: str
    dead_letters_topic: str
    #: (topic name, make): every key a batch changes also sends make(entity, state, events) there
    updates: tuple[str, Updates] | None = None
    judge: Judge | None = None
    held: HeldKeys | None = None

    @property
    def parse(self) -> Parser:
        return _PARSERS[self.source]

    async def __call__(self, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        return await detect_batch(records, self)


async def detect_batch(records: Sequence[ConsumerRecord], detector: Detector) -> list[Delivery]:
    """Run the detector's rule for every record of a by-entity topic; return the deliveries.

    The records of one key are applied in arrival order to one loaded state, which is written
    once: a burst of a hot key costs one RocksDB write and one changelog record per batch
    instead of one per event. Alerts are acknowledged by the broker before the states that
    remember them are written: a crash in between re-publishes them (same alert_id) rather
    than losing them.

    With ``updates`` = (topic, make), every key changed by the batch also sends ``make(entity,
    state, applied events)`` to ``topic`` (keyed by the entity), with the changelog records.
    """
    settings, store, held = detector.settings, detector.store, detector.held
    batches = detector.new_sink()
    rejects = _Rejects(batches, settings.topic(detector.source), store.name, detector)
    by_key: dict[tuple[int, bytes], list[ConsumerRecord]] = {}
    for record in records:
        problem = key_problem(record.key)
        if problem is not None:  # only the app writes these topics: someone else did
            rejects.dead(record, f"record on an internal topic {problem}", as_read=True)
            continue
        by_key.setdefault((record.partition, record.key), []).append(record)
    alerts: list[Alert] = []
    changed_states: list[tuple[int, bytes, State]] = []
    if detector.updates is not None:
        updates_topic, make_updates = detector.updates
        await batches.prepare(updates_topic)
    step = partial(_apply_events, detector=detector, rejects=rejects)
    now = time.time()
    ceiling = now + settings.max_clock_skew_seconds
    for (partition, key), key_records in by_key.items():
        raw = store.load(partition, key)
        stored = stored_state(raw, store.name, key, ceiling)
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
            if detector.updates is not None and applied:
                for value in make_updates(key.decode(), state, applied):
                    batches.add(updates_topic, key, value)
    await rejects.queue()
    published = [await detector.publish_alert(alert) for alert in alerts]
    deliveries = [delivery for delivery in published if delivery is not None]
    if deliveries:
        await asyncio.gather(*deliveries)
    # the zombie fence: a worker paused past its session timeout (its partitions may have moved)
    # gives the batch up here rather than write states computed from its stale ones; no await
    # between this check and the writes (streamapp.runtime.consumer.fence)
    await check_membership()
    for partition, key, state in changed_states:
        store.store(partition, key, state, batches)
    for partition in {partition for partition, _, _ in changed_states}:
        store.store_clock(partition, batches)
    sent = await batches.send()
    store.remember(sent)
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


def _apply_events(
    stored: State | None,
    key: bytes,
    records: list[ConsumerRecord],
    *,
    detector: Detector,
    rejects: _Rejects,
    isolate: bool,
) -> tuple[State, list[Alert], list[Any], bool]:
    """Apply one key's records to its state: (state, alerts, applied events, state changed).

    With ``isolate``, each record is applied to a copy of the state and one that raises goes
    to dead-letters, leaving the state as it was before it; unless the record applies cleanly
    to a fresh state: then the stored state is what fails (a changelog record someone else
    wrote), and the key goes on from the fresh one.
    """
    new_state, apply, judge, table = detector.new_state, detector.apply, detector.judge, detector.store.name
    parse, source_topic = detector.parse, detector.settings.topic(detector.source)
    state = stored if stored is not None else new_state()
    entity = key.decode()
    grace, horizon = detector.settings.grace_seconds, detector.clock.horizon
    alerts: list[Alert] = []
    applied: list[Any] = []
    changed = False
    for record in records:
        event: Envelope[Any] | None
        if record.value == TICK:
            event = None
        else:
            event, problem = envelope_problem(record, parse, source_topic)
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
            if event is not None:  # (a tick is never late)
                rejects.late(record, event, outcome.reason, outcome.seconds)
            continue
        changed = True
        alerts.extend(outcome)
        if event is not None:
            detector.clock.observe(event.event.ts)
            applied.append(event.event)
    return state, alerts, applied, changed


class _Rejects:
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
            headers = _coordinates(self._source_topic, event.partition, event.offset)
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


async def detect(stream: faust.StreamT[bytes], agent: str) -> None:
    """A detector agent's body: what reaches its stream goes to the app's router (none does while
    the batch consumer runs: see streamapp.runtime.consumer)."""
    await drain_to_router(stream, agent)


async def send_ticks(topic: str, held: HeldKeys, grace: float, new_sink: Callable[[], RecordSink]) -> None:
    """Every second, a tick record to each key that has held events for the grace (wall time)."""
    while True:
        await asyncio.sleep(1.0)
        due = held.due(time.time(), grace)
        if not due:
            continue
        try:
            batches = new_sink()
            await batches.prepare(topic)
            for partition, key in due:
                batches.add(topic, key, TICK, partition)
            for delivery in await batches.send():
                await delivery.future
        except Exception:  # the key stays held: the next round sends its tick again
            logger.exception("sending ticks to %s failed", topic)


def detector_for(
    app: faust.App,
    settings: Settings,
    *,
    source: str,
    table: faust.types.TableT,
    new_state: Callable[[], State],
    apply: Apply,
    updates: tuple[str, Updates] | None = None,
    judge: Judge | None = None,
    held: HeldKeys | None = None,
) -> Detector:
    """A detector on a worker: ``table``'s RocksDB, the app's producer, its alerts topic and clock."""
    # the worker's collaborators: importing them builds the app, which a Detector with fakes does
    # not need (tests/unit/agents)
    from streamapp.pipeline.alerting import Alerting
    from streamapp.runtime.clock import worker_clock
    from streamapp.runtime.producer import RecordBatches
    from streamapp.runtime.topics import alerts_topic, dead_letters_topic, late_events_topic
    from tables.base import TableStore

    alerting = Alerting(settings.rules, settings.publish_alerts, alerts_topic.send)
    return Detector(
        source=source, store=TableStore(table), new_state=new_state, apply=apply, settings=settings,
        new_sink=partial(RecordBatches, app), publish_alert=alerting.publish, clock=worker_clock,
        late_events_topic=late_events_topic.get_topic_name(),
        dead_letters_topic=dead_letters_topic.get_topic_name(),
        updates=updates, judge=judge, held=held,
    )  # fmt: skip
