"""brute_force as a pure state transition: threshold, at-most-once per 60 s, expiry, replays."""

from __future__ import annotations

from streamapp.rules.base import seen_before
from streamapp.rules.brute_force import BRUTE_FORCE
from streamapp.rules.sliding_count import new_state


def _run(timestamps, threshold=5, horizon=0.0):
    state = new_state()
    alerts = []
    for ts in timestamps:
        counted, found = BRUTE_FORCE.record(state, "1.2.3.4", ts, threshold, horizon, keep=3600)
        assert counted
        alerts.extend(found)
    return state, alerts


def test_at_threshold_no_alert_just_over_one_alert():
    assert _run([1000 + i for i in range(5)])[1] == []
    _, alerts = _run([1000 + i for i in range(6)])
    assert len(alerts) == 1
    assert alerts[0].value == 6 and alerts[0].window_end - alerts[0].window_start == 60


def test_burst_alerts_at_most_once_per_60_seconds():
    # 10 failures per second for 3 minutes: one alert per non-overlapping 60-s window
    _, alerts = _run([1000 + i / 10 for i in range(1800)])
    assert len(alerts) == 3
    ends = [a.window_end for a in alerts]
    assert all(b - a >= 60 for a, b in zip(ends, ends[1:], strict=False))


def test_events_spread_beyond_60_seconds_do_not_alert():
    assert _run([1000 + 20 * i for i in range(20)])[1] == []


def test_expired_events_are_not_counted_and_old_buckets_are_dropped():
    state = new_state()
    assert BRUTE_FORCE.record(state, "ip", 100.0, 5, horizon=200.0, keep=3600) == (False, [])
    BRUTE_FORCE.record(state, "ip", 150.0, 5, horizon=0.0, keep=3600)
    BRUTE_FORCE.record(state, "ip", 5000.0, 5, horizon=4000.0, keep=3600)
    assert [b[0] for b in state["buckets"]] == [5000.0]


def test_redelivered_source_records_are_applied_once():
    state = new_state()
    assert not seen_before(state, 0, 10)
    assert seen_before(state, 0, 10)
    assert seen_before(state, 0, 9)
    assert not seen_before(state, 1, 3)
    assert not seen_before(state, 0, 11)
