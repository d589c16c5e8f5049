"""prices_by_symbol: per symbol, last price, the ticks of the last 60 s, EWMA and Holt state."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["prices_by_symbol"]

prices_by_symbol = define_table(
    "prices-by-symbol", help="symbol -> {last, ts, recent: [[ts, price]], ewma, level, trend, src}"
)
