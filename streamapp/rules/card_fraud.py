"""card_velocity (too many transactions in 60 s) and amount_spike (amount far above the mean).

amount_spike compares a transaction with the ones before it in event time, and a transaction that
arrives late can raise or lower that mean: so transactions are held (``pending``) and judged once
the card's event clock has passed them by the grace, when no earlier one can still count.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from typing import Any

from streamapp.models import Alert
from streamapp.rules.base import State, rule_alert
from streamapp.rules.sliding_count import BUCKET_SECONDS, SlidingCount
from streamapp.rules.sliding_count import new_state as new_velocity_state

__all__ = [
    "AMOUNT_SPIKE",
    "CARD_VELOCITY",
    "MAX_HELD",
    "SpikeAlert",
    "card_totals",
    "hold_amount",
    "judge_amounts",
    "new_state",
    "ratio_text",
    "spike_alert",
    "transactions_within",
]

CARD_VELOCITY = SlidingCount(kind="card_velocity", noun="transactions on card")
AMOUNT_SPIKE = "amount_spike"
#: transactions held per card at most: a flood within the grace has its oldest judged early
MAX_HELD = 128


def new_state() -> State:
    # count and sum of the amounts judged so far (the mean a spike is measured against); pending:
    # [[ts, txn_id, amount]] not judged yet, oldest first. Amounts are at most STREAMAPP_MAX_AMOUNT
    # (<= 1e15), so the sum stays finite for 1e290 of them
    return {**new_velocity_state(), "count": 0, "sum": 0.0, "last": 0.0, "pending": []}


def hold_amount(state: State, txn_id: str, ts: float, amount: float) -> None:
    """Keep a transaction until every transaction before it in event time can have arrived."""
    insort(state.setdefault("pending", []), [ts, txn_id, amount])
    state["last"] = max(state["last"], ts)


#: (card_id, txn_id, ts, amount, earlier count, their mean, factor) -> the alert of a spike
SpikeAlert = Callable[[str, str, float, float, int, float, float], Alert]


def spike_alert(
    card_id: str, txn_id: str, ts: float, amount: float, count: int, mean: float, factor: float
) -> Alert:
    """The amount_spike alert of a transaction ``amount`` above ``factor`` x the ``mean`` of ``count``."""
    # earlier amounts may all be 0: any positive amount is then a spike, with no ratio to tell
    detail = (
        f"transaction {txn_id} of {amount:.2f} on card {card_id} is {ratio_text(amount, mean)} "
        f"{mean:.2f} over {count} transactions"
    )
    # one alert per transaction: its id names the transaction, there is no window
    return rule_alert(AMOUNT_SPIKE, card_id, ts, None, amount, factor * mean, detail, txn_id)


def ratio_text(amount: float, mean: float) -> str:
    """How far above its mean an amount is, in words ("12.0 x its mean"; "above its mean" for 0)."""
    return f"{amount / mean:.1f} x its mean" if mean else "above its mean"


def judge_amounts(
    state: State,
    card_id: str,
    before: float,
    factor: float,
    min_earlier: int,
    alert: SpikeAlert = spike_alert,
) -> list[Alert]:
    """Judge the held transactions earlier than ``before``, oldest first; return the spikes.

    Each is compared with the mean of the transactions strictly earlier in event time (those of
    the same second do not count for each other), so the answer is the same in any arrival order
    as long as nothing earlier than ``before`` arrives afterwards (the lateness model's promise).
    """
    pending: list[list[Any]] = state.get("pending", [])
    ready = max(bisect_left(pending, [before]), len(pending) - MAX_HELD)
    if not ready:
        return []
    alerts: list[Alert] = []
    i = 0
    while i < ready:
        j = i
        while j < ready and pending[j][0] == pending[i][0]:
            j += 1
        count, total = state["count"], state["sum"]
        for ts, txn_id, amount in pending[i:j]:
            if count >= min_earlier and amount > factor * (total / count):
                alerts.append(alert(card_id, txn_id, ts, amount, count, total / count, factor))
        state["count"] = count + (j - i)
        state["sum"] = total + sum(entry[2] for entry in pending[i:j])
        i = j
    del pending[:ready]
    return alerts


def card_totals(state: State) -> tuple[int, float]:
    """Count and sum of every transaction of the card, judged or held (for the /cards view)."""
    pending = state.get("pending", [])
    return state["count"] + len(pending), state["sum"] + sum(entry[2] for entry in pending)


def transactions_within(state: State, since: float) -> int:
    """Transactions in buckets ending after ``since`` (for "transactions_60s")."""
    return int(sum(n for start, n in state["buckets"] if start + BUCKET_SECONDS > since))
