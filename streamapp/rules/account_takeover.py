"""account_takeover: a successful login after at least N failed logins within 5 minutes.

Judged on event time, whatever the arrival order: records produced without keys reach the user's
partition from several source partitions, so a failure may arrive after the success it precedes.
A late failure therefore re-checks the successes of the 5 minutes after it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort

from streamapp.models import Alert
from streamapp.rules.base import State, rule_alert

__all__ = ["KIND", "LOOKBACK_SECONDS", "new_state", "record_login"]

KIND = "account_takeover"
LOOKBACK_SECONDS = 300.0
# Only the newest events can decide the rule; caps bound the state of a user under attack.
_MAX_FAILURES_KEPT = 256
_MAX_SUCCESSES_KEPT = 64


def new_state() -> State:
    # successes: [[ts, alerted]] sorted by ts
    return {"failures": [], "successes": [], "last": 0.0}


def _failures_before(failures: list[float], ts: float) -> int:
    return bisect_left(failures, ts) - bisect_left(failures, ts - LOOKBACK_SECONDS)


def _alert(user: str, ts: float, failed: int, threshold: int) -> Alert:
    detail = f"successful login for {user} after {failed} failed logins within 5 minutes"
    # one alert per successful login: its id names the login's time, not the lookback window
    return rule_alert(KIND, user, ts, (ts - LOOKBACK_SECONDS, ts), failed, threshold, detail, ts)


def record_login(
    state: State, user: str, ts: float, success: bool, threshold: int, horizon: float
) -> tuple[bool, list[Alert]]:
    """Apply one login of ``user``; return (counted, alerts).

    A success alerts once, when the failures before it reach the threshold, whether they arrived
    before it or after it: the rule only ever adds alerts as logins arrive, so any arrival order
    gives the same alerts.
    """
    if ts <= horizon:
        return False, []
    failures: list[float] = state["failures"]
    successes: list[list[float]] = state["successes"]
    state["last"] = max(state["last"], ts)
    alerts: list[Alert] = []
    if success:
        failed = _failures_before(failures, ts)
        alerted = failed >= threshold
        insort(successes, [ts, 1 if alerted else 0])
        if alerted:
            alerts.append(_alert(user, ts, failed, threshold))
    else:
        insort(failures, ts)
        # a late failure may complete the run before successes already seen (one alert per success)
        for entry in successes[bisect_left(successes, [ts, 2]) :]:
            if entry[0] > ts + LOOKBACK_SECONDS:
                break
            if not entry[1]:
                failed = _failures_before(failures, entry[0])
                if failed >= threshold:
                    entry[1] = 1
                    alerts.append(_alert(user, entry[0], failed, threshold))
    del failures[: max(bisect_right(failures, horizon), len(failures) - _MAX_FAILURES_KEPT)]
    del successes[: max(bisect_left(successes, [horizon, 2]), len(successes) - _MAX_SUCCESSES_KEPT)]
    return True, alerts
