"""card_velocity and amount_spike as pure state transitions."""

from __future__ import annotations

import copy
import json
import math

import pytest

from streamapp.rules.card_fraud import (
    AMOUNT_SPIKE,
    CARD_VELOCITY,
    hold_amount,
    judge_amounts,
    new_state,
    transactions_within,
)
from streamapp.rules.sliding_count import WINDOW_SECONDS

VELOCITY = 5  # contract default: more than 5 transactions within 60 s
FACTOR = 10.0  # contract default: above 10 x the card's mean amount
MIN_EARLIER = 5  # contract default: after at least 5 earlier transactions
T = 100_000.0
KEEP = WINDOW_SECONDS  # what the card agent keeps


def _velocity(timestamps, threshold=VELOCITY, horizon=0.0, keep=KEEP, card="c1"):
    state = new_state()
    alerts = []
    for ts in timestamps:
        counted, found = CARD_VELOCITY.record(state, card, ts, threshold, horizon, keep=keep)
        assert counted
        alerts.extend(found)
    return state, alerts


def _amounts(amounts, card="c1", factor=FACTOR, min_earlier=MIN_EARLIER, state=None):
    """Apply amounts as transactions t0, t1, ... one second apart; return (state, alerts)."""
    state = new_state() if state is None else state
    alerts = []
    for i, amount in enumerate(amounts):
        alerts.extend(_amount(state, card, f"t{i}", T + i, amount, factor, min_earlier))
    return state, alerts


def _amount(state, card, txn_id, ts, amount, factor, min_earlier):
    """One transaction in order: held, then judged at once (every earlier one has come)."""
    hold_amount(state, txn_id, ts, amount)
    return judge_amounts(state, card, float("inf"), factor, min_earlier)


# --- card_velocity ----------------------------------------------------------------------------


def test_velocity_at_threshold_no_alert_just_over_one_alert():
    assert _velocity([T + i for i in range(5)])[1] == []
    _, alerts = _velocity([T + i for i in range(6)])
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind == "card_velocity" and alert.key == "c1"
    assert alert.value == 6 and alert.threshold == VELOCITY
    assert alert.window_end - alert.window_start == 60
    assert alert.window_start <= T and T + 5 < alert.window_end


def test_velocity_threshold_is_a_parameter():
    assert _velocity([T + i for i in range(6)], threshold=6)[1] == []
    assert len(_velocity([T + i for i in range(7)], threshold=6)[1]) == 1


def test_velocity_burst_alerts_at_most_once_per_60_seconds():
    # 10 transactions per second for 3 minutes
    _, alerts = _velocity([T + i / 10 for i in range(1800)])
    assert len(alerts) == 3
    ends = [a.window_end for a in alerts]
    assert all(b - a >= 60 for a, b in zip(ends, ends[1:], strict=False))
    assert len({a.alert_id for a in alerts}) == 3


def test_velocity_spread_beyond_60_seconds_does_not_alert():
    assert _velocity([T + 15 * i for i in range(40)])[1] == []


def test_velocity_alert_id_is_deterministic():
    first = _velocity([T + i for i in range(6)])[1][0]
    assert _velocity([T + i for i in range(6)])[1][0] == first
    assert _velocity([T + i for i in range(6)], card="c2")[1][0].alert_id != first.alert_id
    assert _velocity([T + 600 + i for i in range(6)])[1][0].alert_id != first.alert_id


def test_velocity_events_older_than_horizon_are_not_counted_and_leave_state_unchanged():
    state, _ = _velocity([T + 100, T + 101])
    before = copy.deepcopy(state)
    # the bucket of T + 5 ([T, T+10)) ended at or before the horizon
    assert CARD_VELOCITY.record(state, "c1", T + 5, VELOCITY, T + 10, keep=KEEP) == (False, [])
    assert CARD_VELOCITY.record(state, "c1", T + 5, VELOCITY, T + 50, keep=KEEP) == (False, [])
    assert state == before


def test_velocity_keeps_only_what_the_window_needs():
    state, _ = _velocity([T + 10 * i for i in range(100)])
    starts = [b[0] for b in state["buckets"]]
    assert starts[-1] == T + 990
    # what the views keep, and one window more: every window a late event belongs to is whole
    assert starts[0] >= T + 990 - KEEP - WINDOW_SECONDS


def test_transactions_within():
    state, _ = _velocity([T + 1, T + 2, T + 15, T + 25, T + 25, T + 58])
    assert transactions_within(state, since=T - 1) == 6
    # buckets ending after `since`: [T+10, T+20), [T+20, T+30), [T+50, T+60)
    assert transactions_within(state, since=T + 10) == 4
    assert transactions_within(state, since=T + 30) == 1
    assert transactions_within(state, since=T + 60) == 0


