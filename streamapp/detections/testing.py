"""Run a spec over a list of events offline: the alerts it would raise, the late and invalid events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streamapp.detections.engine import Engine, Late
from streamapp.detections.spec import Spec
from streamapp.models import Alert, InvalidEvent
from streamapp.rules.base import State

__all__ = ["Outcome", "run"]


@dataclass
class Outcome:
    """What a run gives: alerts in the order raised; late and invalid events with their reasons."""

    alerts: list[Alert] = field(default_factory=list)
    late: list[tuple[int, str]] = field(default_factory=list)  # (event index, reason)
    invalid: list[tuple[int, str]] = field(default_factory=list)


def run(spec: Spec, events: Iterable[Any], flush: bool = True) -> Outcome:
    """Feed ``events`` (in the order given, as arrival order) through the engine, as a worker would.

    The detection's watermark (newest event time minus the grace) moves as events arrive and
    judges held events of every key; at the end (``flush``) every held event is judged, as after
    a quiet spell. Events need their timestamp field: there is no record timestamp offline.
    """
    engine = Engine(spec)
    states: dict[str, State] = {}
    outcome = Outcome()
    newest: float | None = None
    for index, obj in enumerate(events):
        try:
            ts, fields = engine.parse(obj, None)
        except InvalidEvent as exc:
            outcome.invalid.append((index, str(exc)))
            continue
        entity = fields[spec.key]
        state = states.setdefault(entity, engine.new_state())
        result = engine.offer(state, entity, ts, fields)
        if isinstance(result, Late):
            outcome.late.append((index, result.reason))
            continue
        if result is None:
            continue
        outcome.alerts.extend(result)
        if newest is None or ts > newest:
            newest = ts
            watermark = newest - engine.grace
            for key, other in states.items():
                if engine.needs_tick(other, watermark):
                    outcome.alerts.extend(engine.tick(other, key, watermark))
    if flush and newest is not None:
        watermark = newest - engine.grace
        for key, state in states.items():
            outcome.alerts.extend(engine.tick(state, key, watermark))
            outcome.alerts.extend(engine.tick(state, key, watermark, flush=True))
    return outcome
