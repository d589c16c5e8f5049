"""The detection engine: a spec's operators over one key's JSON state, on event time with a grace.

Every condition is judged over the key's events in event-time order (ties broken by the event's
canonical JSON, computed only for a tie and for the id of an alert that names the event), so the
answer does not depend on the arrival order within the grace. To get that for every kind (a late
arrival can change a window's aggregate, a mean, a sequence or a silence), events are held in the
key's state (``pending``) and judged once nothing earlier can still arrive: when the key's own
clock has passed them by the grace, when the detection's watermark (its newest event time, of any
key, minus the grace) has passed them, or after a quiet spell (a flush). An alert therefore comes
up to the grace after the event that completes it.

A source record becomes an event in streamapp.detections.events (typed fields, filters); the
windows and aggregates of a threshold condition are in streamapp.detections.windows.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from streamapp.detections.events import COMPARE, Fields, compile_filters, compile_parsers, parse_event
from streamapp.detections.operators import operator_for, render
from streamapp.detections.spec import Spec
from streamapp.detections.windows import aggregate, window_starts
from streamapp.models import Alert, alert_id_for
from streamapp.rules.base import Late, State, lateness, seen_before, settle_clock
from streamapp.settings import Settings

__all__ = [
    "MAX_HELD",
    "MAX_KEPT",
    "Engine",
    "Fields",
    "Late",
    "aggregate",
    "window_starts",
    "compile_filters",
    "parse_event",
]

#: events held per key at most: a flood within the grace has its oldest judged early
MAX_HELD = 4096
#: events kept per key for a window or a sequence at most (the oldest go first)
MAX_KEPT = 10_000


#: in a candidate's id parts: the canonical JSON of its event's fields (computed if it alerts)
_CANON = object()


def _first(entry: list[Any]) -> Any:
    return entry[0]


def _canonical(fields: Fields) -> str:
    """An event's canonical JSON: what orders events of the same time, and names one in an alert id."""
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()


def _aggregate_all(fn: str, kept: list[list[Any]]) -> float:
    """The aggregate of every kept [ts, value] (a count without building the list of values)."""
    return float(len(kept)) if fn == "count" else aggregate(fn, [v for _, v in kept])


@dataclass(frozen=True)
class _Candidate:
    ts: float
    parts: tuple[Any, ...]
    value: float
    threshold: float
    window_start: float | None
    window_end: float | None
    fields: Fields
    #: the throttle already let it through (and recorded it)
    passed: bool = False


