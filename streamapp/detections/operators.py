"""The shipped rules as engine operators: a spec that asks for a rule's semantics is evaluated by its module.

A spec reads as a detection; :func:`streamapp.detections.spec.operator_of` says which rule module
implements what it asks for (docs/detections.md, "Shipped detections and operators"):

- ``stepped_count``: a count above a value over a ``sliding`` window with a ``step``, eager:
  streamapp.rules.sliding_count (brute_force, card_velocity);
- ``eager_sequence``: a ``sequence`` with ``evaluate: eager``: streamapp.rules.account_takeover;
- ``eager_max``: the max of a 60-s ``tumbling`` window above a value, ``evaluate: eager``:
  streamapp.rules.temperature (high_temperature);
- ``windowed_zscore``: a ``zscore`` with a 60-s tumbling window: streamapp.rules.temperature
  (temperature_anomaly);
- ``keyed_ratio``: a ``ratio`` with an ``alert.id``: streamapp.rules.card_fraud (amount_spike).

An operator's state is the rule's own (with the engine's shape, clock, settled mark and source
positions), under the rules' lateness model (streamapp.rules.base.lateness): eager operators alert
at the event, as the rules do; held ones judge what the key's clock has passed by the grace, and
what the detection's watermark or a quiet spell lets be judged (engine ticks). Alerts are the
rule's, with the spec's name as their kind (and in their id) and the spec's text as their detail.
"""

from __future__ import annotations

import math
import string
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any

from streamapp.detections.events import Fields, compile_filters
from streamapp.detections.spec import Spec
from streamapp.models import Alert
from streamapp.rules import account_takeover, card_fraud, sliding_count, temperature
from streamapp.rules.base import Late, State, lateness, rule_alert, seen_before, settle_clock

__all__ = [
    "IP_DETECTIONS",
    "SENSOR_DETECTIONS",
    "Operator",
    "operator_for",
    "render",
    "retention_horizon",
    "running_spec",
]

#: the shipped detections behind the `/ips` and `/sensors` views (and the sinks' sensor windows):
#: the states of the first running spec of those names keep it (:func:`running_spec`; `/cards`
#: reads both card specs, streamapp.web.views)
IP_DETECTIONS = ("brute_force",)
SENSOR_DETECTIONS = ("high_temperature", "temperature_anomaly")


def running_spec(detections: tuple[str, ...], running: Collection[str]) -> str | None:
    """The running spec whose states keep the view of ``detections``: the first of them that runs
    (in ``running``); None when none does."""
    return next((name for name in detections if name in running), None)


def retention_horizon(state: State, horizon: float, retention: float) -> float:
    """How far back a rule's state under the engine keeps: the given horizon (a worker's), at
    least the key's own clock minus the ``retention`` (STREAMAPP_RETENTION_SECONDS)."""
    clock = state.get("clock")
    return horizon if clock is None else max(horizon, clock - retention)


def operator_for(spec: Spec, retention: float) -> Operator | None:
    """The operator that evaluates ``spec`` keeping ``retention`` seconds behind each key's newest
    event (a worker's STREAMAPP_RETENTION_SECONDS), or None for the generic engine."""
    kind = spec.operator
    return None if kind is None else _OPERATORS[kind](spec, retention)


def render(text: str, names: dict[str, Any]) -> str:
    """An alert text with its names filled in (a number format on a text value: the plain text)."""
    out = []
    for literal, name, spec_, _ in string.Formatter().parse(text):
        out.append(literal)
        if name is None:
            continue
        value = names.get(name, "")
        try:
            out.append(format(value, spec_ or ""))
        except (ValueError, TypeError):
            out.append(str(value))
    return "".join(out)[:2000]


