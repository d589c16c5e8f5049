"""run_detections: the detections of the `detections` control topic, live, with no code per detection.

Three parts. ``follow_control`` reads the compacted control topic into the registry (every worker
reads all of it). ``route_detections`` takes every batch of the source topics the specs name
(STREAMAPP_DETECTION_TOPICS from the start; another topic a spec names is subscribed while the
worker runs, see streamapp.runtime.subscriptions), and the app's ingest hands over the valid
events of its JSON input topics (:data:`handoff`: a spec reads what the app accepts, and the
topic is read once); each event is checked against each spec of its topic (a spec-only topic's
bad records go to dead-letters with the reason) and the
events that pass ``where`` to ``<app id>-detection-events``, keyed ``name NUL entity``, on the
partition of the entity alone (:func:`detection_partition`). ``run_detections`` applies the
engine to each key's state in ``detection-state`` (same partition), a batch at a time (each
key's state read and written once per batch: :func:`_apply`); a timer moves each detection's
watermark (its newest event time on this worker minus the grace) to the keys that hold events or
may have gone silent, through tick records on their own partition.

In process, without the hop. A source topic keyed by the spec's key (logins by IP) has each
event on the partition its entity hashes to, which is the event's partition of detection-events
too: such an event is applied by the handler that read it (``route_detections`` or the topic's
ingest) at once, in the same batch, with no record of its own in detection-events. Only when all
of this holds, else it is forwarded:

- the source topic is an app input topic or one of STREAMAPP_DETECTION_TOPICS, with as many
  partitions as detection-events. Every worker subscribes to those from its start, so faust assigns them
  copartitioned with detection-events (same partition numbers to the same worker). A topic
  subscribed while running is always forwarded: while workers subscribe one after another it is
  not copartitioned, and a key of one source partition must not switch between the two paths
  (its forwarded events, still in the topic, would then come after later ones applied here,
  and be dropped as replays by ``seen_before``).
- this worker owns that partition of detection-events now (a safety net: with the above it
  does, and the batch's writes pass the zombie fence, streamapp.runtime.consumer.fence).

So a key's events from one source partition always take one path, in offset order. Delivery
stays what it was: the state's RocksDB write and changelog record go out with the batch's
other records and the source offsets are acknowledged only once they are delivered (in the
worker's transaction under exactly-once). A redelivered source record (after a crash or a
rebalance) is recognised by its source position in the state (``seen_before``) whichever path it
takes, and recovery restores ``detection-state`` from its changelog as before. The late-events
copy of an event applied here is its source value, byte for byte, as for forwarded ones.

Upgrading from the layout before (keyed records on the partition of the whole key): a record
written that way is forwarded again to its entity's partition, but the states stored that way
are not read again (their keys start afresh on their entity's partition, without the events they
held or kept in a window), and a forwarded event may arrive after later ones of its source
partition applied in process (then dropped as a replay). Stop every worker with
detection-events drained and no event held to upgrade without losing any.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from aiokafka.structs import ConsumerRecord
from faust.web import Request, Response, View
from prometheus_client import Counter, Gauge

from agents.record_checks import detection_record, reset_state, stored_state
from agents.rejects import source_coordinates
from streamapp.app import app, settings
from streamapp.detections.control import follow
from streamapp.detections.engine import Engine, Late
from streamapp.detections.operators import SENSOR_DETECTIONS, running_spec
from streamapp.detections.shipped import late_events_label, shipped_specs
from streamapp.models import Alert, InvalidEvent, decode_json_object
from streamapp.observability.metrics import DEAD_LETTERS_TOTAL, EXPIRED_EVENTS_TOTAL, LATE_EVENTS_TOTAL
from streamapp.pipeline.alerting import Alerting
from streamapp.pipeline.ingest import ENVELOPE_OVERHEAD_BYTES, send_dead_letter
from streamapp.rules import temperature
from streamapp.rules.base import State
from streamapp.rules.windows import bucket_start
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.consumer import check_membership, drain_to_router
from streamapp.runtime.producer import Delivery, RecordBatches, key_partition
from streamapp.runtime.subscriptions import LiveTopics
from streamapp.runtime.topics import (
    SOURCE_TOPICS,
    alerts_topic,
    dead_letters_topic,
    late_events_topic,
    sensor_windows_topic,
)
from streamapp.types import RecordSink
from tables.base import load_state, remember_changelog_offsets, state_steps, store_event_clock, store_states
from tables.detection_state import detection_name, detection_state, registry

__all__ = [
    "StateCache",
    "apply_batch",
    "detection_events_topic",
    "detection_partition",
    "forwarded_envelope",
    "follow_control",
    "forget_swept",
    "get_detections",
    "live_topics",
    "rebuild_index",
    "registry",
    "route_batch",
    "route_detections",
    "run_detections",
    "subscribe_detection_topics",
    "tick_detections",
]

logger = logging.getLogger(__name__)

DETECTION_EVENTS_TOTAL = Counter(
    "streamapp_detection_events", "Events applied to a detection's state", ["detection"]
)
DETECTION_ALERTS_TOTAL = Counter("streamapp_detection_alerts", "Alerts a detection raised", ["detection"])
DETECTION_INVALID_TOTAL = Counter(
    "streamapp_detection_invalid_events", "Source records refused by a detection's field types", ["detection"]
)
DETECTION_KEYS = Gauge(
    "streamapp_detection_keys", "Keys of a detection this worker has touched since it started", ["detection"]
)

#: how long the detection agents wait for the control topic at start before going on without it
LOAD_WAIT_SECONDS = 30.0

source_topics = app.topic(
    *(settings.topic(name) for name in settings.detection_topics),
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    partitions=settings.partitions, internal=True,
)  # fmt: skip
detection_events_topic = app.topic(
    f"{settings.app_id}-detection-events",
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    partitions=settings.partitions, internal=True,
)  # fmt: skip

#: per detection: newest event time seen by this worker, and the wall time it was seen
_newest: dict[str, tuple[float, float]] = {}
#: per detection: key -> what the timer needs of its state (held events, last event, silence)
_watch: dict[str, dict[bytes, dict[str, Any]]] = {}
#: the index must be rebuilt from the states of the partitions this worker owns (after recovery)
_reindex = asyncio.Event()
#: keys whose summary was written while the index was being rebuilt (theirs is the newer)
_fresh: set[bytes] | None = None
#: keys read from the table per step of the rebuild (the loop runs between steps)
REINDEX_STEP_KEYS = 1000


def _changed(name: str, engine: Engine | None) -> None:
    """A new version: a new state shape forgets what the timer knew of the old states."""
    if engine is None:  # disabled
        _watch.pop(name, None)
        _newest.pop(name, None)
        return
    if engine.spec.topic not in SOURCE_TOPICS:  # (those come from the app's ingest: :data:`handoff`)
        live_topics.want(settings.topic(engine.spec.topic))  # nothing if consumed already
    watched = _watch.get(name, {})
    for key, summary in list(watched.items()):
        if summary.get("shape") != engine.shape:
            watched.pop(key, None)
    shared = _shared_summary(engine.shape)
    if engine.ticked and any(summary is shared for summary in watched.values()):
        _reindex.set()  # keys an eager version kept no summary of: read from their states again


registry.listeners.append(_changed)


@app.task
async def follow_control() -> None:
    """Run the shipped detections of STREAMAPP_RULES, then follow the control topic for as long as
    the worker runs (a failure is logged and retried)."""
    registry.install(shipped_specs(settings))
    while True:
        try:
            await follow(settings, registry)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reading the detections control topic failed; retrying")
            await asyncio.sleep(1.0)


async def _loaded() -> None:
    try:
        await asyncio.wait_for(registry.loaded.wait(), LOAD_WAIT_SECONDS)
    except TimeoutError:
        logger.error(
            "the detections control topic was not read within %g s: going on without it", LOAD_WAIT_SECONDS
        )
        registry.loaded.set()


async def route_batch(records: Sequence[ConsumerRecord]) -> list[Delivery]:
    """The batch handler of the specs' own source topics (streamapp.app.declare_routes for those of
    STREAMAPP_DETECTION_TOPICS, :data:`live_topics` for those subscribed since): each record decoded,
    a bad one to dead-letters with the reason, then :func:`_route`.

    The app's own input topics are left out: their ingest validates them and hands its valid events
    over (:data:`handoff`), so a spec reads only what the app accepts, and reads it once.
    """
    if not registry.loaded.is_set():
        await _loaded()
    batches = RecordBatches(app)
    prefix = len(settings.topic_prefix)
    max_bytes = settings.max_record_bytes
    events: list[tuple[ConsumerRecord, dict[str, Any]]] = []
    read: dict[str, bool] = {}  # topic -> whether a spec reads it here
    for record in records:
        wanted = read.get(record.topic)
        if wanted is None:
            contract = record.topic[prefix:]
            wanted = read[record.topic] = contract not in SOURCE_TOPICS and bool(registry.for_topic(contract))
        if not wanted:
            continue
        try:
            if record.value is not None and len(record.value) > max_bytes:
                raise InvalidEvent(f"record of {len(record.value)} bytes exceeds STREAMAPP_MAX_RECORD_BYTES")
            obj = decode_json_object(record.value)
        except InvalidEvent as exc:
            await send_dead_letter(record, str(exc), batches, dead_letters_topic.get_topic_name())
            continue
        events.append((record, obj))
    return await _route(events, batches, dead_letters=True, ingested=False)


class Handoff:
    """The app's ingest hands its valid events of a JSON input topic to the specs of that topic here
    (streamapp.types.DetectionHandoff; streamapp.app.declare_routes gives it to each ingest)."""

    async def wanted(self, topic: str) -> bool:
        if not registry.loaded.is_set():
            await _loaded()
        return bool(registry.for_topic(topic[len(settings.topic_prefix) :]))

    async def __call__(self, events: Sequence[tuple[ConsumerRecord, Any]], /) -> list[Delivery]:
        # (record, the ingest's event): not parsed again. A record the ingest accepted but a spec
        # refuses (a field the topic does not have) is counted, not dead-lettered (the app takes it)
        return await _route(events, RecordBatches(app), dead_letters=False, ingested=True)


#: what each ingest of a JSON input topic hands its valid events to
handoff = Handoff()


async def _route(
    events: Sequence[tuple[ConsumerRecord, Any]], batches: RecordBatches, dead_letters: bool, ingested: bool
) -> list[Delivery]:
    """Each (record, decoded value; ``ingested``: the app ingest's event of it) checked against each
    spec of its topic (``dead_letters``: a refused
    record goes there with the reason); the events that pass ``where`` applied here if their key's
    partition of ``<app id>-detection-events`` is the one they were read from and owned by this
    worker (see the module), else forwarded there. Sends ``batches``; its deliveries."""
    target = detection_events_topic.get_topic_name()
    prefix = len(settings.topic_prefix)
    #: source topic -> (its engines with their key prefix ``name NUL``, the partitions applied here)
    routes: dict[str, tuple[list[tuple[Engine, bytes]], frozenset[int]]] = {}
    partitions = 0
    direct: dict[tuple[int, bytes], list[Any]] = {}
    for record, obj in events:
        route = routes.get(record.topic)
        if route is None:
            engines = registry.for_topic(record.topic[prefix:])
            here: frozenset[int] = frozenset()
            if engines:
                await batches.prepare(target, record.topic)
                partitions = batches.partitions_of(target)
                here = _applied_here(record.topic, partitions, batches.partitions_of(record.topic))
            route = routes[record.topic] = ([(e, e.name.encode() + b"\x00") for e in engines], here)
        named, here = route
        ticks = _local_ticks.get(record.topic)
        if ticks and record.partition in here and record.partition in ticks:  # first, as if they came first
            for key, tick in ticks.pop(record.partition).items():
                direct.setdefault((record.partition, key), []).append(tick)
        record_ts = record.timestamp / 1000.0
        text: str | None = None  # the value as text, for the envelopes forwarded (decoded once)
        for engine, key_prefix in named:
            try:
                if ingested:
                    ts, fields = engine.parse_ingested(obj, record.value, record_ts)
                else:
                    ts, fields = engine.parse(obj, record_ts)
            except InvalidEvent as exc:
                DETECTION_INVALID_TOTAL.labels(detection=engine.name).inc()
                if dead_letters:
                    await send_dead_letter(record, str(exc), batches, dead_letters_topic.get_topic_name())
                continue
            if not engine.where(fields):
                continue
            entity = fields[engine.key].encode()
            key = key_prefix + entity
            partition = key_partition(entity, partitions)  # detection_partition, with the bytes at hand
            if partition == record.partition and partition in here:
                # the value goes along for late-events, which keep it byte for byte
                message = {
                    "src": (record.partition, record.offset),
                    "ts": ts,
                    "f": fields,
                    "raw": record.value,
                }
                direct.setdefault((partition, key), []).append(message)
                continue
            if text is None:
                text = record.value.decode()
            batches.add(target, key, forwarded_envelope(engine.name, record, ts, fields, text), partition)
    if direct:
        await _apply(direct, batches)
    sent = await batches.send()
    if direct:
        remember_changelog_offsets(detection_state, sent)
    return sent


def forwarded_envelope(
    name: str, record: ConsumerRecord, ts: float, fields: dict[str, Any], text: str
) -> bytes:
    """The value of an event forwarded to ``<app id>-detection-events``: the detection, the source
    position, the event time and fields, and the source value as text (``text``) for late-events.

    Without that copy when it would outgrow the source record by more than
    ENVELOPE_OVERHEAD_BYTES, as the ingest's envelopes (streamapp.pipeline.ingest): escapes nearly
    double a value of quotes or backslashes, more than the broker takes, and the failed delivery
    stopped the worker (a 1 MiB login of escaped quotes, on specs only). A late event of it then
    carries its fields (:func:`_source_value`).
    """
    envelope = {"n": name, "src": [record.partition, record.offset], "ts": ts, "f": fields, "raw": text}
    payload = orjson.dumps(envelope)
    if len(payload) > len(record.value or b"") + ENVELOPE_OVERHEAD_BYTES:
        del envelope["raw"]
        payload = orjson.dumps(envelope)
    return payload


def detection_partition(entity: str, partitions: int) -> int:
    """The partition of ``<app id>-detection-events`` and ``detection-state`` of every detection's key
    about ``entity``: the one Kafka's default partitioner gives the entity itself (not the whole
    key ``name NUL entity``), as a source topic keyed by that entity has it (see the module)."""
    return key_partition(entity.encode(), partitions)


def _state_partition(key: bytes, partitions: int) -> int:
    """The partition of a detection's key ``name NUL entity``: :func:`detection_partition` of its entity."""
    return key_partition(key.partition(b"\x00")[2], partitions)


