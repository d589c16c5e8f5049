"""high_temperature and temperature_anomaly as pure state transitions over 60-s tumbling windows."""

from __future__ import annotations

import copy
import json

from streamapp.rules.temperature import (
    ANOMALY,
    HIGH,
    WINDOW_SECONDS,
    TemperatureThresholds,
    judge_readings,
    new_state,
    record_reading,
    window_view,
)

LIMITS = TemperatureThresholds()  # contract defaults: above 100, 4 standard deviations, 30 readings
T = 120_000.0  # a multiple of 60: the start of a window


def _feed(state, readings, horizon=0.0, sensor="s1", limits=LIMITS):
    """Apply ``(ts, temperature)`` readings in order; return every alert."""
    alerts = []
    for ts, temperature in readings:
        counted, new = record_reading(state, sensor, ts, temperature, limits, horizon)
        assert counted
        alerts.extend(new)
        # in order: every reading before this one has come, so the held ones are judged now
        alerts.extend(judge_readings(state, sensor, float("inf"), limits, horizon))
    return alerts


def _run(readings, **kwargs):
    state = new_state()
    return state, _feed(state, readings, **kwargs)


def _kinds(alerts):
    return [a.kind for a in alerts]


def _history(n, start=T, low=10.0, high=12.0):
    """``n`` readings, one per second, alternating ``high``, ``low``: mean 11 and std 1 for even n."""
    return [(start + i, high if i % 2 == 0 else low) for i in range(n)]


def test_defaults_match_the_contract():
    assert (LIMITS.high, LIMITS.sigmas, LIMITS.min_readings) == (100.0, 4.0, 30)
    assert WINDOW_SECONDS == 60


# --- high_temperature -------------------------------------------------------------------------


def test_high_temperature_at_threshold_no_alert_just_over_one_alert():
    assert _run([(T, 100.0)])[1] == []
    _, alerts = _run([(T, 100.01)])
    assert _kinds(alerts) == [HIGH]
    alert = alerts[0]
    assert alert.key == "s1" and alert.value == 100.01 and alert.threshold == 100.0
    assert alert.ts == T
    assert (alert.window_start, alert.window_end) == (T, T + 60)


def test_high_temperature_window_is_aligned_to_multiples_of_60s():
    alert = _run([(T + 59.5, 150.0)])[1][0]
    assert (alert.window_start, alert.window_end) == (T, T + 60)
    alert = _run([(T + 60, 150.0)])[1][0]
    assert (alert.window_start, alert.window_end) == (T + 60, T + 120)


def test_high_threshold_is_a_parameter():
    limits = TemperatureThresholds(high=50.0)
    assert _run([(T, 50.0)], limits=limits)[1] == []
    assert _kinds(_run([(T, 50.5)], limits=limits)[1]) == [HIGH]


def test_twenty_hot_readings_in_one_minute_alert_once():
    _, alerts = _run([(T + 2 * i, 120.0 + i) for i in range(20)])
    assert _kinds(alerts) == [HIGH]


def test_twenty_hot_readings_in_two_minutes_alert_twice():
    readings = [(T + 50 + i, 120.0) for i in range(20)]  # 10 in [T, T+60), 10 in [T+60, T+120)
    _, alerts = _run(readings)
    assert _kinds(alerts) == [HIGH, HIGH]
    assert [a.window_start for a in alerts] == [T, T + 60]
    assert alerts[0].alert_id != alerts[1].alert_id


def test_high_temperature_per_sensor():
    state_a, state_b = new_state(), new_state()
    assert _kinds(_feed(state_a, [(T, 120.0)], sensor="a")) == [HIGH]
    assert _kinds(_feed(state_b, [(T + 1, 120.0)], sensor="b")) == [HIGH]


def test_high_alert_ids_are_deterministic():
    first = _run([(T + 5, 130.0), (T + 6, 140.0)])[1]
    again = _run([(T + 5, 130.0), (T + 6, 140.0)])[1]
    assert [a.alert_id for a in first] == [a.alert_id for a in again]
    assert first == again
    # a later reading in the same window does not change the window's id
    assert _run([(T + 30, 130.0)])[1][0].alert_id == first[0].alert_id
    assert _run([(T + 65, 130.0)])[1][0].alert_id != first[0].alert_id
    assert _run([(T + 5, 130.0)], sensor="s2")[1][0].alert_id != first[0].alert_id


# --- temperature_anomaly ----------------------------------------------------------------------


def test_anomaly_needs_30_earlier_readings():
    # 29 earlier readings, then an outlier: not enough history
    assert _run([*_history(29), (T + 40, 50.0)])[1] == []
    # 30 earlier readings, then the same outlier: an anomaly
    _, alerts = _run([*_history(30), (T + 40, 50.0)])
    assert _kinds(alerts) == [ANOMALY]
    alert = alerts[0]
    assert alert.value == 50.0 and alert.threshold == 4.0 and alert.key == "s1"
    assert (alert.window_start, alert.window_end) == (T, T + 60)


def test_min_readings_is_a_parameter():
    limits = TemperatureThresholds(min_readings=10)
    assert _run([*_history(9), (T + 40, 50.0)], limits=limits)[1] == []
    assert _kinds(_run([*_history(10), (T + 40, 50.0)], limits=limits)[1]) == [ANOMALY]


def test_anomaly_exactly_four_sigmas_no_alert_just_over_one_alert():
    # history: 15 x 12.0 and 15 x 10.0, mean 11, standard deviation 1
    assert _run([*_history(30), (T + 40, 15.0)])[1] == []
    assert _run([*_history(30), (T + 40, 7.0)])[1] == []
    assert _kinds(_run([*_history(30), (T + 40, 15.1)])[1]) == [ANOMALY]
    assert _kinds(_run([*_history(30), (T + 40, 6.9)])[1]) == [ANOMALY]


