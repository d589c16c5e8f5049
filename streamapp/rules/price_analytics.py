"""Per-symbol price analytics: last price, 60-s simple moving average, EWMA and a forecast.

The forecast is Holt's linear exponential smoothing (level + trend, alpha 0.3, beta 0.1): prices
drift, and a level-only model (the EWMA) always lags a trend; Holt's adds the smoothed slope, costs
two numbers of state and one multiply-add per tick, and needs no training window.
"""

from __future__ import annotations

from bisect import insort

from streamapp.rules.base import State

__all__ = ["ALPHA", "BETA", "SMA_SECONDS", "new_state", "record_price", "view"]

SMA_SECONDS = 60.0
ALPHA = 0.3  # weight of the newest price in the EWMA and in Holt's level
BETA = 0.1  # weight of the newest slope in Holt's trend


def new_state() -> State:
    return {"last": None, "ts": None, "recent": [], "ewma": None, "level": None, "trend": 0.0}


def record_price(state: State, ts: float, price: float) -> None:
    """Apply one tick (in arrival order; the SMA window follows event time)."""
    if state["ts"] is None or ts >= state["ts"]:
        state["last"], state["ts"] = price, ts
    recent: list[list[float]] = state["recent"]
    insort(recent, [ts, price])
    newest = recent[-1][0]
    while recent and recent[0][0] <= newest - SMA_SECONDS:
        del recent[0]
    if state["ewma"] is None:
        state["ewma"] = state["level"] = price
        return
    state["ewma"] = ALPHA * price + (1 - ALPHA) * state["ewma"]
    level, trend = state["level"], state["trend"]
    new_level = ALPHA * price + (1 - ALPHA) * (level + trend)
    state["trend"] = BETA * (new_level - level) + (1 - BETA) * trend
    state["level"] = new_level


def view(symbol: str, state: State) -> dict[str, object]:
    recent = state["recent"]
    return {
        "symbol": symbol,
        "last": state["last"],
        "ts": state["ts"],
        # mean of the ticks in the 60 s up to the symbol's newest tick
        "sma_60s": sum(p for _, p in recent) / len(recent) if recent else None,
        "ewma": state["ewma"],
        "forecast": state["level"] + state["trend"] if state["level"] is not None else None,
    }
