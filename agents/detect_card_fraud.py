"""detect_card_fraud: card_velocity and amount_spike over each card's transactions."""

from __future__ import annotations

from typing import Any

import faust

from agents.base import detect
from streamapp.app import app, settings
from streamapp.clock import worker_clock
from streamapp.models import Alert
from streamapp.rules.base import State
from streamapp.rules.card_fraud import CARD_VELOCITY, new_state, record_amount
from streamapp.topics import transactions_by_card_topic
from tables.transactions_by_card import transactions_by_card

__all__ = ["detect_card_fraud"]


def _apply(state: State, card_id: str, txn: dict[str, Any]) -> tuple[bool, list[Alert]]:
    limits = settings.thresholds
    counted, velocity = CARD_VELOCITY.record(
        state, card_id, txn["ts"], limits.card_velocity_transactions, worker_clock.horizon,
        keep=settings.retention_seconds,  # late transactions still find their window
    )  # fmt: skip
    if not counted:
        return False, []
    spike = record_amount(
        state, card_id, txn["txn_id"], txn["ts"], txn["amount"],
        limits.amount_spike_factor, limits.amount_spike_min_transactions,
    )  # fmt: skip
    return True, [a for a in (velocity, spike) if a is not None]


@app.agent(transactions_by_card_topic, name="detect-card-fraud")
async def detect_card_fraud(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, transactions_by_card, new_state, _apply, "transactions")
