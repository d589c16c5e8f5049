"""Counting events per key in a sliding 60-s event-time window made of 10-s buckets.

The windows are those that end with a bucket holding an event: for each non-empty bucket
``[b, b + 10)`` the window ``[b - 50, b + 10)``. A window alerts when it holds more than the
threshold; at most one alert per key per 60 s means: the earliest alerting window alerts, then the
next one that starts at or after the end of the last alerted one, and so on. That set is a
function of the events alone, so the number of alerts does not depend on the arrival order: an
event that arrives late recounts every window it belongs to (its own and those of the later
buckets within 50 s) and re-runs the choice from there. Adding events only adds windows or
raises counts, so the choice never shrinks and no alert has to be taken back.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate

from streamapp.models import Alert
from streamapp.rules.base import State, rule_alert
from streamapp.rules.windows import add_to_bucket, bucket_start, drop_buckets_before

__all__ = ["BUCKET_SECONDS", "WINDOW_SECONDS", "SlidingCount", "alerted_window_ends", "new_state"]

WINDOW_SECONDS = 60.0
# 10-s buckets: the 60-s window slides in 10-s steps (the contract allows up to 10 s granularity)
BUCKET_SECONDS = 10.0


def new_state() -> State:
    # alerted: ends of the windows that alerted, ascending (the newest few)
    return {"buckets": [], "alerted": []}


def alerted_window_ends(state: State) -> list[float]:
    """The ends of the windows chosen to alert, ascending (states of older versions converted)."""
    alerted = state.get("alerted")
    if alerted is None:
        old = state.pop("alerted_end", None)
        alerted = state["alerted"] = [old] if old is not None else []
    return alerted  # type: ignore[no-any-return]


@dataclass(frozen=True)
class SlidingCount:
    """A rule that fires when more than ``threshold`` events of one key fall in 60 s."""

    kind: str
    noun: str  # what is counted, for the alert text ("failed logins from", "transactions on card")

    def record(
        self, state: State, key: str, ts: float, threshold: int, horizon: float, keep: float
    ) -> tuple[bool, list[Alert]]:
        """Count one event into ``state``; return (counted, alerts).

        ``counted`` is False when the event's bucket ended before the retention ``horizon``.
        Buckets are kept ``keep`` seconds behind the newest (views need only so much) and one
        window more, so that every window a counted event belongs to is whole.
        """
        start = bucket_start(ts, BUCKET_SECONDS)
        if start + BUCKET_SECONDS <= horizon:
            return False, []
        buckets = state["buckets"]
        add_to_bucket(buckets, start)
        drop_buckets_before(buckets, max(horizon, buckets[-1][0] - keep) - WINDOW_SECONDS, BUCKET_SECONDS)
        alerted = alerted_window_ends(state)
        own_end = start + BUCKET_SECONDS
        # choices of windows ending before this event's own window stay as they are
        settled = bisect_left(alerted, own_end)
        floor = alerted[settled - 1] + WINDOW_SECONDS if settled else float("-inf")
        first = bisect_left(buckets, start, key=lambda b: b[0])
        if first == len(buckets) - 1 and own_end >= floor:  # the newest bucket: one window to count
            count = _total_since(buckets, own_end - WINDOW_SECONDS)
            chosen = [(own_end, count)] if count > threshold else []
        else:
            chosen = _choose(buckets, first, floor, threshold)
        before = alerted[settled:]
        del alerted[settled:]
        alerted.extend(end for end, _ in chosen)
        # keep the last choice (the floor of the next) and those a late event may still move
        del alerted[: max(0, bisect_left(alerted, horizon) - 1)]
        new = len(chosen) - len(before)  # never negative: see the module docstring
        if new <= 0:
            return True, []
        fresh = [(end, count) for end, count in chosen if end not in before][:new]
        return True, [self._alert(key, ts, end, count, threshold) for end, count in fresh]

    def _alert(self, key: str, ts: float, window_end: float, count: float, threshold: int) -> Alert:
        detail = f"{int(count)} {self.noun} {key} within 60 s (more than {threshold})"
        window = (window_end - WINDOW_SECONDS, window_end)
        return rule_alert(self.kind, key, ts, window, count, threshold, detail)


def _total_since(buckets: list[list[float]], since: float) -> float:
    total = 0.0
    for start, n in reversed(buckets):
        if start < since:
            break
        total += n
    return total


def _choose(
    buckets: list[list[float]], first: int, floor: float, threshold: int
) -> list[tuple[float, float]]:
    """The alerting windows chosen from bucket ``first`` on, the first ending at or after ``floor``."""
    starts = [b[0] for b in buckets]
    sums = [0.0, *accumulate(b[1] for b in buckets)]
    chosen: list[tuple[float, float]] = []
    for i in range(first, len(buckets)):
        end = starts[i] + BUCKET_SECONDS
        if end < floor:
            continue
        count = sums[i + 1] - sums[bisect_left(starts, end - WINDOW_SECONDS)]
        if count > threshold:
            chosen.append((end, count))
            floor = end + WINDOW_SECONDS
    return chosen