def _applied_here(topic: str, partitions: int, source_partitions: int) -> frozenset[int]:
    """The partitions of ``topic`` whose events this worker applies in process (see the module):
    none unless the topic is consumed from the start (an app input topic or one of
    STREAMAPP_DETECTION_TOPICS) with as many partitions as ``<app id>-detection-events``; of
    those, the partitions of detection-events this worker owns."""
    if topic not in _static_topics or partitions != source_partitions:
        return frozenset()
    generation = app.consumer_generation_id
    if _owned[0] != generation:  # the assignment changes with the generation only (a rebalance)
        target = detection_events_topic.get_topic_name()
        owned = frozenset(tp.partition for tp in app.consumer.assignment() if tp.topic == target)
        _owned[:] = [generation, owned]
    return _owned[1]  # type: ignore[no-any-return]


#: [consumer generation, the partitions of detection-events this worker owns in it]
_owned: list[Any] = [None, frozenset()]


@app.agent(source_topics, name="route-detections")
async def route_detections(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_detections.name)


#: the app's input topics and those of STREAMAPP_DETECTION_TOPICS: every worker subscribes to them
#: from its start, so they are assigned copartitioned with detection-events (their events may be
#: applied in process)
_static_topics = frozenset(settings.topic(name) for name in (*SOURCE_TOPICS, *settings.detection_topics))
#: the source topics this worker consumes: STREAMAPP_DETECTION_TOPICS from the start, and every
#: other topic an applied spec names, subscribed while running (within a second or two)
live_topics = LiveTopics(
    app, route_batch, route_detections.name, [settings.topic(name) for name in settings.detection_topics],
    partitions=settings.partitions,
)  # fmt: skip


