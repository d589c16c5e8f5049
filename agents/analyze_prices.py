"""analyze_prices: per-symbol last price, 60-s SMA, EWMA and Holt forecast."""

from __future__ import annotations

from typing import Any

import faust

from agents.base import detect
from streamapp.app import app
from streamapp.models import Alert
from streamapp.rules.base import State
from streamapp.rules.price_analytics import new_state, record_price
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.topics import prices_by_symbol_topic
from tables.prices_by_symbol import prices_by_symbol

__all__ = ["analyze_prices"]


def _apply(state: State, symbol: str, tick: dict[str, Any]) -> tuple[bool, list[Alert]]:
    if tick["ts"] <= worker_clock.horizon:
        return False, []
    record_price(state, tick["ts"], tick["price"])
    return True, []


@app.agent(prices_by_symbol_topic, name="analyze-prices")
async def analyze_prices(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, prices_by_symbol, new_state, _apply, "stock-prices")
