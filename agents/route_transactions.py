"""route_transactions: validate `transactions`; the valid transactions go to its detections.

The card specs' states keep `/cards`.
"""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import parse_transaction
from streamapp.pipeline.ingest import Ingest, ingest_for, to_specs_only
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import transactions_topic
from streamapp.settings import Settings

__all__ = ["ingest", "route_transactions"]


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `transactions` (streamapp.app.declare_routes)."""
    return ingest_for(app, settings, source="transactions", parse=parse_transaction, rekey=to_specs_only)


@app.agent(transactions_topic, name="route-transactions")
async def route_transactions(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_transactions.name)