@app.task
async def subscribe_detection_topics() -> None:
    await live_topics.run()


@app.agent(detection_events_topic, name="run-detections")
async def run_detections(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, run_detections.name)


async def apply_batch(records: Sequence[ConsumerRecord]) -> list[Delivery]:
    """The batch handler of ``<app id>-detection-events`` (streamapp.app.declare_routes)."""
    if not registry.loaded.is_set():
        await _loaded()
    batches = RecordBatches(app)
    target = detection_events_topic.get_topic_name()
    await batches.prepare(target)
    partitions = batches.partitions_of(target)
    by_key: dict[tuple[int, bytes], list[Any]] = {}
    ceiling = time.time() + settings.max_clock_skew_seconds
    for record in records:
        # only the app writes this topic: what else is found there is a dead letter, as read
        message = detection_record(record.key, record.value, registry.engines, ceiling)
        if message is None:  # a tick of a detection that no longer runs
            continue
        if isinstance(message, str):
            await send_dead_letter(record, message, batches, dead_letters_topic.get_topic_name())
            continue
        partition = _state_partition(record.key, partitions)
        if partition != record.partition:  # written before the entity's partition: see the module
            if "tick" not in message:  # (a tick is sent again by the timer)
                batches.add(target, record.key, record.value, partition)
            continue
        by_key.setdefault((record.partition, record.key), []).append(message)
    await _apply(by_key, batches)
    sent = await batches.send()
    remember_changelog_offsets(detection_state, sent)
    return sent


