"""detect_card_fraud: card_velocity and amount_spike over each card's transactions."""

from __future__ import annotations

from functools import partial

import faust

from agents.base import Detector, detect
from agents.held_keys import HeldKeys, send_ticks
from agents.worker_detector import detector_for
from streamapp.app import app, settings
from streamapp.models import Alert, Transaction
from streamapp.rules.base import State
from streamapp.rules.card_fraud import CARD_VELOCITY, hold_amount, judge_amounts, new_state
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.producer import RecordBatches
from streamapp.runtime.topics import transactions_by_card_topic
from streamapp.settings import Settings
from tables.transactions_by_card import transactions_by_card

__all__ = ["detect_card_fraud", "detector", "held_cards", "tick_card_fraud"]

#: cards holding transactions for amount_spike, until a later one or a quiet grace judges them
held_cards = HeldKeys()


def detector(app: faust.App, settings: Settings) -> Detector:
    """The batch handler of transactions-by-card (streamapp.app.declare_routes)."""
    limits, keep = settings.thresholds, settings.retention_seconds

    def apply(state: State, card_id: str, txn: Transaction) -> tuple[bool, list[Alert]]:
        counted, alerts = CARD_VELOCITY.record(
            state, card_id, txn.ts, limits.card_velocity_transactions, worker_clock.horizon,
            keep=keep,  # late transactions still find their window
        )  # fmt: skip
        if counted:
            hold_amount(state, txn.txn_id, txn.ts, txn.amount)
        return counted, alerts

    def judge(state: State, card_id: str, before: float) -> list[Alert]:
        return judge_amounts(
            state, card_id, before, limits.amount_spike_factor, limits.amount_spike_min_transactions
        )

    return detector_for(
        app, settings, source="transactions", table=transactions_by_card, new_state=new_state,
        apply=apply, judge=judge, held=held_cards,
    )  # fmt: skip


@app.agent(transactions_by_card_topic, name="detect-card-fraud")
async def detect_card_fraud(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, detect_card_fraud.name)


@app.task
async def tick_card_fraud() -> None:
    await send_ticks(
        transactions_by_card_topic.get_topic_name(),
        held_cards,
        settings.grace_seconds,
        partial(RecordBatches, app),
    )