class Engine:
    """A spec's operators. States are plain JSON-able dicts; the engine itself keeps nothing.

    ``retention``: how far behind a key's newest event a shipped rule's state keeps (a worker's
    STREAMAPP_RETENTION_SECONDS; its default offline).
    """

    def __init__(self, spec: Spec, retention: float = Settings.retention_seconds) -> None:
        self.spec = spec
        data = spec.data
        self.name = spec.name
        self.grace = spec.grace
        self.shape = spec.shape
        self.where = compile_filters(data.get("where") or [])
        #: a source record's (event time, fields): parse_event with the spec read once
        #: and the same from the app ingest's event of the record (a spec on an app input topic)
        self.parse, self.parse_ingested = compile_parsers(spec)
        #: the field that names the key (the entity), and the event time's (None: the record's time)
        self.key = spec.key
        self.time_field = spec.time_field
        self.window: dict[str, Any] = data.get("window") or {}
        self.agg: dict[str, Any] = data.get("aggregate") or {}
        self.cond: dict[str, Any] = data["condition"]
        self.kind: str = self.cond["type"]
        self.throttle = float(data.get("throttle", 0.0))
        self.text: str = data["alert"]["text"]
        if self.kind == "sequence":
            self.first = compile_filters(self.cond["first"])
            self.then = compile_filters(self.cond["then"])
        #: a shipped rule's semantics (streamapp.detections.operators) take over offer, tick and state
        self.operator = operator_for(spec, retention)
        #: whether a key's state may need the timer's ticks (held events, a silence to notice)
        self.ticked = self.operator is None or self.operator.holds_events
        #: how long after a key's newest event its state still counts for a later event
        self.reach = self.operator.reach if self.operator is not None else self._reach()

    def _reach(self) -> float:
        window = self.window.get("gap" if self.window.get("type") == "session" else "size", 0.0)
        return max(float(window), float(self.cond.get("within", 0.0)), self.throttle)

    # -- state -------------------------------------------------------------------------------
    def new_state(self) -> State:
        if self.operator is not None:
            return self.operator.new_state()
        return {"shape": self.shape, "clock": None, "pending": []}

    def adopt(self, state: State | None) -> State:
        """The state to go on with: ``state`` if it was built for this spec's shape, else a new one."""
        if state is None or state.get("shape") != self.shape:
            return self.new_state()
        if self.operator is not None:  # a rule's own layout: none of the conversions of held events below
            return state
        pending = state["pending"]
        if pending and len(pending[0]) == 3:  # held as [ts, canonical JSON, fields] before
            state["pending"] = [[held[0], held[2]] for held in pending]
        return state

    def expires_at(self, state: State) -> float | None:
        """The worker horizon at which the key's state may be dropped (agents.expire_windows): its
        newest event plus the spec's :attr:`reach`. None while the state still waits for something:
        held events to judge, or an absence whose alert has not fired (a silent key must stay)."""
        clock = state.get("clock") or 0.0
        if state.get("shape") != self.shape:  # another version's: the next event starts afresh anyway
            return float(clock)
        if state.get("pending"):
            return None
        last = state.get("last")
        if self.kind == "absence" and last is not None and state.get("silent") != last:
            return None
        return float(clock) + self.reach

    # -- events ------------------------------------------------------------------------------
    def offer(
        self,
        state: State,
        entity: str,
        ts: float,
        fields: Fields,
        src: tuple[int, int] | None = None,
        horizon: float = float("-inf"),
    ) -> Late | list[Alert] | None:
        """One event of the key: held, then what the key's clock now lets be judged.

        Returns the alerts, a :class:`Late` for an event that must not count, or None for an event
        the ``where`` filters drop or a source record already applied.
        """
        if not self.where(fields):
            return None
        if self.operator is not None:
            return self.operator.offer(state, entity, ts, fields, src, horizon)
        if src is not None and seen_before(state, *src):
            return None
        late = lateness(state, ts, self.grace, horizon)
        if late is not None:
            return Late(*late)
        self._hold(state["pending"], ts, fields, entity)
        settle_clock(state, ts)
        alerts = self._judge(state, entity, lambda t: t < state["clock"] - self.grace)
        overflow = len(state["pending"]) - MAX_HELD
        if overflow > 0:  # judged early; nothing at or before them may count afterwards
            edge = state["pending"][overflow - 1][0]
            alerts += self._judge(state, entity, lambda t: t <= edge)
            state["settled"] = max(edge, state.get("settled") or edge)
        return alerts

    def tick(self, state: State, entity: str, watermark: float, flush: bool = False) -> list[Alert]:
        """The detection's event time moved to ``watermark`` (its newest event minus the grace).

        Held events before it are judged (with ``flush``: every held event, after a quiet spell),
        and an absence condition alerts for a key silent since before ``watermark - after``.
        Nothing at or before what was judged may count afterwards (``settled``).
        """
        if self.operator is not None:
            return self.operator.tick(state, entity, watermark, flush)
        pending = state["pending"]
        alerts: list[Alert] = []
        if pending and (flush or pending[0][0] < watermark):
            newest = pending[-1][0] if flush else max(p[0] for p in pending if p[0] < watermark)
            alerts = self._judge(state, entity, (lambda t: True) if flush else (lambda t: t < watermark))
            state["settled"] = max(newest, state.get("settled") or newest)
        if self.kind == "absence":
            after = float(self.cond["after"])
            last = state.get("last")
            if last is not None and last + after < watermark and state.get("silent") != last and not pending:
                state["silent"] = last
                state["settled"] = max(last + after, state.get("settled") or last)
                found = _Candidate(
                    last + after, (last,), after, after, last, last + after, state.get("lf") or {}
                )
                alerts += self._emit(state, entity, [found])
        return alerts

    def needs_tick(self, state: State, watermark: float) -> bool:
        """Whether :meth:`tick` at ``watermark`` would do anything for this state."""
        if self.operator is not None:
            return self.operator.needs_tick(state, watermark)
        pending = state.get("pending")
        if pending and pending[0][0] < watermark:
            return True
        if self.kind == "absence":
            last = state.get("last")
            after = float(self.cond["after"])
            return (
                not pending and last is not None and last + after < watermark and state.get("silent") != last
            )
        return False

    # -- judging -----------------------------------------------------------------------------
    def _hold(self, pending: list[list[Any]], ts: float, fields: Fields, entity: str) -> None:
        """Hold [ts, fields as :meth:`_held` keeps them] in ``pending``, in order of (ts, canonical
        JSON of the fields), after its equals.

        The canonical JSON is computed only when other held events have the same time.
        """
        at = bisect_right(pending, ts, key=_first)
        if at and pending[at - 1][0] == ts:
            canon = _canonical(fields)
            at = bisect_left(pending, ts, key=_first)
            while (
                at < len(pending)
                and pending[at][0] == ts
                and _canonical(self._full(pending[at][1], ts, entity)) <= canon
            ):
                at += 1
        pending.insert(at, [ts, self._held(fields, ts, entity)])

    def _held(self, fields: Fields, ts: float, entity: str) -> Fields:
        """An event's fields as held in the state: without its time and key when they are ``ts`` and
        ``entity`` (the state is written with every batch: a third of it, less to encode)."""
        held = dict(fields)
        if self.time_field is not None and held.get(self.time_field) == ts:
            del held[self.time_field]
        if held.get(self.key) == entity:
            del held[self.key]
        return held

    def _full(self, held: Fields, ts: float, entity: str) -> Fields:
        """The fields of a held event (as :meth:`_held` kept them, or whole as held before)."""
        fields = dict(held)
        if self.time_field is not None:
            fields.setdefault(self.time_field, ts)
        fields.setdefault(self.key, entity)
        return fields

    def _judge(self, state: State, entity: str, ready: Callable[[float], bool]) -> list[Alert]:
        pending: list[list[Any]] = state["pending"]
        count = 0
        while count < len(pending) and ready(pending[count][0]):
            count += 1
        alerts: list[Alert] = []
        for ts, held in pending[:count]:
            alerts += self._emit(state, entity, self._one(state, ts, self._full(held, ts, entity)))
        del pending[:count]
        return alerts

    def _one(self, state: State, ts: float, fields: Fields) -> list[_Candidate]:
        kind = self.kind
        if kind == "threshold":
            return self._threshold(state, ts, fields)
        if kind in ("zscore", "ratio"):
            return self._baseline(state, ts, fields)
        if kind == "sequence":
            return self._sequence(state, ts, fields)
        return self._absence(state, ts, fields)

    def _value(self, fields: Fields) -> Any:
        name = self.agg.get("field")
        return fields[name] if name is not None else None

    def _holds(self, value: float) -> bool:
        return bool(COMPARE[self.cond["op"]](value, float(self.cond["value"])))

    def _threshold(self, state: State, ts: float, fields: Fields) -> list[_Candidate]:
        window, fn = self.window, self.agg["fn"]
        kept: list[list[Any]] = state.setdefault("ev", [])
        wtype = window["type"]
        if wtype == "session":
            session = state.get("sess")
            if session is None or ts - session[1] > float(window["gap"]):
                session = state["sess"] = [ts, ts, False]
                kept.clear()
            session[1] = ts
            kept.append([ts, self._value(fields)])
            del kept[: max(0, len(kept) - MAX_KEPT)]
            value = _aggregate_all(fn, kept)
            if session[2] or not self._holds(value):
                return []
            found = _Candidate(ts, (session[0],), value, self.cond["value"], session[0], ts, fields)
            emitted = self._emit_marker(state, found)
            if emitted:
                session[2] = True
            return emitted
        size = float(window["size"])
        kept.append([ts, self._value(fields)])
        cut = bisect_right(kept, ts - size, key=_first)  # in event-time order: those out of the window
        del kept[: max(cut, len(kept) - MAX_KEPT)]
        if wtype == "sliding":
            value = _aggregate_all(fn, kept)
            if not self._holds(value):
                return []
            return [_Candidate(ts, (ts, _CANON), value, self.cond["value"], ts - size, ts, fields)]
        starts = window_starts(wtype, ts, size, float(window.get("advance", size)))
        alerted: list[float] = state.setdefault("alerted", [])
        alerted[:] = [s for s in alerted if s > ts - size]
        out: list[_Candidate] = []
        for start in starts:
            if start in alerted:
                continue
            if fn == "count":  # kept is in event-time order: the events from start on, without a list
                value = float(len(kept) - bisect_left(kept, start, key=_first))
            else:
                value = aggregate(fn, [v for t, v in kept if start <= t])
            if self._holds(value):
                found = _Candidate(ts, (start,), value, self.cond["value"], start, start + size, fields)
                emitted = self._emit_marker(state, found)
                if emitted:
                    alerted.append(start)
                    out += emitted
        return out

    def _baseline(self, state: State, ts: float, fields: Fields) -> list[_Candidate]:
        x = float(fields[self.cond["field"]])
        n, s, q = state.get("n", 0), state.get("s", 0.0), state.get("q", 0.0)
        out: list[_Candidate] = []
        limit = float(self.cond["value"])
        if self.kind == "zscore":
            if n >= self.cond.get("min_samples", 30):
                mean = s / n
                std = math.sqrt(max(0.0, q / n - mean * mean))
                if std > 0 and abs(x - mean) / std > limit:
                    out.append(_Candidate(ts, (ts, _CANON), abs(x - mean) / std, limit, None, None, fields))
        elif n >= self.cond.get("min_samples", 5):
            mean = s / n
            if x > limit * mean:
                out.append(_Candidate(ts, (ts, _CANON), x, limit * mean, None, None, fields))
        state["n"], state["s"], state["q"] = n + 1, s + x, q + x * x
        return out

    def _sequence(self, state: State, ts: float, fields: Fields) -> list[_Candidate]:
        within, need = float(self.cond["within"]), int(self.cond["count"])
        firsts: list[float] = state.setdefault("firsts", [])
        firsts[:] = [t for t in firsts if t >= ts - within][-MAX_KEPT:]
        out: list[_Candidate] = []
        if self.then(fields) and len(firsts) >= need:
            out.append(_Candidate(ts, (ts, _CANON), float(len(firsts)), float(need), firsts[0], ts, fields))
        if self.first(fields):
            firsts.append(ts)
        return out

    def _absence(self, state: State, ts: float, fields: Fields) -> list[_Candidate]:
        after = float(self.cond["after"])
        last = state.get("last")
        out: list[_Candidate] = []
        if last is not None and ts - last > after and state.get("silent") != last:
            out.append(
                _Candidate(last + after, (last,), after, after, last, last + after, state.get("lf") or {})
            )
            state["silent"] = last
        state["last"], state["lf"] = ts, fields
        return out

    # -- alerts ------------------------------------------------------------------------------
    def _emit_marker(self, state: State, found: _Candidate) -> list[_Candidate]:
        """[found] if the throttle lets it through now (then it counts for the throttle at once)."""
        last = state.get("la")
        if self.throttle and last is not None and found.ts < last + self.throttle:
            return []
        state["la"] = found.ts
        return [replace(found, passed=True)]

    def _emit(self, state: State, entity: str, found: list[_Candidate]) -> list[Alert]:
        alerts = []
        for c in found:
            last = state.get("la")
            if not c.passed and self.throttle and last is not None and c.ts < last + self.throttle:
                continue
            state["la"] = c.ts
            parts = (_canonical(c.fields) if part is _CANON else part for part in c.parts)
            alerts.append(
                Alert(
                    alert_id=alert_id_for(self.name, entity, *parts),
                    kind=self.name,
                    key=entity,
                    ts=c.ts,
                    window_start=c.window_start,
                    window_end=c.window_end,
                    value=c.value,
                    threshold=float(c.threshold),
                    detail=self.render(entity, c),
                )
            )
        return alerts

    def render(self, entity: str, c: _Candidate) -> str:
        names = {
            **c.fields,
            "name": self.name,
            "key": entity,
            "value": c.value,
            "threshold": c.threshold,
            "ts": c.ts,
            "window_start": c.window_start,
            "window_end": c.window_end,
            "severity": self.spec.data["severity"],
        }
        return render(self.text, names)