class Operator(ABC):
    """A rule module behind a spec: the engine's offer, tick and needs_tick over the rule's state."""

    #: whether its states can hold events to judge later (eager operators judge at the event: the
    #: engine's timer has nothing to tick for them)
    holds_events = True
    #: how long after a key's newest event its state still counts for a later event or shows in a
    #: view (the rule's window): the expiry sweep keeps the key that long past the worker's horizon
    reach = 0.0

    def __init__(self, spec: Spec, retention: float) -> None:
        self.spec, self.name, self.grace, self.shape = spec, spec.name, spec.grace, spec.shape
        self.retention = retention
        self.cond: dict[str, Any] = spec.data["condition"]
        self.text: str = spec.data["alert"]["text"]

    @abstractmethod
    def rule_state(self) -> State:
        """A new state of the rule."""

    @abstractmethod
    def apply(
        self, state: State, entity: str, ts: float, fields: Fields, horizon: float
    ) -> tuple[bool, list[Alert]]:
        """One event into the rule's state: (counted, alerts), as streamapp.rules.base.Apply."""

    def judge(self, state: State, entity: str, before: float, horizon: float) -> list[Alert]:
        """The held events before ``before`` judged (held rules)."""
        return []

    def new_state(self) -> State:
        return {**self.rule_state(), "shape": self.shape, "clock": None}

    def offer(
        self,
        state: State,
        entity: str,
        ts: float,
        fields: Fields,
        src: tuple[int, int] | None,
        horizon: float,
    ) -> Late | list[Alert] | None:
        """One event of the key (past the spec's ``where``), as streamapp.rules.base.step applies it."""
        if src is not None and seen_before(state, *src):
            return None
        late = lateness(state, ts, self.grace, horizon)
        if late is not None:
            return Late(*late)
        horizon = retention_horizon(state, horizon, self.retention)
        counted, alerts = self.apply(state, entity, ts, fields, horizon)
        if not counted:
            return Late(f"older than the retention (its horizon is {horizon:.3f})", horizon - ts)
        settle_clock(state, ts)
        return alerts + self.judge(state, entity, state["clock"] - self.grace, horizon)

    def tick(self, state: State, entity: str, watermark: float, flush: bool = False) -> list[Alert]:
        """Judge held events before ``watermark`` (``flush``: all); nothing at or before them counts later."""
        pending = state.get("pending")
        if not pending or not (flush or pending[0][0] < watermark):
            return []
        newest = pending[-1][0] if flush else max(p[0] for p in pending if p[0] < watermark)
        before = math.inf if flush else watermark
        alerts = self.judge(state, entity, before, retention_horizon(state, float("-inf"), self.retention))
        state["settled"] = max(newest, state.get("settled") or newest)
        return alerts

    def needs_tick(self, state: State, watermark: float) -> bool:
        pending = state.get("pending")
        return bool(pending and pending[0][0] < watermark)

    def _alert(
        self,
        entity: str,
        ts: float,
        window: tuple[float, float] | None,
        value: float,
        threshold: float,
        fields: Fields,
        id_parts: tuple[Any, ...],
        extra: dict[str, Any] | None = None,
    ) -> Alert:
        """The alert of this spec: the rule's numbers, the spec's name (kind and id) and text."""
        start, end = window if window is not None else (None, None)
        names = {
            **fields, **(extra or {}), "name": self.name, "key": entity, "value": value,
            "threshold": threshold, "ts": ts, "window_start": start, "window_end": end,
            "severity": self.spec.data["severity"],
        }  # fmt: skip
        detail = render(self.text, names)
        return rule_alert(self.name, entity, ts, window, value, threshold, detail, *id_parts)

    def _restyle(self, alert: Alert, fields: Fields, id_parts: tuple[Any, ...] | None = None) -> Alert:
        """A rule's alert as this spec's (its window names it unless ``id_parts`` are given)."""
        window = None if alert.window_start is None else (alert.window_start, alert.window_end or 0.0)
        parts = id_parts if id_parts is not None else (alert.window_start, alert.window_end)
        return self._alert(alert.key, alert.ts, window, alert.value, alert.threshold, fields, parts)


class SteppedCount(Operator):
    """More than ``value`` events in 60-s windows ending at 10-s steps: streamapp.rules.sliding_count."""

    holds_events = False
    # the 60-s windows ending at a later event's bucket count the buckets before it
    reach = sliding_count.BUCKET_SECONDS + sliding_count.WINDOW_SECONDS

    def __init__(self, spec: Spec, retention: float) -> None:
        super().__init__(spec, retention)
        self.rule = sliding_count.SlidingCount(kind=spec.name, noun="")
        self.threshold = self.cond["value"]

    def rule_state(self) -> State:
        return sliding_count.new_state()

    def apply(
        self, state: State, entity: str, ts: float, fields: Fields, horizon: float
    ) -> tuple[bool, list[Alert]]:
        # keep: the buckets of the retention, for the views
        counted, alerts = self.rule.record(state, entity, ts, self.threshold, horizon, keep=self.retention)
        return counted, [self._restyle(alert, fields) for alert in alerts]


class EagerSequence(Operator):
    """A ``then`` event after ``count`` ``first`` events within 300 s: streamapp.rules.account_takeover.

    An event matching ``then`` is a then-event; otherwise one matching ``first`` is a first-event;
    any other only moves the key's clock.
    """

    holds_events = False

    def __init__(self, spec: Spec, retention: float) -> None:
        super().__init__(spec, retention)
        self.first, self.then = compile_filters(self.cond["first"]), compile_filters(self.cond["then"])
        self.count = int(self.cond["count"])
        self.key, self.time = spec.key, spec.time_field

    def rule_state(self) -> State:
        return account_takeover.new_state()

    def apply(
        self, state: State, entity: str, ts: float, fields: Fields, horizon: float
    ) -> tuple[bool, list[Alert]]:
        then = self.then(fields)
        if not then and not self.first(fields):
            return True, []
        counted, alerts = account_takeover.record_login(state, entity, ts, then, self.count, horizon)
        # an alert may be of an earlier then-event (a late first-event completed it): its key and time
        return counted, [self._restyle(a, self._fields(entity, a.ts), (a.ts,)) for a in alerts]

    def _fields(self, entity: str, ts: float) -> Fields:
        return {self.key: entity, **({self.time: ts} if self.time else {})}


