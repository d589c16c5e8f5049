"""card_velocity (too many transactions in 60 s) and amount_spike (amount far above the mean)."""

from __future__ import annotations

from streamapp.models import Alert, alert_id_for
from streamapp.rules.base import State
from streamapp.rules.sliding_count import BUCKET_SECONDS, SlidingCount
from streamapp.rules.sliding_count import new_state as new_velocity_state

__all__ = ["AMOUNT_SPIKE", "CARD_VELOCITY", "new_state", "record_amount", "transactions_within"]

CARD_VELOCITY = SlidingCount(kind="card_velocity", noun="transactions on card")
AMOUNT_SPIKE = "amount_spike"


def new_state() -> State:
    # count and sum of amounts of every transaction kept (the mean a spike is measured against);
    # amounts are at most STREAMAPP_MAX_AMOUNT (<= 1e15), so the sum stays finite for 1e290 of them
    return {**new_velocity_state(), "count": 0, "sum": 0.0, "last": 0.0}


def record_amount(
    state: State, card_id: str, txn_id: str, ts: float, amount: float, factor: float, min_earlier: int
) -> Alert | None:
    """Check ``amount`` against the card's mean of earlier transactions, then add it."""
    count, total = state["count"], state["sum"]
    state["count"], state["sum"] = count + 1, total + amount
    state["last"] = max(state["last"], ts)
    if count < min_earlier:
        return None
    mean = total / count
    if amount <= factor * mean:
        return None
    # earlier amounts may all be 0: any positive amount is then a spike, with no ratio to tell
    ratio = f"{amount / mean:.1f} x its mean" if mean else "above its mean"
    return Alert(
        alert_id=alert_id_for(AMOUNT_SPIKE, card_id, txn_id),
        kind=AMOUNT_SPIKE,
        key=card_id,
        ts=ts,
        window_start=None,
        window_end=None,
        value=amount,
        threshold=factor * mean,
        detail=(
            f"transaction {txn_id} of {amount:.2f} on card {card_id} is {ratio} "
            f"{mean:.2f} over {count} transactions"
        ),
    )


def transactions_within(state: State, since: float) -> int:
    """Transactions in buckets ending after ``since`` (for "transactions_60s")."""
    return int(sum(n for start, n in state["buckets"] if start + BUCKET_SECONDS > since))
