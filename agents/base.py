"""The loop every detector shares: load the key's state, apply a rule once, store it, alert."""

from __future__ import annotations

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

__all__ = ["Apply", "detect"]

#: (state, key, event fields) -> (counted, alerts); mutates state
Apply = Callable[[State, str, dict[str, Any]], tuple[bool, Iterable[Alert]]]


async def detect(
    stream: faust.StreamT[bytes],
    table: TableT,
    new_state: Callable[[], State],
    apply: Apply,
    source: str,
) -> None:
    """Run ``apply`` for every event of a by-entity stream against ``table``."""
    async for event in stream.events():
        key_bytes: bytes = event.key
        record = orjson.loads(event.value)
        fields = record["e"]
        worker_clock.observe(fields["ts"])
        state = table.get(key_bytes) or new_state()
        if seen_before(state, *record["src"]):
            continue
        counted, alerts = apply(state, key_bytes.decode(), fields)
        if not counted:
            EXPIRED_EVENTS_TOTAL.labels(topic=source).inc()
            continue
        table[key_bytes] = state
        for alert in alerts:
            await publish_alert(alert)
