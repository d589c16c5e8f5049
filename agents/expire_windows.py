"""expire_windows: a timer that removes keys whose state is all older than the retention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.rules import sliding_count, temperature
from tables.base import expire_keys
from tables.failed_logins_by_ip import failed_logins_by_ip
from tables.logins_by_user import logins_by_user
from tables.prices_by_symbol import prices_by_symbol
from tables.temperature_by_sensor import temperature_by_sensor
from tables.transactions_by_card import transactions_by_card

__all__ = ["expire_windows"]


def _newest_bucket_before(field: str, size: float) -> Callable[[Any], bool]:
    def is_expired(state: Any) -> bool:
        entries = state.get(field) or []
        return not entries or entries[-1][0] + size <= worker_clock.horizon

    return is_expired


def _last_before(field: str) -> Callable[[Any], bool]:
    def is_expired(state: Any) -> bool:
        return (state.get(field) or 0.0) <= worker_clock.horizon

    return is_expired


@app.timer(interval=5.0)
async def expire_windows() -> None:
    if not worker_clock.horizon:
        return
    expire_keys(failed_logins_by_ip, _newest_bucket_before("buckets", sliding_count.BUCKET_SECONDS))
    expire_keys(temperature_by_sensor, _newest_bucket_before("windows", temperature.WINDOW_SECONDS))
    expire_keys(logins_by_user, _last_before("last"))
    expire_keys(transactions_by_card, _last_before("last"))
    expire_keys(prices_by_symbol, _last_before("ts"))
