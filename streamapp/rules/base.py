"""What every rule's per-key state shares: replay protection by source position and lateness."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streamapp.models import Alert, alert_id_for
from streamapp.types import Envelope

__all__ = [
    "Apply", "Judge", "Late", "State", "lateness", "rule_alert", "seen_before", "settle_clock", "step",
]  # fmt: skip

State = dict[str, Any]


def seen_before(state: State, source_partition: int, source_offset: int) -> bool:
    """True if this source record was already applied to ``state``; otherwise remember it.

    After a crash, at-least-once delivery hands some records to the rule again. The events of one
    key from one source partition arrive in offset order, so remembering the newest offset per
    source partition makes every update idempotent and counts stay exact.
    """
    positions: dict[str, int] = state.setdefault("src", {})
    part = str(source_partition)
    last = positions.get(part)
    if last is not None and source_offset <= last:
        return True
    positions[part] = source_offset
    return False


def lateness(state: State, ts: float, grace: float, horizon: float) -> tuple[str, float] | None:
    """Why and by how many seconds an event at ``ts`` is too late for ``state`` (None: it counts).

    The key's event clock (``clock``: the newest event time applied to it) minus the grace
    bounds how far back an event may still arrive and count exactly as if it had come in
    order. A key judged up to a point (``settled``: see the held rules) takes nothing before it.
    Events before the retention ``horizon`` are late too: their windows are gone.
    """
    clock = state.get("clock")
    if clock is not None and ts < clock - grace:
        behind = clock - ts
        return f"{behind:.3f} s behind the newest event of its key (grace {grace:g} s)", behind - grace
    settled = state.get("settled")
    if settled is not None and ts <= settled:
        return "not after events of its key that were already judged", settled - ts
    if ts <= horizon:
        return f"older than the retention (its horizon is {horizon:.3f})", horizon - ts
    return None


def settle_clock(state: State, ts: float) -> None:
    """Move the key's event clock to ``ts`` if it is newer."""
    clock = state.get("clock")
    if clock is None or ts > clock:
        state["clock"] = ts


def rule_alert(
    kind: str,
    key: str,
    ts: float,
    window: tuple[float, float] | None,
    value: float,
    threshold: float,
    detail: str,
    *id_parts: object,
) -> Alert:
    """An alert of rule ``kind`` about ``key`` (and the ``window`` it judged, if any).

    Its id names the rule, the key and ``id_parts`` (by default the window's start and end), so
    the same input raises an alert with the same id after a replay or a redelivery.
    """
    start, end = window if window is not None else (None, None)
    return Alert(
        alert_id=alert_id_for(kind, key, *(id_parts or (start, end))),
        kind=kind,
        key=key,
        ts=ts,
        window_start=start,
        window_end=end,
        value=value,
        threshold=threshold,
        detail=detail,
    )


#: (state, key, typed event: streamapp.models.Login, ...) -> (counted, alerts); mutates state
Apply = Callable[[State, str, Any], tuple[bool, Iterable[Alert]]]
#: (state, key, judge held events before this time) -> alerts; mutates state
Judge = Callable[[State, str, float], list[Alert]]


@dataclass(frozen=True)
class Late:
    """An event the lateness model refuses: why, and by how many seconds."""

    reason: str
    seconds: float


def step(
    state: State,
    entity: str,
    envelope: Envelope[Any] | None,
    apply: Apply,
    judge: Judge | None,
    grace: float,
    horizon: float,
) -> Late | list[Alert] | None:
    """One envelope's event (or, for None, a tick) applied to a key's state under the lateness model.

    Returns the alerts it raised, a :class:`Late` for an event that must not count, or None for
    a source record already applied (redelivered) or a tick with nothing held. A tick judges
    every held event: the key was quiet for the grace, and nothing at or before them may count
    afterwards (``settled``). Otherwise the event must pass :func:`lateness`, is applied, moves
    the key's clock, and the held events the clock has passed by the grace are judged.
    """
    if envelope is None:
        pending = state.get("pending")
        if judge is None or not pending:
            return None
        newest = pending[-1][0]
        alerts = judge(state, entity, float("inf"))
        state["settled"] = max(newest, state.get("settled") or newest)
        return alerts
    event = envelope.event
    ts = event.ts
    if seen_before(state, envelope.partition, envelope.offset):
        return None
    late = lateness(state, ts, grace, horizon)
    if late is not None:
        return Late(*late)
    counted, found = apply(state, entity, event)
    if not counted:
        return Late("older than the retention", horizon - ts)
    settle_clock(state, ts)
    alerts = list(found)
    if judge is not None:
        alerts.extend(judge(state, entity, state["clock"] - grace))
    return alerts
