"""account_takeover as a pure state transition: threshold, one alert per success, 5-min lookback."""

from __future__ import annotations

import copy
import json

import pytest

from streamapp.rules.account_takeover import KIND, LOOKBACK_SECONDS, new_state, record_login

THRESHOLD = 3  # contract default: "at least 3 failed logins"
T = 100_000.0


def _run(logins, threshold=THRESHOLD, horizon=0.0, user="alice"):
    """Apply ``(ts, success)`` logins in arrival order; return (state, alerts)."""
    state = new_state()
    alerts = []
    for ts, success in logins:
        counted, found = record_login(state, user, ts, success, threshold, horizon)
        assert counted
        alerts.extend(found)
    return state, alerts


def _failures(n, start=T, step=1.0):
    return [(start + i * step, False) for i in range(n)]


def test_lookback_is_five_minutes():
    assert LOOKBACK_SECONDS == 300


def test_below_threshold_no_alert_at_threshold_one_alert():
    # "at least 3": 2 failures then a success is not enough, 3 are
    assert _run([*_failures(2), (T + 10, True)])[1] == []
    _, alerts = _run([*_failures(3), (T + 10, True)])
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind == KIND and alert.key == "alice"
    assert alert.value == 3 and alert.threshold == THRESHOLD
    assert alert.ts == T + 10
    assert alert.window_end == T + 10 and alert.window_start == T + 10 - 300


def test_threshold_is_a_parameter():
    logins = [*_failures(5), (T + 10, True)]
    assert _run(logins, threshold=6)[1] == []
    assert len(_run(logins, threshold=5)[1]) == 1


def test_failures_alone_never_alert():
    assert _run(_failures(100))[1] == []


def test_burst_of_failures_then_one_success_is_one_alert():
    _, alerts = _run([*_failures(50), (T + 60, True)])
    assert len(alerts) == 1
    assert alerts[0].value == 50


def test_each_success_after_the_failures_alerts():
    _, alerts = _run([*_failures(50), (T + 60, True), (T + 61, True)])
    assert len(alerts) == 2
    assert alerts[0].alert_id != alerts[1].alert_id


def test_success_before_the_failures_does_not_alert():
    assert _run([(T, True), *_failures(5, start=T + 1)])[1] == []


def test_late_failures_after_the_success_in_event_time_do_not_count():
    # failures arrive first but happened after the success: they do not precede it
    assert _run([*_failures(5, start=T + 100), (T + 50, True)])[1] == []


def test_other_users_failures_do_not_count():
    state = new_state()
    for ts, success in _failures(5):
        record_login(state, "bob", ts, success, THRESHOLD, 0.0)
    other = new_state()
    assert record_login(other, "alice", T + 10, True, THRESHOLD, 0.0) == (True, [])


@pytest.mark.parametrize(
    ("oldest_age", "fires"),
    [(299.5, True), (300.5, False)],
)
def test_five_minute_lookback_boundary(oldest_age, fires):
    success = T + 1000
    logins = [(success - oldest_age, False), (success - 200, False), (success - 100, False), (success, True)]
    _, alerts = _run(logins)
    assert len(alerts) == (1 if fires else 0)


def test_failures_spread_beyond_five_minutes_do_not_alert():
    # one failure every 200 s: never 3 within any 5 minutes
    assert _run([*_failures(10, step=200.0), (T + 10 * 200, True)])[1] == []


def test_alert_id_is_deterministic():
    logins = [*_failures(4), (T + 10, True)]
    first = _run(logins)[1][0]
    again = _run(logins)[1][0]
    assert first.alert_id == again.alert_id
    assert first == again
    later = _run([*_failures(4), (T + 11, True)])[1][0]
    assert later.alert_id != first.alert_id
    other_user = _run(logins, user="bob")[1][0]
    assert other_user.alert_id != first.alert_id


def test_events_older_than_horizon_are_not_counted_and_leave_state_unchanged():
    state, _ = _run(_failures(2))
    before = copy.deepcopy(state)
    for success in (False, True):
        assert record_login(state, "alice", T - 10, success, THRESHOLD, horizon=T - 5) == (False, [])
        assert state == before
    # an event exactly at the horizon is expired too
    assert record_login(state, "alice", T - 5, False, THRESHOLD, horizon=T - 5) == (False, [])
    assert state == before


def test_expired_failures_do_not_count():
    # 3 failures counted earlier; by the time of the success they are older than the horizon
    state, _ = _run(_failures(3))
    horizon = T + 50
    assert record_login(state, "alice", horizon + 1, False, THRESHOLD, horizon) == (True, [])
    counted, alerts = record_login(state, "alice", horizon + 2, True, THRESHOLD, horizon)
    assert counted and alerts == []


def test_state_is_json_able_and_old_failures_are_pruned():
    state, _ = _run(_failures(1000, step=1.0))
    assert json.loads(json.dumps(state)) == state
    # a user under attack keeps a bounded list: only the newest failures can decide the rule
    assert len(state["failures"]) == 256 and max(state["failures"]) == T + 999
    # failures older than the retention horizon leave state
    record_login(state, "alice", T + 1000, False, THRESHOLD, horizon=T + 900)
    assert min(state["failures"]) > T + 900


def test_late_failure_completes_a_success_seen_before_it():
    # records without keys can arrive out of order: the success first, then its failures
    logins = [(T + 10, True), (T + 1, False), (T + 2, False), (T + 3, False), (T + 4, False)]
    _, alerts = _run(logins)
    assert len(alerts) == 1
    assert alerts[0].ts == T + 10 and alerts[0].value == 3


def test_late_success_within_retention_still_sees_its_failures():
    # failures at 600, 610, 620; a failure at 905 arrives; then the success of 630 arrives 275 s late.
    # 600, 610 and 620 are within the 5 minutes before 630: the contract says this is a takeover.
    logins = [(600.0, False), (610.0, False), (620.0, False), (905.0, False), (630.0, True)]
    _, alerts = _run(logins)
    assert len(alerts) == 1
    assert alerts[0].value == 3