async def _apply(by_key: dict[tuple[int, bytes], list[Any]], batches: RecordBatches) -> None:
    """Each key's events (records of detection-events, or messages applied in process) applied to its
    state in ``detection-state``, whose writes go to ``batches``.

    The events of one key are applied in arrival order to one loaded state, which is written
    once (RocksDB now, its changelog record with the batch's other records): a burst of a hot key
    costs one state read, one write and one changelog record per batch instead of one per event.
    One event that raises is logged and skipped; the rest of its key and of the batch go on.
    """
    alerts: list[Alert] = []
    lates: list[tuple[str, str, dict[str, Any], Late]] = []
    changed: list[tuple[int, bytes, State]] = []
    applied: dict[str, int] = {}
    touched: set[str] = set()
    # the sinks' sensor windows, from the states of a running temperature spec
    windows_from = running_spec(SENSOR_DETECTIONS, registry.engines)
    windows: list[tuple[str, State, Sequence[Any]]] = []
    failed: list[tuple[str, dict[str, Any], str]] = []
    ceiling = time.time() + settings.max_clock_skew_seconds
    for (partition, key), key_records in by_key.items():
        name, _, entity = key.decode(errors="replace").partition("\x00")
        engine = registry.engines.get(name)
        if engine is None:  # disabled (or not applied on this worker yet): nothing runs
            continue
        stored = _states.take(partition, key)
        if stored is None:
            # a state restored from a forged changelog record may be anything: a fresh one then
            stored = stored_state(load_state(detection_state, partition, key, raw=True), detection_state.name,
                                  key, ceiling)  # fmt: skip
        horizon = worker_clock.horizon
        try:
            outcome = _apply_key(engine, entity, stored, key_records, isolate=False, horizon=horizon)
        except Exception:  # again one record at a time, so that only the guilty ones are dead letters
            raw = load_state(detection_state, partition, key, raw=True) if stored is not None else None
            guilty: list[tuple[dict[str, Any], str]] = []
            resets: list[str] = []
            outcome = _apply_key(engine, entity, raw, key_records, isolate=True, horizon=horizon,
                                  failed=guilty, resets=resets)  # fmt: skip
            failed += [(name, message, why) for message, why in guilty]
            for reset in resets[:1]:
                reset_state(detection_state.name, key, reset)
        state, found, late, events, newest = outcome
        alerts += found
        lates += [(name, entity, message, why) for message, why in late]
        if events:
            worker_clock.observe(newest)
            applied[name] = applied.get(name, 0) + events
            seen = _newest.get(name)
            _newest[name] = (max(newest, seen[0]) if seen is not None else newest, time.time())
        if state is not None:
            changed.append((partition, key, state))
            if name == windows_from:
                windows.append((entity, state, key_records))
            touched.add(name)
            _watch.setdefault(name, {})[key] = _summary(engine, state)
            if _fresh is not None:
                _fresh.add(key)
    for name, events in applied.items():
        DETECTION_EVENTS_TOTAL.labels(detection=name).inc(events)
    for name in touched:
        DETECTION_KEYS.labels(detection=name).set(len(_watch.get(name, {})))
    for name, message, reason in failed:
        await _dead_letter(name, message, reason, batches)
    if lates:
        late_target = late_events_topic.get_topic_name()
        await batches.prepare(late_target)
        queued: set[tuple[str, str, int, int]] = set()
        for name, entity, message, why in lates:
            # one record per source record and table: both temperature detections refuse a late reading
            partition, offset = message["src"]
            once = (late_events_label(name), registry.engines[name].spec.topic, partition, offset)
            if once in queued:
                continue
            queued.add(once)
            _late(name, entity, message, why, batches, late_target)
    for alert in alerts:
        await _publish(alert)
    if windows:
        await _send_windows(windows, batches)
    # the zombie fence: no await between this check and the writes (streamapp.runtime.consumer.fence)
    await check_membership()
    sizes = store_states(detection_state, changed, batches)
    for (partition, key, state), size in zip(changed, sizes, strict=True):
        _states.keep(partition, key, state, size)
    # after the batch moved the clock, as the stock prices' detector stores its own (agents.base)
    for partition in {partition for partition, _, _ in changed}:
        store_event_clock(detection_state, partition, batches)


