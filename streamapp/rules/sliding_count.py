"""Counting events per key in a sliding 60-s event-time window made of 10-s buckets."""

from __future__ import annotations

from dataclasses import dataclass

from streamapp.models import Alert, alert_id_for
from streamapp.rules.base import State
from streamapp.windows import add_to_bucket, bucket_start, buckets_total, drop_buckets_before

__all__ = ["BUCKET_SECONDS", "WINDOW_SECONDS", "SlidingCount", "new_state"]

WINDOW_SECONDS = 60.0
# 10-s buckets: the 60-s window slides in 10-s steps (the contract allows up to 10 s granularity)
BUCKET_SECONDS = 10.0


def new_state() -> State:
    return {"buckets": [], "alerted_end": None}


@dataclass(frozen=True)
class SlidingCount:
    """A rule that fires when more than ``threshold`` events of one key fall in 60 s."""

    kind: str
    noun: str  # what is counted, for the alert text ("failed logins from", "transactions on card")

    def record(
        self, state: State, key: str, ts: float, threshold: int, horizon: float, keep: float
    ) -> tuple[bool, Alert | None]:
        """Count one event into ``state``; return (counted, alert).

        ``counted`` is False when the event ended before the retention ``horizon``. Buckets older
        than ``keep`` seconds before this event are dropped too (views need only so much).
        """
        start = bucket_start(ts, BUCKET_SECONDS)
        if start + BUCKET_SECONDS <= horizon:
            return False, None
        buckets = state["buckets"]
        add_to_bucket(buckets, start)
        drop_buckets_before(buckets, max(horizon, buckets[-1][0] - keep), BUCKET_SECONDS)
        window_end = start + BUCKET_SECONDS
        window_start = window_end - WINDOW_SECONDS
        count = buckets_total(buckets, window_start, window_end)
        if count <= threshold:
            return True, None
        alerted_end = state["alerted_end"]
        # at most one alert per key per 60 s: the next alert needs a window that does not overlap
        if alerted_end is not None and window_end < alerted_end + WINDOW_SECONDS:
            return True, None
        state["alerted_end"] = window_end
        return True, Alert(
            alert_id=alert_id_for(self.kind, key, window_start, window_end),
            kind=self.kind,
            key=key,
            ts=ts,
            window_start=window_start,
            window_end=window_end,
            value=count,
            threshold=threshold,
            detail=f"{int(count)} {self.noun} {key} within 60 s (more than {threshold})",
        )
