"""Price analytics: last price, 60-s SMA, EWMA (alpha 0.3) and Holt forecast (alpha 0.3, beta 0.1)."""

from __future__ import annotations

import json
import math

import pytest

from streamapp.rules.price_analytics import (
    ALPHA,
    BETA,
    MAX_RECENT_TICKS,
    SMA_SECONDS,
    new_state,
    record_price,
    view,
)

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


# --- hostile but allowed prices -----------------------------------------------------------------


def _finite(figures):
    return all(math.isfinite(figures[k]) for k in ("last", "sma_60s", "ewma", "forecast"))


def test_alternating_tiny_and_huge_prices_keep_every_figure_finite():
    from streamapp.settings import MAX_VALUE_LIMIT

    tiny = 5e-324  # the smallest positive float: a price the parser accepts
    for huge in (1e9, MAX_VALUE_LIMIT):
        state = new_state()
        for i in range(5000):
            record_price(state, T + i * 0.5, huge if i % 2 else tiny)
            if i % 500 == 0:
                assert _finite(view("ACME", state))
        figures = view("ACME", state)
        assert _finite(figures)
        # the filters are stable: nothing grows past a few times the largest price
        assert abs(figures["forecast"]) < 10 * huge and 0 < figures["ewma"] < huge
        assert json.loads(json.dumps(state)) == state


def test_a_flood_of_ticks_keeps_at_most_max_recent_ticks():
    state = new_state()
    for i in range(3 * MAX_RECENT_TICKS):  # far more ticks than fit, all within the reorder window
        record_price(state, T + i * 0.01, 100.0 + i % 7)
        assert len(state["recent"]) <= MAX_RECENT_TICKS
    assert len(state["recent"]) == MAX_RECENT_TICKS
    # the kept ticks are the newest; the older ones were folded in, not lost
    assert state["recent"][0][0] == T + 2 * MAX_RECENT_TICKS * 0.01
    assert state["settled_ts"] == T + (2 * MAX_RECENT_TICKS - 1) * 0.01
    figures = view("ACME", state)
    newest = [100.0 + i % 7 for i in range(2 * MAX_RECENT_TICKS, 3 * MAX_RECENT_TICKS)]
    assert figures["sma_60s"] == pytest.approx(sum(newest) / len(newest))
    # a tick later than the folded ones is folded at once and leaves the kept ones alone
    before = [list(t) for t in state["recent"]]
    record_price(state, T, 1.0)
    assert state["recent"] == before
