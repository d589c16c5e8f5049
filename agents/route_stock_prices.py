"""route_stock_prices: validate `stock-prices` and re-key them by symbol."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import StockPrice, parse_stock_price
from streamapp.pipeline.ingest import route
from streamapp.runtime.topics import prices_by_symbol_topic, stock_prices_topic

__all__ = ["route_stock_prices"]


def _targets(tick: StockPrice) -> list[tuple[faust.TopicT, str]]:
    return [(prices_by_symbol_topic, tick.symbol)]


@app.agent(stock_prices_topic, name="route-stock-prices")
async def route_stock_prices(stream: faust.StreamT[bytes]) -> None:
    await route(stream, parse_stock_price, "stock-prices", _targets)
