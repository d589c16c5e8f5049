"""expire_windows: a task that removes keys whose state is all older than the retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.types import TableT

from agents.detect_card_fraud import held_cards
from agents.detect_temperature import held_sensors
from agents.held_keys import HeldKeys
from streamapp.app import app, settings
from streamapp.rules import sliding_count, temperature
from streamapp.rules.windows import next_sweep_in
from streamapp.runtime.clock import worker_clock
from tables.base import expire_keys, restore_event_clock
from tables.failed_logins_by_ip import failed_logins_by_ip
from tables.logins_by_user import logins_by_user
from tables.prices_by_symbol import prices_by_symbol
from tables.temperature_by_sensor import temperature_by_sensor
from tables.transactions_by_card import transactions_by_card

__all__ = ["EXPIRING_TABLES", "TableExpiry", "expire_windows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableExpiry:
    """How to tell when a table's value last saw an event, and how long that event lasts."""

    table: TableT
    last_event: Callable[[Any], float]
    span: float = 0.0  # a bucket or window lasts this long after its start
    #: the detector's keys that hold events: a sweep finds those a restart forgot
    held: HeldKeys | None = None

    def is_expired(self, state: Any) -> bool:
        return self.last_event(state) + self.span <= worker_clock.horizon


def _newest_start(field: str) -> Callable[[Any], float]:
    return lambda state: state[field][-1][0] if state.get(field) else 0.0


def _number(field: str) -> Callable[[Any], float]:
    return lambda state: state.get(field) or 0.0


EXPIRING_TABLES = [
    TableExpiry(failed_logins_by_ip, _newest_start("buckets"), sliding_count.BUCKET_SECONDS),
    TableExpiry(temperature_by_sensor, _newest_start("windows"), temperature.WINDOW_SECONDS, held_sensors),
    TableExpiry(logins_by_user, _number("last")),
    TableExpiry(transactions_by_card, _number("last"), held=held_cards),
    TableExpiry(prices_by_symbol, _number("ts")),
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
                    busy += (await expire_keys(expiry.table, expiry.is_expired, _visit(expiry.held)))[1]
                except Exception:  # e.g. a store closed by a rebalance mid-step: the next sweep retries
                    logger.exception("expiry sweep of table %s failed", expiry.table.name)
        await asyncio.sleep(next_sweep_in(started, busy, time.monotonic()))


def _visit(held: HeldKeys | None) -> Callable[[int, bytes, Any], None] | None:
    if held is None:
        return None
    now = time.time()
    return lambda partition, key, state: held.update(partition, key, state, now)


def _on_recovered(expiry: TableExpiry) -> Callable[[], Any]:
    async def restore() -> None:
        restore_event_clock(expiry.table, expiry.last_event, settings.max_clock_skew_seconds)

    return restore


for _expiry in EXPIRING_TABLES:
    _expiry.table.on_recover(_on_recovered(_expiry))
