"""route_transactions: validate `transactions` and re-key them by card."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import Transaction, parse_transaction
from streamapp.pipeline.ingest import Ingest, ingest_for
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import transactions_by_card_topic, transactions_topic
from streamapp.settings import Settings

__all__ = ["ingest", "route_transactions"]


def _targets(txn: Transaction) -> list[tuple[faust.TopicT, str]]:
    return [(transactions_by_card_topic, txn.card_id)]


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `transactions` (streamapp.app.declare_routes)."""
    return ingest_for(app, settings, source="transactions", parse=parse_transaction, rekey=_targets)


@app.agent(transactions_topic, name="route-transactions")
async def route_transactions(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_transactions.name)
