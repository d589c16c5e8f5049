"""route_stock_prices: validate `stock-prices` and re-key them by symbol."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import StockPrice, parse_stock_price
from streamapp.pipeline.ingest import Ingest, ingest_for
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import prices_by_symbol_topic, stock_prices_topic
from streamapp.settings import Settings

__all__ = ["ingest", "route_stock_prices"]


def _targets(tick: StockPrice) -> list[tuple[faust.TopicT, str]]:
    return [(prices_by_symbol_topic, tick.symbol)]


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `stock-prices` (streamapp.app.declare_routes)."""
    return ingest_for(app, settings, source="stock-prices", parse=parse_stock_price, rekey=_targets)


@app.agent(stock_prices_topic, name="route-stock-prices")
async def route_stock_prices(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_stock_prices.name)
