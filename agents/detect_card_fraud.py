"""detect_card_fraud: card_velocity and amount_spike over each card's transactions."""

from __future__ import annotations

from typing import Any

import faust

from agents.base import HeldKeys, detect, send_ticks
from streamapp.app import app, settings
from streamapp.models import Alert
from streamapp.rules.base import State
from streamapp.rules.card_fraud import CARD_VELOCITY, hold_amount, judge_amounts, new_state
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.topics import transactions_by_card_topic
from tables.transactions_by_card import transactions_by_card

__all__ = ["detect_card_fraud", "held_cards", "tick_card_fraud"]

#: cards holding transactions for amount_spike, until a later one or a quiet grace judges them
held_cards = HeldKeys()


def _apply(state: State, card_id: str, txn: dict[str, Any]) -> tuple[bool, list[Alert]]:
    limits = settings.thresholds
    counted, alerts = CARD_VELOCITY.record(
        state, card_id, txn["ts"], limits.card_velocity_transactions, worker_clock.horizon,
        keep=settings.retention_seconds,  # late transactions still find their window
    )  # fmt: skip
    if counted:
        hold_amount(state, txn["txn_id"], txn["ts"], txn["amount"])
    return counted, alerts


def _judge(state: State, card_id: str, before: float) -> list[Alert]:
    limits = settings.thresholds
    return judge_amounts(
        state, card_id, before, limits.amount_spike_factor, limits.amount_spike_min_transactions
    )


@app.agent(transactions_by_card_topic, name="detect-card-fraud")
async def detect_card_fraud(stream: faust.StreamT[bytes]) -> None:
    await detect(
        stream, transactions_by_card, new_state, _apply, "transactions", judge=_judge, held=held_cards
    )


@app.task
async def tick_card_fraud() -> None:
    await send_ticks(transactions_by_card_topic, held_cards)
