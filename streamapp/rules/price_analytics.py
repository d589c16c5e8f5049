"""Per-symbol price analytics: last price, 60-s simple moving average, EWMA and a forecast.

The forecast is Holt's linear exponential smoothing (level + trend, alpha 0.3, beta 0.1): prices
drift, and a level-only model (the EWMA) always lags a trend; Holt's adds the smoothed slope, costs
two numbers of state and one multiply-add per tick, and needs no training window.

Smoothing depends on order, and ticks produced without keys can reach the symbol's partition out
of order. So the ticks of the last five minutes of event time are kept sorted and folded in
event-time order; older ticks are folded into a settled state once and dropped.

At most ``MAX_RECENT_TICKS`` ticks are kept per symbol: a symbol flooded with ticks folds its
oldest kept ones in early, so its state, and the work per tick, stay bounded; the SMA then
averages the newest ``MAX_RECENT_TICKS`` ticks of its 60 s. With prices bounded
(STREAMAPP_MAX_PRICE) every derived number stays finite: the SMA is a mean of at most that many
prices, and the EWMA and Holt's method (0 < alpha, beta < 1) are stable linear filters.
"""

from __future__ import annotations

from bisect import insort

from streamapp.rules.base import State

__all__ = [
    "ALPHA",
    "BETA",
    "MAX_RECENT_TICKS",
    "REORDER_SECONDS",
    "SMA_SECONDS",
    "new_state",
    "record_price",
    "view",
]

SMA_SECONDS = 60.0
REORDER_SECONDS = 300.0
ALPHA = 0.3  # weight of the newest price in the EWMA and in Holt's level
BETA = 0.1  # weight of the newest slope in Holt's trend
#: hard cap on the ticks kept per symbol (about 40 kB of state; a few ticks a second for 5 min fit)
MAX_RECENT_TICKS = 1000


def new_state() -> State:
    # settled: [ewma, level, trend] of every tick older than the reorder window, or None
    return {"last": None, "ts": None, "recent": [], "settled": None, "settled_ts": None}


def _fold(smoothed: list[float] | None, price: float) -> list[float]:
    if smoothed is None:
        return [price, price, 0.0]
    ewma, level, trend = smoothed
    new_level = ALPHA * price + (1 - ALPHA) * (level + trend)
    return [
        ALPHA * price + (1 - ALPHA) * ewma,
        new_level,
        BETA * (new_level - level) + (1 - BETA) * trend,
    ]


def record_price(state: State, ts: float, price: float) -> None:
    """Apply one tick; the smoothing follows event time within the reorder window."""
    settled_ts = state["settled_ts"]
    if settled_ts is not None and ts <= settled_ts:
        # later than the reorder window: fold it in now rather than lose it
        state["settled"] = _fold(state["settled"], price)
        return
    recent: list[list[float]] = state["recent"]
    insort(recent, [ts, price])
    newest_ts, newest_price = recent[-1]
    state["ts"], state["last"] = newest_ts, newest_price
    while recent[0][0] <= newest_ts - REORDER_SECONDS or len(recent) > MAX_RECENT_TICKS:
        old_ts, old_price = recent.pop(0)
        state["settled"] = _fold(state["settled"], old_price)
        state["settled_ts"] = old_ts


def view(symbol: str, state: State) -> dict[str, object]:
    """The web API's answer: ``sma_60s`` averages the ticks of the 60 s up to the newest one."""
    recent = state["recent"]
    smoothed = state["settled"]
    for _, price in recent:
        smoothed = _fold(smoothed, price)
    window = [p for ts, p in recent if ts > state["ts"] - SMA_SECONDS] if recent else []
    return {
        "symbol": symbol,
        "last": state["last"],
        "ts": state["ts"],
        "sma_60s": sum(window) / len(window) if window else None,
        "ewma": smoothed[0] if smoothed else None,
        "forecast": smoothed[1] + smoothed[2] if smoothed else None,
    }
