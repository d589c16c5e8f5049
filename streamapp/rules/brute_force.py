"""brute_force: more than N failed logins from one IP within 60 s of event time."""

from __future__ import annotations

from streamapp.models import Alert, alert_id_for
from streamapp.rules.base import State
from streamapp.windows import add_to_bucket, bucket_start, buckets_total, drop_buckets_before

__all__ = ["BUCKET_SECONDS", "KIND", "WINDOW_SECONDS", "new_state", "record_failed_login"]

KIND = "brute_force"
WINDOW_SECONDS = 60.0
# 10-s buckets: the 60-s window slides in 10-s steps (the contract allows up to 10 s granularity)
BUCKET_SECONDS = 10.0


def new_state() -> State:
    return {"buckets": [], "alerted_end": None}


def record_failed_login(
    state: State, ip: str, ts: float, threshold: int, horizon: float
) -> tuple[bool, Alert | None]:
    """Count one failed login into ``state``; return (counted, alert).

    ``counted`` is False when the event is older than the retention ``horizon``.
    """
    start = bucket_start(ts, BUCKET_SECONDS)
    if start + BUCKET_SECONDS <= horizon:
        return False, None
    buckets = state["buckets"]
    add_to_bucket(buckets, start)
    drop_buckets_before(buckets, horizon, BUCKET_SECONDS)
    window_end = start + BUCKET_SECONDS
    window_start = window_end - WINDOW_SECONDS
    failed = buckets_total(buckets, window_start, window_end)
    if failed <= threshold:
        return True, None
    alerted_end = state["alerted_end"]
    # at most one alert per IP per 60 s: the next alert needs a window that does not overlap
    if alerted_end is not None and window_end < alerted_end + WINDOW_SECONDS:
        return True, None
    state["alerted_end"] = window_end
    return True, Alert(
        alert_id=alert_id_for(KIND, ip, window_start, window_end),
        kind=KIND,
        key=ip,
        ts=ts,
        window_start=window_start,
        window_end=window_end,
        value=failed,
        threshold=threshold,
        detail=f"{int(failed)} failed logins from {ip} within 60 s",
    )
