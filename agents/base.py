"""The loop every detector shares: per batch, load each key's state once, apply, store once, alert."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import faust
import orjson
from aiokafka.structs import ConsumerRecord
from faust.types import TableT

from streamapp.alerting import publish_alert
from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.consumer import consume_in_batches
from streamapp.metrics import EXPIRED_EVENTS_TOTAL
from streamapp.models import Alert
from streamapp.producer import Delivery, RecordBatches
from streamapp.rules.base import State, seen_before
from tables.base import load_state, remember_changelog_offsets, store_event_clock, store_state

__all__ = ["Apply", "Updates", "detect", "detect_batch"]

#: (state, key, event fields) -> (counted, alerts); mutates state
Apply = Callable[[State, str, dict[str, Any]], tuple[bool, Iterable[Alert]]]
#: (entity, state after the batch, the events applied to it) -> records for an updates topic
Updates = Callable[[str, State, list[dict[str, Any]]], Iterable[bytes]]


async def detect_batch(
    records: Sequence[ConsumerRecord],
    table: TableT,
    new_state: Callable[[], State],
    apply: Apply,
    source: str,
    updates: tuple[faust.TopicT, Updates] | None = None,
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
    expired = EXPIRED_EVENTS_TOTAL.labels(topic=source)
    by_key: dict[tuple[int, bytes], list[dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault((record.partition, record.key), []).append(orjson.loads(record.value))
    alerts: list[Alert] = []
    changed_states: list[tuple[int, bytes, State]] = []
    batches = RecordBatches(app)
    observe = worker_clock.observe
    if updates is not None:
        updates_topic, make_updates = updates[0].get_topic_name(), updates[1]
        await batches.prepare(updates_topic)
    for (partition, key), events in by_key.items():
        state = load_state(table, partition, key) or new_state()
        entity = key.decode()
        changed = False
        applied: list[dict[str, Any]] = []
        for event in events:
            fields = event["e"]
            observe(fields["ts"])
            if seen_before(state, *event["src"]):
                continue
            counted, found = apply(state, entity, fields)
            if not counted:
                expired.inc()
                continue
            changed = True
            alerts.extend(found)
            applied.append(fields)
        if changed:
            changed_states.append((partition, key, state))
            if updates is not None:
                for value in make_updates(entity, state, applied):
                    batches.add(updates_topic, key, value)
    deliveries = [d for d in [await publish_alert(alert) for alert in alerts] if d is not None]
    if deliveries:
        await asyncio.gather(*deliveries)
    for partition, key, state in changed_states:
        store_state(table, partition, key, state, batches)
    for partition in {partition for partition, _, _ in changed_states}:
        store_event_clock(table, partition, batches)
    sent = await batches.send()
    remember_changelog_offsets(table, sent)
    return sent


async def detect(
    stream: faust.StreamT[bytes],
    table: TableT,
    new_state: Callable[[], State],
    apply: Apply,
    source: str,
    updates: tuple[faust.TopicT, Updates] | None = None,
) -> None:
    """Run :func:`detect_batch` for every fetch of the stream's topic (see streamapp.consumer)."""
    await consume_in_batches(
        stream,
        partial(detect_batch, table=table, new_state=new_state, apply=apply, source=source, updates=updates),
    )