# --- amount_spike -----------------------------------------------------------------------------


def test_spike_needs_5_earlier_transactions():
    assert _amounts([10.0] * 4 + [10_000.0])[1] == []
    _, alerts = _amounts([10.0] * 5 + [10_000.0])
    assert len(alerts) == 1


def test_min_earlier_is_a_parameter():
    assert _amounts([10.0] * 2 + [1000.0], min_earlier=3)[1] == []
    assert len(_amounts([10.0] * 3 + [1000.0], min_earlier=3)[1]) == 1


def test_spike_at_threshold_no_alert_just_over_one_alert():
    assert _amounts([10.0] * 5 + [100.0])[1] == []
    _, alerts = _amounts([10.0] * 5 + [100.01])
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.kind == AMOUNT_SPIKE and alert.key == "c1"
    assert alert.value == 100.01
    assert alert.threshold == pytest.approx(100.0)
    assert alert.ts == T + 5
    assert alert.window_start is None and alert.window_end is None


def test_spike_compares_with_the_mean_of_earlier_transactions_only():
    # earlier mean 10 -> threshold 100; with itself in the mean it would be 10 x 151/6 = 251.7
    _, alerts = _amounts([10.0] * 5 + [101.0])
    assert len(alerts) == 1
    assert alerts[0].threshold == pytest.approx(100.0)
    # a later spike is measured against every transaction before it, the earlier spike included
    _, alerts = _amounts([10.0] * 5 + [101.0, 200.0])  # mean of 6 earlier: 151/6 = 25.17
    assert len(alerts) == 1


def test_spike_mean_includes_all_earlier_transactions():
    # the mean is of every earlier transaction, not only the first 5
    earlier = [5.0, 5.0, 5.0, 5.0, 5.0, 25.0, 35.0]  # mean 85/7 = 12.14
    assert _amounts([*earlier, 121.0])[1] == []  # not above 121.4
    _, alerts = _amounts([*earlier, 122.0])
    assert len(alerts) == 1
    assert alerts[0].threshold == pytest.approx(10 * 85 / 7)


def test_factor_is_a_parameter():
    assert _amounts([10.0] * 5 + [50.0], factor=5.0)[1] == []
    assert len(_amounts([10.0] * 5 + [50.5], factor=5.0)[1]) == 1


def test_every_spiking_transaction_alerts():
    # "one per transaction": each of several spikes alerts, each with its own id
    _, alerts = _amounts([10.0] * 100 + [200.0, 200.0, 200.0])
    assert len(alerts) == 3
    assert len({a.alert_id for a in alerts}) == 3


def test_spike_alert_id_is_deterministic():
    amounts = [10.0] * 5 + [500.0]
    first = _amounts(amounts)[1][0]
    again = _amounts(amounts)[1][0]
    assert first == again
    assert _amounts(amounts, card="c2")[1][0].alert_id != first.alert_id
    state, _ = _amounts([10.0] * 5)
    [other_txn] = _amount(state, "c1", "another-txn", T + 5, 500.0, FACTOR, MIN_EARLIER)
    assert other_txn is not None and other_txn.alert_id != first.alert_id


def test_amounts_update_count_and_mean():
    state, _ = _amounts([10.0, 20.0, 30.0])
    assert state["count"] == 3
    assert state["sum"] == pytest.approx(60.0)
    assert state["last"] == T + 2


def test_state_is_json_able():
    state, _ = _velocity([T + i for i in range(10)])
    _amounts([10.0] * 6 + [1000.0], state=state)
    assert json.loads(json.dumps(state)) == state


# --- hostile but allowed amounts ----------------------------------------------------------------


def test_sums_stay_finite_at_the_largest_amount_allowed():
    from streamapp.settings import MAX_VALUE_LIMIT, Settings

    for ceiling in (Settings().max_amount, MAX_VALUE_LIMIT):
        state, alerts = _amounts([ceiling] * 20_000)
        assert math.isfinite(state["sum"]) and state["sum"] == ceiling * 20_000
        assert alerts == []
        _, [alert] = _amounts([0.01] * 5 + [ceiling])
        assert all(math.isfinite(x) for x in (alert.value, alert.threshold))
        assert json.loads(json.dumps(state)) == state  # nothing the changelog turns into null


def test_a_spike_after_only_zero_amounts_alerts_without_dividing_by_zero():
    state, [alert] = _amounts([0.0] * 5 + [1.0])
    assert alert.value == 1.0 and alert.threshold == 0.0
    assert "is above its mean 0.00 over 5 transactions" in alert.detail
    assert _amounts([0.0] * 6)[1] == []
