"""expire_windows: a task that removes keys whose state is all older than the retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.types import TableT

from agents.run_detections import forget_swept
from streamapp.app import app, settings
from streamapp.rules.windows import next_sweep_in
from streamapp.runtime.clock import worker_clock
from tables.base import expire_keys, restore_event_clock
from tables.detection_state import detection_name, detection_state, registry
from tables.prices_by_symbol import prices_by_symbol

__all__ = ["EXPIRING_TABLES", "TableExpiry", "expire_windows", "spec_expires_at"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableExpiry:
    """How to tell when a table's value last saw an event, and when it expires."""

    table: TableT
    #: the newest event time of a value (also what restores the worker's clock after recovery)
    last_event: Callable[[Any], float]
    #: (key, value) -> the horizon at which the key goes, None while it must stay; instead of
    #: ``last_event`` for a table whose keys last differently (one per detection)
    expires_at: Callable[[bytes, Any], float | None] | None = None
    #: (partition, key) of each key the sweep removed: what the worker keeps of it in memory goes too
    forget: Callable[[int, bytes], None] | None = None

    def is_expired(self, key: bytes, state: Any) -> bool:
        if self.expires_at is None:
            return self.last_event(state) <= worker_clock.horizon
        at = self.expires_at(key, state)
        return at is not None and at <= worker_clock.horizon


def spec_expires_at(key: bytes, state: Any) -> float | None:
    """When a detection's state (key ``name NUL entity``) expires: as its engine says
    (streamapp.detections.engine.Engine.expires_at); a disabled detection's state with its newest
    event. None until the control topic is read: a detection applied there may still hold events."""
    if not registry.loaded.is_set():
        return None
    engine = registry.engines.get(detection_name(key))
    if engine is None:
        return _spec_clock(state)
    return engine.expires_at(state)


def _number(field: str) -> Callable[[Any], float]:
    return lambda state: state.get(field) or 0.0


#: a detection's state: its key's newest event (streamapp.rules.base.settle_clock)
_spec_clock = _number("clock")

EXPIRING_TABLES = [
    TableExpiry(prices_by_symbol, _number("ts")),
    TableExpiry(detection_state, _spec_clock, expires_at=spec_expires_at, forget=forget_swept),
]


@app.task
async def expire_windows() -> None:
    """Sweep the tables for expired keys, one sweep at a time, every 5 s or less often.

    A sweep is paced (tables.base.expire_keys) and may take longer than the interval on a large
    table; the next one starts when it is done and the interval (:func:`next_sweep_in`) has passed.
    """
    while True:
        started = time.monotonic()
        busy = 0.0
        if worker_clock.horizon:
            for expiry in EXPIRING_TABLES:
                try:
                    busy += (await expire_keys(expiry.table, expiry.is_expired, expiry.forget))[1]
                except Exception:  # e.g. a store closed by a rebalance mid-step: the next sweep retries
                    logger.exception("expiry sweep of table %s failed", expiry.table.name)
        await asyncio.sleep(next_sweep_in(started, busy, time.monotonic()))


def _on_recovered(expiry: TableExpiry) -> Callable[[], Any]:
    async def restore() -> None:
        restore_event_clock(expiry.table, expiry.last_event, settings.max_clock_skew_seconds)

    return restore


for _expiry in EXPIRING_TABLES:
    _expiry.table.on_recover(_on_recovered(_expiry))
