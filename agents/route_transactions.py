"""route_transactions: validate `transactions` and re-key them by card.

Only while a card rule runs (``card_velocity`` or ``amount_spike`` in ``STREAMAPP_RULES``):
without them the card detector gets nothing, and specs of those names keep `/cards` instead.
"""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.detections.operators import CARD_DETECTIONS
from streamapp.models import parse_transaction
from streamapp.pipeline.ingest import Ingest, ingest_for, rekey_by
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import transactions_by_card_topic, transactions_topic
from streamapp.settings import Settings
from streamapp.types import Rekey

__all__ = ["ingest", "route_transactions", "transaction_targets"]


def transaction_targets(rules: frozenset[str]) -> Rekey:
    """Where a transaction goes for these rules (STREAMAPP_RULES): by card if a card rule runs."""
    return rekey_by(transactions_by_card_topic, "card_id", not rules.isdisjoint(CARD_DETECTIONS))


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `transactions` (streamapp.app.declare_routes)."""
    rekey = transaction_targets(settings.hand_written_rules)
    return ingest_for(app, settings, source="transactions", parse=parse_transaction, rekey=rekey)


@app.agent(transactions_topic, name="route-transactions")
async def route_transactions(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_transactions.name)
