"""route_transactions: validate `transactions` and re-key them by card."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import Transaction, parse_transaction
from streamapp.pipeline.ingest import route
from streamapp.runtime.topics import transactions_by_card_topic, transactions_topic

__all__ = ["route_transactions"]


def _targets(txn: Transaction) -> list[tuple[faust.TopicT, str]]:
    return [(transactions_by_card_topic, txn.card_id)]


@app.agent(transactions_topic, name="route-transactions")
async def route_transactions(stream: faust.StreamT[bytes]) -> None:
    await route(stream, parse_transaction, "transactions", _targets)