class EagerMax(Operator):
    """A 60-s tumbling window's max above ``value``, once per window: streamapp.rules.temperature."""

    holds_events = False
    reach = temperature.WINDOW_SECONDS  # its windows show in the sensor views until they end

    def __init__(self, spec: Spec, retention: float) -> None:
        super().__init__(spec, retention)
        self.limits = temperature.TemperatureThresholds(high=float(self.cond["value"]))
        self.field: str = spec.data["aggregate"]["field"]

    def rule_state(self) -> State:
        return temperature.new_state()

    def apply(
        self, state: State, entity: str, ts: float, fields: Fields, horizon: float
    ) -> tuple[bool, list[Alert]]:
        counted, alerts = temperature.record_reading(
            state, entity, ts, fields[self.field], self.limits, horizon
        )
        state.pop("pending", None)  # held for the anomaly check only, which this spec does not make
        return counted, [self._restyle(alert, fields) for alert in alerts]


class WindowedZscore(Operator):
    """A value ``value`` deviations from the key's mean before it, once per 60-s window: rules.temperature."""

    reach = temperature.WINDOW_SECONDS  # as EagerMax: the same windows

    def __init__(self, spec: Spec, retention: float) -> None:
        super().__init__(spec, retention)
        self.field: str = self.cond["field"]
        self.limits = temperature.TemperatureThresholds(
            high=math.inf,
            sigmas=float(self.cond["value"]),
            min_readings=int(self.cond.get("min_samples", 30)),
        )
        self.key, self.time = spec.key, spec.time_field

    def rule_state(self) -> State:
        return temperature.new_state()

    def apply(
        self, state: State, entity: str, ts: float, fields: Fields, horizon: float
    ) -> tuple[bool, list[Alert]]:
        return temperature.record_reading(state, entity, ts, fields[self.field], self.limits, horizon)

    def judge(self, state: State, entity: str, before: float, horizon: float) -> list[Alert]:
        return temperature.judge_readings(state, entity, before, self.limits, horizon, alert=self._anomaly)

    def _anomaly(
        self,
        sensor: str,
        ts: float,
        value: float,
        window: tuple[float, float],
        n: int,
        mean: float,
        sigmas: float,
        limits: temperature.TemperatureThresholds,
    ) -> Alert:
        fields = {self.key: sensor, self.field: value, **({self.time: ts} if self.time else {})}
        extra = {"mean": mean, "count": n, "sigmas": sigmas}
        return self._alert(sensor, ts, window, value, limits.sigmas, fields, window, extra)


class KeyedRatio(Operator):
    """A value above ``value`` x the key's mean of earlier events, one alert per id: rules.card_fraud."""

    def __init__(self, spec: Spec, retention: float) -> None:
        super().__init__(spec, retention)
        self.field: str = self.cond["field"]
        self.id: str = spec.data["alert"]["id"]
        self.factor, self.min_earlier = float(self.cond["value"]), int(self.cond.get("min_samples", 5))
        self.key, self.time = spec.key, spec.time_field

    def rule_state(self) -> State:
        return card_fraud.new_state()

    def apply(
        self, state: State, entity: str, ts: float, fields: Fields, horizon: float
    ) -> tuple[bool, list[Alert]]:
        card_fraud.hold_amount(state, fields[self.id], ts, fields[self.field])
        return True, []

    def judge(self, state: State, entity: str, before: float, horizon: float) -> list[Alert]:
        return card_fraud.judge_amounts(
            state, entity, before, self.factor, self.min_earlier, alert=self._spike
        )

    def _spike(
        self, key: str, ident: str, ts: float, value: float, count: int, mean: float, factor: float
    ) -> Alert:
        fields = {self.key: key, self.id: ident, self.field: value, **({self.time: ts} if self.time else {})}
        extra = {"mean": mean, "count": count, "ratio": card_fraud.ratio_text(value, mean)}
        return self._alert(key, ts, None, value, factor * mean, fields, (ident,), extra)


_OPERATORS: dict[str, type[Operator]] = {
    "stepped_count": SteppedCount,
    "eager_sequence": EagerSequence,
    "eager_max": EagerMax,
    "windowed_zscore": WindowedZscore,
    "keyed_ratio": KeyedRatio,
}
