"""account_takeover: a successful login after at least N failed logins within 5 minutes."""

from __future__ import annotations

from bisect import bisect_left, insort

from streamapp.models import Alert, alert_id_for
from streamapp.rules.base import State

__all__ = ["KIND", "LOOKBACK_SECONDS", "new_state", "record_login"]

KIND = "account_takeover"
LOOKBACK_SECONDS = 300.0
# Only the newest failures can decide the rule; a cap bounds the state of a user under attack.
_MAX_FAILURES_KEPT = 256


def new_state() -> State:
    return {"failures": [], "last": 0.0}


def record_login(
    state: State, user: str, ts: float, success: bool, threshold: int, horizon: float
) -> tuple[bool, Alert | None]:
    """Apply one login of ``user``; return (counted, alert)."""
    if ts <= horizon:
        return False, None
    failures: list[float] = state["failures"]
    state["last"] = max(state["last"], ts)
    if not success:
        insort(failures, ts)
        # failures older than the lookback before the newest event can never count again
        cutoff = max(horizon, state["last"] - LOOKBACK_SECONDS)
        del failures[: max(bisect_left(failures, cutoff), len(failures) - _MAX_FAILURES_KEPT)]
        return True, None
    window_start = ts - LOOKBACK_SECONDS
    recent = bisect_left(failures, ts) - bisect_left(failures, window_start)
    if recent < threshold:
        return True, None
    return True, Alert(
        alert_id=alert_id_for(KIND, user, ts),
        kind=KIND,
        key=user,
        ts=ts,
        window_start=window_start,
        window_end=ts,
        value=recent,
        threshold=threshold,
        detail=f"successful login for {user} after {recent} failed logins within 5 minutes",
    )
