"""The detector loop of a by-entity topic: per batch, load each key's state once, apply, store once.

The stock prices' analytics run on it (agents.analyze_prices; the detections run on the detection
engine, agents.run_detections). Every forwarded event is first checked against the lateness model
(streamapp.rules.base.lateness): a late event goes to ``late-events`` and never into state. A
record that makes a rule raise goes to ``dead-letters`` alone (agents.rejects); the rest of the
batch goes on. Only the app writes the by-entity topics: a record found there that it could not
have written (a key no entity can have, an envelope whose event the ingest parser refuses) is a
dead letter too, and a stored state that cannot be read, or that makes a valid event raise, is
replaced by a fresh one (logged, ``streamapp_state_resets_total``; agents.record_checks): no
record and no state can stop the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import faust
import orjson
from aiokafka.structs import ConsumerRecord

from agents.record_checks import PARSERS, envelope_problem, key_problem, reset_state, stored_state
from agents.rejects import Rejects
from streamapp.models import Alert, Parser
from streamapp.rules.base import Apply, Late, State, step
from streamapp.runtime.consumer import check_membership, drain_to_router
from streamapp.runtime.producer import Delivery
from streamapp.settings import Settings
from streamapp.types import RecordSink, StateStore

__all__ = [
    "Apply",
    "Detector",
    "detect",
    "detect_batch",
    "envelope_problem",
    "key_problem",
    "reset_state",
    "stored_state",
]

logger = logging.getLogger(__name__)


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

    @property
    def parse(self) -> Parser:
        return PARSERS[self.source]

    async def __call__(self, records: Sequence[ConsumerRecord]) -> list[Delivery]:
        return await detect_batch(records, self)


async def detect_batch(records: Sequence[ConsumerRecord], detector: Detector) -> list[Delivery]:
    """Run the detector's rule for every record of a by-entity topic; return the deliveries.

    The records of one key are applied in arrival order to one loaded state, which is written
    once: a burst of a hot key costs one RocksDB write and one changelog record per batch
    instead of one per event. Alerts are acknowledged by the broker before the states that
    remember them are written: a crash in between re-publishes them (same alert_id) rather
    than losing them.
    """
    settings, store = detector.settings, detector.store
    batches = detector.new_sink()
    rejects = Rejects(batches, settings.topic(detector.source), store.name, detector)
    by_key: dict[tuple[int, bytes], list[ConsumerRecord]] = {}
    for record in records:
        problem = key_problem(record.key)
        if problem is not None:  # only the app writes these topics: someone else did
            rejects.dead(record, f"record on an internal topic {problem}", as_read=True)
            continue
        by_key.setdefault((record.partition, record.key), []).append(record)
    alerts: list[Alert] = []
    changed_states: list[tuple[int, bytes, State]] = []
    step = partial(_apply_events, detector=detector, rejects=rejects)
    ceiling = time.time() + settings.max_clock_skew_seconds
    for (partition, key), key_records in by_key.items():
        raw = store.load(partition, key)
        stored = stored_state(raw, store.name, key, ceiling)
        try:
            state, found, changed = step(stored, key, key_records, isolate=False)
        except Exception:
            # one of these records makes the rule raise: again one record at a time, each on a
            # copy of the state, so that only the guilty ones go to dead-letters
            rejects.clear_for(key_records)
            stored = orjson.loads(raw) if stored is not None and raw is not None else None  # mutated
            state, found, changed = step(stored, key, key_records, isolate=True)
        alerts.extend(found)
        if changed:
            changed_states.append((partition, key, state))
    await rejects.queue()
    published = [await detector.publish_alert(alert) for alert in alerts]
    deliveries = [delivery for delivery in published if delivery is not None]
    if deliveries:
        await asyncio.gather(*deliveries)
    # the zombie fence: a worker paused past its session timeout (its partitions may have moved)
    # gives the batch up here rather than write states computed from its stale ones; no await
    # between this check and the writes (streamapp.runtime.consumer.fence)
    await check_membership()
    store.store(changed_states, batches)
    for partition in {partition for partition, _, _ in changed_states}:
        store.store_clock(partition, batches)
    sent = await batches.send()
    store.remember(sent)
    return sent


def _apply_events(
    stored: State | None,
    key: bytes,
    records: list[ConsumerRecord],
    *,
    detector: Detector,
    rejects: Rejects,
    isolate: bool,
) -> tuple[State, list[Alert], bool]:
    """Apply one key's records to its state: (state, alerts, state changed).

    With ``isolate``, each record is applied to a copy of the state and one that raises goes
    to dead-letters, leaving the state as it was before it; unless the record applies cleanly
    to a fresh state: then the stored state is what fails (a changelog record someone else
    wrote), and the key goes on from the fresh one.
    """
    new_state, apply, table = detector.new_state, detector.apply, detector.store.name
    parse, source_topic = detector.parse, detector.settings.topic(detector.source)
    state = stored if stored is not None else new_state()
    entity = key.decode()
    grace, horizon = detector.settings.grace_seconds, detector.clock.horizon
    alerts: list[Alert] = []
    changed = False
    for record in records:
        event, problem = envelope_problem(record, parse, source_topic)
        if event is None:
            rejects.dead(record, problem or "not an event envelope", as_read=True)
            continue
        before = orjson.dumps(state) if isolate else None
        try:
            outcome = step(state, entity, event, apply, None, grace, horizon)
        except Exception as exc:
            if not isolate:
                raise
            fresh = new_state()
            try:
                outcome = step(fresh, entity, event, apply, None, grace, horizon)
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
            rejects.late(record, event, outcome.reason, outcome.seconds)
            continue
        changed = True
        alerts.extend(outcome)
        detector.clock.observe(event.event.ts)
    return state, alerts, changed


async def detect(stream: faust.StreamT[bytes], agent: str) -> None:
    """A detector agent's body: what reaches its stream goes to the app's router (none does while
    the batch consumer runs: see streamapp.runtime.consumer)."""
    await drain_to_router(stream, agent)