async def _send_windows(windows: list[tuple[str, State, Sequence[Any]]], batches: RecordBatches) -> None:
    """Every sensor window a batch touched, as it is now, to ``<app id>-sensor-windows`` (one record
    per window per batch), for the sinks."""
    topic = sensor_windows_topic.get_topic_name()
    await batches.prepare(topic)
    for sensor_id, state, records in windows:
        starts = {bucket_start(ts, temperature.WINDOW_SECONDS) for ts in _event_times(records)}
        for record in temperature.window_records(state, sensor_id, starts):
            batches.add(topic, sensor_id.encode(), orjson.dumps(record))


def _event_times(records: Sequence[Any]) -> list[float]:
    """The event times of a key's records (envelopes or detection-events records; ticks have none)."""
    times = []
    for record in records:
        try:
            message = record if type(record) is dict else orjson.loads(record.value)
            if "ts" in message:
                times.append(float(message["ts"]))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            continue  # skipped when applied too (logged there)
    return times


def _apply_key(
    engine: Engine,
    entity: str,
    raw: bytes | State | None,
    records: Sequence[Any],
    isolate: bool,
    horizon: float = float("-inf"),
    failed: list[tuple[dict[str, Any], str]] | None = None,
    resets: list[str] | None = None,
) -> tuple[State | None, list[Alert], list[tuple[dict[str, Any], Late]], int, float]:
    """One key's records applied to its stored state (as stored, or decoded), in arrival order;
    an event at or before ``horizon`` (the worker's retention horizon) is late.

    A record is a detection-events record (its value an envelope or a tick) or a message: applied
    in process, or read back and checked (agents.record_checks.detection_record). Returns (the state
    to store, or None if no record changed it; alerts; late events with why; events applied; the
    newest event time applied). Without ``isolate`` a record that raises raises. With it, the
    record is tried on a fresh state: if it applies there, the stored state was what failed (a
    changelog record someone else wrote) and the key goes on from the fresh one (why, in
    ``resets``); else the record is logged and skipped, the key going on from the state before
    it, and (message, why) go to ``failed`` (dead letters of its source record).
    """
    state = engine.adopt(orjson.loads(raw) if isinstance(raw, bytes) else raw)
    alerts: list[Alert] = []
    late: list[tuple[dict[str, Any], Late]] = []
    events, newest, dirty = 0, float("-inf"), False

    def step(state: State, message: dict[str, Any]) -> list[Alert] | Late | None:
        if "tick" in message:
            return engine.tick(state, entity, float(message["tick"]), bool(message.get("flush")))
        ts = float(message["ts"])
        return engine.offer(state, entity, ts, message["f"], tuple(message["src"]), horizon)

    for record in records:
        before = orjson.dumps(state) if isolate else None
        message: dict[str, Any] = {}
        try:
            message = record if type(record) is dict else orjson.loads(record.value)
            outcome = step(state, message)
        except Exception as exc:  # one record must not stop every detection
            if not isolate:
                raise
            fresh = engine.new_state()
            try:
                outcome = step(fresh, message)
            except Exception:
                logger.exception(
                    "a detection event could not be applied (detection %s, key %r)", engine.name, entity
                )
                if failed is not None and "src" in message:
                    why = f"internal error while detecting: {type(exc).__name__}: {exc}"
                    failed.append((message, why[:500]))
                state = orjson.loads(before) if before is not None else engine.new_state()
                continue
            if resets is not None:
                resets.append(f"an event raised {type(exc).__name__} on it ({exc})"[:300])
            state, dirty = fresh, True
        if outcome is None:
            continue
        if isinstance(outcome, Late):
            late.append((message, outcome))
            continue
        if "tick" not in message:
            events, newest = events + 1, max(newest, float(message["ts"]))
        alerts += outcome
        dirty = True
    return (state if dirty else None), alerts, late, events, newest


