"""transactions_by_card: per card, 10-s buckets of the last 60 s and the count and sum of amounts."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["transactions_by_card"]

transactions_by_card = define_table(
    "transactions-by-card",
    help="card -> {buckets: [[start, n]], alerted, count, sum, last, pending, clock, settled, src}",
)
