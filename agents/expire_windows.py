"""expire_windows: a timer that removes keys whose state is all older than the retention."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.types import TableT

from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.rules import sliding_count, temperature
from tables.base import expire_keys, restore_event_clock
from tables.failed_logins_by_ip import failed_logins_by_ip
from tables.logins_by_user import logins_by_user
from tables.prices_by_symbol import prices_by_symbol
from tables.temperature_by_sensor import temperature_by_sensor
from tables.transactions_by_card import transactions_by_card

__all__ = ["EXPIRING_TABLES", "SWEEP_INTERVAL_SECONDS", "TableExpiry", "expire_windows"]


@dataclass(frozen=True)
class TableExpiry:
    """How to tell when a table's value last saw an event, and how long that event lasts."""

    table: TableT
    last_event: Callable[[Any], float]
    span: float = 0.0  # a bucket or window lasts this long after its start

    def is_expired(self, state: Any) -> bool:
        return self.last_event(state) + self.span <= worker_clock.horizon


def _newest_start(field: str) -> Callable[[Any], float]:
    return lambda state: state[field][-1][0] if state.get(field) else 0.0


def _number(field: str) -> Callable[[Any], float]:
    return lambda state: state.get(field) or 0.0


EXPIRING_TABLES = [
    TableExpiry(failed_logins_by_ip, _newest_start("buckets"), sliding_count.BUCKET_SECONDS),
    TableExpiry(temperature_by_sensor, _newest_start("windows"), temperature.WINDOW_SECONDS),
    TableExpiry(logins_by_user, _number("last")),
    TableExpiry(transactions_by_card, _number("last")),
    TableExpiry(prices_by_symbol, _number("ts")),
]


#: seconds between sweeps, at least; a sweep that took t seconds waits 20 t before the next
SWEEP_INTERVAL_SECONDS = 5.0
_next_sweep = 0.0


@app.timer(interval=1.0)
async def expire_windows() -> None:
    """Sweep the tables for expired keys, spending at most about a twentieth of the time on it."""
    global _next_sweep
    now = time.monotonic()
    if not worker_clock.horizon or now < _next_sweep:
        return
    for expiry in EXPIRING_TABLES:
        await expire_keys(expiry.table, expiry.is_expired)
    took = time.monotonic() - now
    _next_sweep = now + max(SWEEP_INTERVAL_SECONDS, 20 * took)


def _on_recovered(expiry: TableExpiry) -> Callable[[], Any]:
    async def restore() -> None:
        restore_event_clock(expiry.table, expiry.last_event)

    return restore


for _expiry in EXPIRING_TABLES:
    _expiry.table.on_recover(_on_recovered(_expiry))