def test_anomaly_compares_with_readings_before_this_one():
    # with the outlier itself in the history the mean/std would be 11.14/1.24 and 15.3 would not be
    # 4 sigmas away; against the 30 earlier readings (11 / 1) it is
    assert _kinds(_run([*_history(30), (T + 40, 15.3)])[1]) == [ANOMALY]


def test_anomaly_history_spans_windows():
    # 30 readings spread over several earlier windows count as the sensor's history
    history = [(T + 20 * i, 12.0 if i % 2 == 0 else 10.0) for i in range(30)]
    _, alerts = _run([*history, (T + 20 * 30, 50.0)])
    assert _kinds(alerts) == [ANOMALY]


def test_flat_history_then_the_same_value_no_alert():
    for value in (20.0, 20.1, 36.6, -3.3):
        assert _run([(T + i, value) for i in range(40)])[1] == []


def test_flat_history_then_a_different_value_is_an_anomaly():
    _, alerts = _run([*[(T + i, 20.1) for i in range(30)], (T + 30, 21.0)])
    assert _kinds(alerts) == [ANOMALY]


def test_anomalies_at_most_once_per_window():
    # a long, steady history so that several outliers in a row each stay far out
    history = [(T + i * 0.25, 12.0 if i % 2 == 0 else 10.0) for i in range(200)]  # [T, T+50)
    outliers_same_window = [(T + 55 + i, 60.0) for i in range(3)]  # [T, T+60)
    outlier_next_window = [(T + 70, 60.0)]
    _, alerts = _run([*history, *outliers_same_window, *outlier_next_window])
    assert _kinds(alerts) == [ANOMALY, ANOMALY]
    assert [a.window_start for a in alerts] == [T, T + 60]
    assert alerts[0].alert_id != alerts[1].alert_id


def test_a_hot_outlier_raises_both_kinds_once_per_window():
    history = [(T + i * 0.25, 12.0 if i % 2 == 0 else 10.0) for i in range(200)]
    _, alerts = _run([*history, (T + 55, 150.0), (T + 56, 150.0), (T + 57, 150.0)])
    assert sorted(_kinds(alerts)) == sorted([HIGH, ANOMALY])


def test_anomaly_alert_ids_are_deterministic_and_differ_from_high():
    readings = [*_history(30), (T + 40, 150.0)]
    first = _run(readings)[1]
    again = _run(readings)[1]
    assert first == again
    assert len({a.alert_id for a in first}) == 2


# --- horizon / state --------------------------------------------------------------------------


def test_readings_older_than_horizon_are_not_counted_and_leave_state_unchanged():
    state, _ = _run([(T + 1000, 20.0), (T + 1001, 21.0)])
    before = copy.deepcopy(state)
    # window [T, T+60) ended at or before the horizon
    for horizon in (T + 60, T + 500):
        assert record_reading(state, "s1", T + 10, 150.0, LIMITS, horizon) == (False, [])
        assert state == before


def test_out_of_order_reading_keeps_last_the_newest():
    state, _ = _run([(T + 30, 20.0), (T + 10, 25.0)])
    assert state["last"] == [T + 30, 20.0]
    _feed(state, [(T + 31, 22.0)])
    assert state["last"] == [T + 31, 22.0]


def test_state_is_json_able():
    state, _ = _run([*_history(40), (T + 100, 150.0)])
    assert json.loads(json.dumps(state)) == state


def test_window_view_exact_values_newest_first():
    readings = [
        (T + 5, 20.0),
        (T + 50, 22.0),
        (T + 59.9, 27.0),  # window [T, T+60): count 3, min 20, max 27, mean 23
        (T + 180, -4.0),  # window [T+180, T+240): count 2, min -4, max 6, mean 1
        (T + 239, 6.0),
        (T + 60, 30.0),  # out of order, window [T+60, T+120): count 1
    ]
    state, _ = _run(readings)
    assert window_view(state, horizon=0.0) == [
        {"start": T + 180, "end": T + 240, "count": 2, "min": -4.0, "max": 6.0, "mean": 1.0},
        {"start": T + 60, "end": T + 120, "count": 1, "min": 30.0, "max": 30.0, "mean": 30.0},
        {"start": T, "end": T + 60, "count": 3, "min": 20.0, "max": 27.0, "mean": 23.0},
    ]


def test_window_view_hides_expired_windows():
    state, _ = _run([(T + 5, 20.0), (T + 65, 21.0), (T + 125, 22.0)])
    assert [w["start"] for w in window_view(state, horizon=T + 60)] == [T + 120, T + 60]
    assert [w["start"] for w in window_view(state, horizon=T + 59)] == [T + 120, T + 60, T]
    assert window_view(state, horizon=T + 180) == []


def test_expired_windows_leave_the_state_on_the_next_write():
    state, _ = _run([(T + 5, 20.0), (T + 65, 21.0)])
    _feed(state, [(T + 4000, 22.0)], horizon=T + 4000 - 3600)
    assert [w[0] for w in state["windows"]] == [T + 3960]


def test_expired_readings_are_not_part_of_the_rolling_history():
    # 30 readings at T..T+29 (window ends T+60); 2.5 h later, with a 1-h retention, a reading of 50:
    # no retained reading is left, so there is no 30-reading history and no anomaly.
    state, _ = _run(_history(30))
    ts = T + 9000
    counted, alerts = record_reading(state, "s1", ts, 50.0, LIMITS, horizon=ts - 3600)
    assert counted
    assert alerts == []
