"""expire_windows: a timer that removes keys whose windows are all older than the retention."""

from __future__ import annotations

from typing import Any

from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.rules import brute_force
from tables.base import expire_keys
from tables.failed_logins_by_ip import failed_logins_by_ip

__all__ = ["expire_windows"]


def _buckets_expired(size: float) -> Any:
    def is_expired(state: Any) -> bool:
        buckets = state.get("buckets") or []
        return not buckets or buckets[-1][0] + size <= worker_clock.horizon

    return is_expired


@app.timer(interval=5.0)
async def expire_windows() -> None:
    if not worker_clock.horizon:
        return
    expire_keys(failed_logins_by_ip, _buckets_expired(brute_force.BUCKET_SECONDS))