class StateCache:
    """The states this worker stored last, decoded, so that a hot key's next batch does not decode
    its state again (a key holding a grace of events: most of the work of a batch).

    Only a state just written to RocksDB is kept (and taken out while a batch applies it), so a
    kept state is the stored one. It is valid while this worker's partitions stay its own: only
    this worker writes them meanwhile. A rebalance (a new consumer generation) or a recovery
    forgets everything. States smaller than ``min_bytes`` (cheap to decode) are not kept; the
    oldest go first beyond ``max_bytes`` (of their JSON).
    """

    def __init__(self, max_bytes: int, min_bytes: int) -> None:
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        self._states: dict[tuple[int, bytes], tuple[State, int]] = {}
        self._bytes = 0
        self._generation: int | None = None

    def _current(self) -> None:
        generation = app.consumer_generation_id
        if generation != self._generation:
            self.clear()
            self._generation = generation

    def clear(self) -> None:
        self._states.clear()
        self._bytes = 0

    def take(self, partition: int, key: bytes) -> State | None:
        """The stored state of the key, decoded, if kept (it is no longer kept: see :meth:`keep`)."""
        self._current()
        kept = self._states.pop((partition, key), None)
        if kept is None:
            return None
        self._bytes -= kept[1]
        return kept[0]

    def keep(self, partition: int, key: bytes, state: State, size: int) -> None:
        """Keep ``state``, just stored for the key (``size``: its JSON's bytes)."""
        self._current()
        previous = self._states.pop((partition, key), None)
        if previous is not None:
            self._bytes -= previous[1]
        if size < self.min_bytes or size > self.max_bytes:
            return
        self._states[(partition, key)] = (state, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            oldest = next(iter(self._states))
            self._bytes -= self._states.pop(oldest)[1]


#: decoded states of the hot keys (16 MiB of JSON at most; a state under 1 KiB decodes fast)
_states = StateCache(max_bytes=16 * 1024 * 1024, min_bytes=1024)


def _summary(engine: Engine, state: dict[str, Any]) -> dict[str, Any]:
    """What the timer needs of a key's state: its oldest held event, last event and silence.

    The keys of an engine the timer never ticks (an eager operator: nothing held, no silence)
    share one summary of their shape instead: one per key was a dict and a list per key kept
    for as long as the worker runs, which every collection of the cyclic GC walked again (with
    a hundred thousand users, about a tenth of the worker's CPU in the both-login-specs bench row).
    """
    if not engine.ticked:
        return _shared_summary(engine.shape)
    pending = state.get("pending") or []
    return {"pending": pending[:1], "last": state.get("last"), "silent": state.get("silent"),
            "shape": state.get("shape")}  # fmt: skip


@functools.cache
def _shared_summary(shape: str) -> dict[str, Any]:
    """The summary every key of an engine the timer never ticks has (:func:`_summary`); never changed."""
    return {"pending": [], "last": None, "silent": None, "shape": shape}


def forget_swept(partition: int, key: bytes) -> None:
    """A key the expiry sweep removed from ``detection-state`` (agents.expire_windows): its kept
    state (else the key's next batch would start from it) and the timer's summary go too."""
    _states.take(partition, key)
    _watch.get(detection_name(key), {}).pop(key, None)


@detection_state.on_recover
async def _recovered() -> None:
    """After recovery (a start, a rebalance): the timer's index is rebuilt from the states (by the timer,
    once the control topic is read: recovery does not wait for it)."""
    _states.clear()
    _reindex.set()


def _index_state(
    watch: dict[str, dict[bytes, dict[str, Any]]], newest: dict[str, float], key: bytes, state: Any
) -> None:
    name = detection_name(key)
    engine = registry.engines.get(name)
    if engine is None or not isinstance(state, dict) or state.get("shape") != engine.shape:
        return  # disabled, or a state a new version starts afresh
    clock = state.get("clock")
    if clock is not None and not (
        type(clock) in (int, float) and clock <= time.time() + settings.max_clock_skew_seconds
    ):
        return  # a clock beyond the skew (a forged changelog record) would move every key's watermark
    summary = _summary(engine, state)
    try:
        engine.needs_tick(summary, 0.0)
    except Exception:  # a state of the right shape but not the engine's: the timer would raise on it
        return  # (replaced by a fresh one when the key's next event comes)
    watch.setdefault(name, {})[key] = summary
    if clock is not None:
        newest[name] = max(newest.get(name, float(clock)), float(clock))


async def rebuild_index() -> None:
    """The timer's index of the keys this worker owns, from their states in ``detection-state``.

    Without it a key that holds events or has gone silent was ticked again only once it got an
    event: after a restart or a rebalance its held events and its absence alert waited for that.
    Each detection's newest event time starts at the newest clock of its keys (its wall time:
    now), so held events are judged after a quiet spell, and a silence once the watermark passes.
    """
    global _fresh
    _fresh = set()
    watch: dict[str, dict[bytes, dict[str, Any]]] = {}
    newest: dict[str, float] = {}
    try:
        for _, _, step, more in state_steps(detection_state, REINDEX_STEP_KEYS):
            for key, state in step:
                _index_state(watch, newest, key, state)
            if more:
                await asyncio.sleep(0)
        for name, keys in _watch.items():  # summaries written meanwhile are newer than what was read
            for key in _fresh & keys.keys():
                watch.setdefault(name, {})[key] = keys[key]
    finally:
        _fresh = None
    _watch.clear()
    _watch.update(watch)
    now = time.time()
    for name, clock in newest.items():
        known = _newest.get(name)
        if known is None or known[0] < clock:
            _newest[name] = (clock, now if known is None else known[1])
    for name in registry.engines:
        DETECTION_KEYS.labels(detection=name).set(len(_watch.get(name, {})))
    logger.info(
        "detection tick index rebuilt: %s",
        ", ".join(f"{name} {len(keys)} keys" for name, keys in sorted(_watch.items())) or "no keys",
    )


#: a detection's alerts are published and counted (streamapp_alerts_total), whatever their kind
_alerting = Alerting(settings.publish_alerts, alerts_topic.send)


async def _publish(alert: Alert) -> None:
    DETECTION_ALERTS_TOTAL.labels(detection=alert.kind).inc()
    await _alerting.publish(alert)


def _late(
    name: str, entity: str, message: dict[str, Any], late: Late, batches: RecordSink, target: str
) -> None:
    """Queue a late event for ``target`` (late-events) with the batch's other records, keyed by its
    entity, as the stock prices' detector queues its own (agents.rejects): delivered before the
    batch's source offsets are acknowledged, in its transaction under exactly-once."""
    source = settings.topic(registry.engines[name].spec.topic)
    partition, offset = message["src"]
    headers = [
        ("x-error", f"late event for {late_events_label(name)}: {late.reason}".encode()),
        ("x-lateness-seconds", f"{late.seconds:.3f}".encode()),
        *source_coordinates(source, partition, offset),
    ]
    batches.add(target, entity.encode(), _source_value(message), None, headers)
    LATE_EVENTS_TOTAL.labels(topic=source).inc()
    if late.reason.startswith("older than the retention"):  # as agents.rejects counts the prices'
        EXPIRED_EVENTS_TOTAL.labels(topic=source).inc()


def _source_value(message: dict[str, Any]) -> bytes:
    """The source record's value of an event: bytes applied in process, text forwarded, or (forwarded
    without its copy: too large with its escapes) its fields."""
    raw = message.get("raw")
    if raw is None:
        fields = message.get("f")
        return orjson.dumps({"ts": message.get("ts"), **(fields if isinstance(fields, dict) else {})})
    return raw if isinstance(raw, bytes) else raw.encode()


async def _dead_letter(name: str, message: dict[str, Any], why: str, batches: RecordBatches) -> None:
    """The source record of an event that makes its detection raise, to dead-letters with the reason."""
    source = settings.topic(registry.engines[name].spec.topic) if name in registry.engines else ""
    partition, offset = message["src"]
    headers = [("x-error", why.encode()), *source_coordinates(source, partition, offset)]
    target = dead_letters_topic.get_topic_name()
    await batches.prepare(target)
    # by source position, as the ingest spreads unkeyed records
    batches.add(target, None, _source_value(message), int(offset) % batches.partitions_of(target), headers)
    DEAD_LETTERS_TOTAL.labels(topic=source).inc()
    logger.warning("dead letter: %s[%s]@%s: %s", source, partition, offset, why)


@app.timer(interval=1.0)
async def tick_detections() -> None:
    """Each second, a tick to every key whose held events or silence the watermark has passed.

    After a quiet spell of the grace (no event of the detection, wall time), every held event
    is judged (a flush), so the last events before a pause alert without waiting for new ones.

    A key on a partition whose events are applied in process (see the module) has its tick
    applied the same way, by the next batch read from that partition of its detection's source
    topic (:data:`_local_ticks`; so only the handler of that topic applies it, never beside
    another that applies the key's events); if none came within the second, the tick goes
    through detection-events after all.
    """
    if _reindex.is_set() and registry.loaded.is_set():
        _reindex.clear()
        await rebuild_index()
    now = time.time()
    batches = RecordBatches(app)
    target = detection_events_topic.get_topic_name()
    # not taken by a batch within the second: the partition is quiet
    leftover = [ticks for by_partition in _local_ticks.values() for ticks in by_partition.values()]
    waiting = {
        (topic, partition) for topic, by_partition in _local_ticks.items() for partition in by_partition
    }
    _local_ticks.clear()
    running = [(name, engine, _newest.get(name)) for name, engine in list(registry.engines.items())]
    if not leftover and all(newest is None for _, _, newest in running):
        return
    await batches.prepare(target)
    partitions = batches.partitions_of(target)
    any_ticks = False
    for ticks in leftover:
        for key, message in ticks.items():
            batches.add(target, key, orjson.dumps(message), _state_partition(key, partitions))
            any_ticks = True
    for name, engine, newest in running:
        if newest is None or not engine.ticked:  # (an eager operator holds nothing to tick)
            continue
        watermark = newest[0] - engine.grace
        quiet = now - newest[1] >= engine.grace
        source = settings.topic(engine.spec.topic)
        here = {p for p in _ticked_here(engine, batches, partitions) if (source, p) not in waiting}
        for key, summary in list(_watch.get(name, {}).items()):
            flush = quiet and bool(summary["pending"])
            if not flush and not engine.needs_tick(summary, watermark):
                continue
            partition = _state_partition(key, partitions)
            message = {"tick": watermark, "flush": flush}
            if partition in here:
                _local_ticks.setdefault(source, {}).setdefault(partition, {})[key] = message
                continue
            batches.add(target, key, orjson.dumps(message), partition)
            any_ticks = True
    if any_ticks:
        try:
            for delivery in await batches.send():
                await delivery.future
        except Exception:  # sent again next second
            logger.exception("sending detection ticks failed")


#: per source topic and partition (that of detection-events too): ticks for the next batch read
#: from that partition of that topic to apply
_local_ticks: dict[str, dict[int, dict[bytes, dict[str, Any]]]] = {}


def _ticked_here(engine: Engine, batches: RecordBatches, partitions: int) -> frozenset[int]:
    """The partitions whose ticks for ``engine`` are applied in process (those of its events)."""
    source = settings.topic(engine.spec.topic)
    try:
        source_partitions = batches.partitions_of(source)
    except LookupError:  # no metadata of the source topic yet: through detection-events
        return frozenset()
    return _applied_here(source, partitions, source_partitions)


@app.page("/detections")
async def get_detections(web: View, request: Request) -> Response:
    """The detections this worker runs, with their versions, and the topics it subscribes to."""
    rows = registry.describe()
    for row in rows:
        # an app input topic is read by its ingest, which hands the events over
        topic = row["topic"]
        row["subscribed"] = topic in SOURCE_TOPICS or live_topics.subscribed(settings.topic(topic))
        watched = _watch.get(row["name"], {})
        row["keys"] = len(watched)
        # keys holding events not judged yet (they alert up to the grace later)
        row["held_keys"] = sum(1 for summary in watched.values() if summary["pending"])
    topics = {*SOURCE_TOPICS, *_contract_names(live_topics.topics - live_topics.pending)}
    return web.json({"loaded": registry.loaded.is_set(), "detections": rows, "topics": sorted(topics)})


def _contract_names(topics: set[str]) -> list[str]:
    prefix = len(settings.topic_prefix)
    return sorted(topic[prefix:] for topic in topics)
