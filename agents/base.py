"""The loop every detector shares: per batch, load each key's state once, apply, store once, alert."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import faust
import orjson
from faust.types import TableT

from streamapp.alerting import publish_alert
from streamapp.clock import worker_clock
from streamapp.metrics import EXPIRED_EVENTS_TOTAL
from streamapp.models import Alert
from streamapp.rules.base import State, seen_before
from streamapp.settings import BATCH_MAX, BATCH_WITHIN_SECONDS
from tables.base import load_state, store_state

__all__ = ["Apply", "Updates", "detect"]

#: (state, key, event fields) -> (counted, alerts); mutates state
Apply = Callable[[State, str, dict[str, Any]], tuple[bool, Iterable[Alert]]]
#: (entity, state after the batch, the events applied to it) -> records for an updates topic
Updates = Callable[[str, State, list[dict[str, Any]]], Iterable[bytes]]


async def detect(
    stream: faust.StreamT[bytes],
    table: TableT,
    new_state: Callable[[], State],
    apply: Apply,
    source: str,
    updates: tuple[faust.TopicT, Updates] | None = None,
) -> None:
    """Run ``apply`` for every event of a by-entity stream against ``table``.

    Events come in batches (offsets are acknowledged after the batch); the events of one key
    are applied in arrival order to one loaded state, which is written once: a burst of a hot
    key costs one RocksDB write and one changelog record per batch instead of one per event.
    The loaded states stay in memory until the batch's alerts are delivered.

    With ``updates`` = (topic, make), every key changed by the batch also sends ``make(entity,
    state, applied events)`` to ``topic`` (keyed by the entity), delivered with the alerts and
    before the state: a crash in between sends them again rather than never.
    """
    expired = EXPIRED_EVENTS_TOTAL.labels(topic=source)
    async for events in stream.take_events(BATCH_MAX, BATCH_WITHIN_SECONDS):  # type: ignore[attr-defined]
        by_key: dict[tuple[int, bytes], list[dict[str, Any]]] = {}
        for event in events:
            message = event.message
            by_key.setdefault((message.partition, message.key), []).append(orjson.loads(message.value))
        alerts: list[Alert] = []
        changed_states: list[tuple[int, bytes, State]] = []
        update_records: list[tuple[bytes, bytes]] = []
        for (partition, key), records in by_key.items():
            state = load_state(table, partition, key) or new_state()
            entity = key.decode()
            changed = False
            applied: list[dict[str, Any]] = []
            for record in records:
                fields = record["e"]
                worker_clock.observe(fields["ts"])
                if seen_before(state, *record["src"]):
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
                    update_records.extend((key, value) for value in updates[1](entity, state, applied))
        # alerts are acknowledged by the broker before the state that remembers them is written:
        # a crash in between re-publishes them (same alert_id) rather than losing them
        deliveries = [d for d in [await publish_alert(alert) for alert in alerts] if d is not None]
        if updates is not None:
            deliveries.extend([await updates[0].send(key=k, value=v) for k, v in update_records])
        if deliveries:
            await asyncio.gather(*deliveries)
        for partition, key, state in changed_states:
            await store_state(table, partition, key, state)
