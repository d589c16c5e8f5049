"""Price analytics: last price, 60-s SMA, EWMA (alpha 0.3) and Holt forecast (alpha 0.3, beta 0.1)."""

from __future__ import annotations

import json

import pytest

from streamapp.rules.price_analytics import ALPHA, BETA, SMA_SECONDS, new_state, record_price, view

T = 1_700_000_000.0


def _run(ticks):
    state = new_state()
    for ts, price in ticks:
        record_price(state, ts, price)
    return state


SERIES = [(T, 10.0), (T + 10, 11.0), (T + 20, 12.0), (T + 30, 13.0)]


def test_parameters_match_the_documented_model():
    assert (ALPHA, BETA, SMA_SECONDS) == (0.3, 0.1, 60)


def test_empty_state_has_no_figures():
    assert view("ACME", new_state()) == {
        "symbol": "ACME",
        "last": None,
        "ts": None,
        "sma_60s": None,
        "ewma": None,
        "forecast": None,
    }


def test_single_tick():
    assert view("ACME", _run([(T, 42.5)])) == {
        "symbol": "ACME",
        "last": 42.5,
        "ts": T,
        "sma_60s": 42.5,
        "ewma": 42.5,
        "forecast": 42.5,
    }


def test_known_series_by_hand():
    # EWMA: 10 -> 0.3*11 + 0.7*10 = 10.3 -> 0.3*12 + 0.7*10.3 = 10.81 -> 0.3*13 + 0.7*10.81 = 11.467
    # Holt (level L, trend b; L=10, b=0 at the first tick):
    #   11: L = 0.3*11 + 0.7*(10 + 0)          = 10.3      b = 0.1*(10.3 - 10)      + 0.9*0      = 0.03
    #   12: L = 0.3*12 + 0.7*(10.3 + 0.03)     = 10.831    b = 0.1*(10.831 - 10.3)  + 0.9*0.03   = 0.0801
    #   13: L = 0.3*13 + 0.7*(10.831 + 0.0801) = 11.53777  b = 0.1*(11.53777-10.831) + 0.9*0.0801 = 0.142767
    #   forecast = L + b = 11.680537
    v = view("ACME", _run(SERIES))
    assert v["last"] == 13.0 and v["ts"] == T + 30
    assert v["sma_60s"] == pytest.approx(11.5)
    assert v["ewma"] == pytest.approx(11.467)
    assert v["forecast"] == pytest.approx(11.680537)


def test_tick_70s_later_pushes_old_ticks_out_of_the_sma():
    # one more tick at T+100: the SMA window (T+40, T+100] holds only it
    #   EWMA = 0.3*20 + 0.7*11.467 = 14.0269
    #   L = 0.3*20 + 0.7*(11.53777 + 0.142767) = 14.1763759
    #   b = 0.1*(14.1763759 - 11.53777) + 0.9*0.142767 = 0.39235089
    v = view("ACME", _run([*SERIES, (T + 100, 20.0)]))
    assert v["last"] == 20.0 and v["ts"] == T + 100
    assert v["sma_60s"] == pytest.approx(20.0)
    assert v["ewma"] == pytest.approx(14.0269)
    assert v["forecast"] == pytest.approx(14.1763759 + 0.39235089)


def test_sma_covers_the_60s_up_to_the_newest_tick():
    # newest T+75: ticks after T+15 count (12, 13, 14), T and T+10 have left
    v = view("ACME", _run([*SERIES, (T + 75, 14.0)]))
    assert v["sma_60s"] == pytest.approx(13.0)
    # then T+100: only T+75 and T+100 are within 60 s
    v = view("ACME", _run([*SERIES, (T + 75, 14.0), (T + 100, 20.0)]))
    assert v["sma_60s"] == pytest.approx(17.0)


def test_rising_series_forecast_leads_the_ewma():
    state = _run([(T + i, 100.0 + i) for i in range(50)])
    v = view("ACME", state)
    assert v["ewma"] < v["forecast"] < 149.0 + 2


def test_out_of_order_ticks_keep_last_the_newest():
    state = _run([(T, 10.0), (T + 30, 13.0), (T + 10, 11.0)])
    v = view("ACME", state)
    assert v["last"] == 13.0 and v["ts"] == T + 30
    # the late tick is within 60 s of the newest: it counts in the SMA
    assert v["sma_60s"] == pytest.approx((10.0 + 13.0 + 11.0) / 3)
    record_price(state, T + 31, 14.0)
    assert (view("ACME", state)["last"], view("ACME", state)["ts"]) == (14.0, T + 31)


def test_late_tick_older_than_the_sma_window_does_not_enter_it():
    state = _run([(T + 100, 20.0), (T + 20, 99.0)])
    v = view("ACME", state)
    assert v["last"] == 20.0 and v["ts"] == T + 100
    assert v["sma_60s"] == pytest.approx(20.0)


def test_state_is_json_able():
    state = _run([*SERIES, (T + 100, 20.0)])
    assert json.loads(json.dumps(state)) == state
