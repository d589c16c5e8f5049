"""analyze_prices: per-symbol last price, 60-s SMA, EWMA and Holt forecast."""

from __future__ import annotations

import faust

from agents.base import Detector, detect
from agents.worker_detector import detector_for
from streamapp.app import app
from streamapp.models import Alert, StockPrice
from streamapp.rules.base import State
from streamapp.rules.price_analytics import new_state, record_price
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.topics import prices_by_symbol_topic
from streamapp.settings import Settings
from tables.prices_by_symbol import prices_by_symbol

__all__ = ["analyze_prices", "detector"]


def _apply(state: State, symbol: str, tick: StockPrice) -> tuple[bool, list[Alert]]:
    if tick.ts <= worker_clock.horizon:
        return False, []
    record_price(state, tick.ts, tick.price)
    return True, []


def detector(app: faust.App, settings: Settings) -> Detector:
    """The batch handler of prices-by-symbol (streamapp.app.declare_routes)."""
    return detector_for(
        app, settings, source="stock-prices", table=prices_by_symbol, new_state=new_state, apply=_apply
    )


@app.agent(prices_by_symbol_topic, name="analyze-prices")
async def analyze_prices(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, analyze_prices.name)
