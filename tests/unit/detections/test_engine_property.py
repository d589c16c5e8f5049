"""Differential tests: in any arrival order within the grace, the engine alerts as a from-scratch evaluator.

The reference sorts every event by time and, for each event, recomputes its windows, baseline or
sequence from the full list of events before it; it shares no code with the engine but the spec.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamapp.detections.spec import Spec, load_text
from streamapp.detections.testing import run

GRACE = 20
FIELDS = {"ts": "timestamp", "k": "string", "v": "number", "flag": "bool", "tag": "string"}


# -- the reference evaluator ---------------------------------------------------------------------
def _passes(flt: dict[str, Any], event: dict[str, Any]) -> bool:
    op = next(k for k in flt if k != "field")
    arg, value = flt[op], event[flt["field"]]
    return {
        ">": lambda: value > arg, ">=": lambda: value >= arg, "<": lambda: value < arg,
        "<=": lambda: value <= arg, "==": lambda: value == arg, "!=": lambda: value != arg,
        "in": lambda: value in arg, "is": lambda: value is arg,
        "contains": lambda: arg in value, "match": lambda: __import__("re").search(arg, value) is not None,
    }[op]()  # fmt: skip


def _all(filters: list[dict[str, Any]], event: dict[str, Any]) -> bool:
    return all(_passes(f, event) for f in filters)


def _agg(fn: str, values: list[float]) -> float:
    n = len(values)
    if fn == "count":
        return float(n)
    if fn == "distinct_count":
        return float(len(set(values)))
    if n == 0:
        return 0.0
    mean = sum(values) / n
    return {
        "sum": float(sum(values)), "min": float(min(values)), "max": float(max(values)), "mean": mean,
        "stddev": math.sqrt(max(0.0, sum(v * v for v in values) / n - mean * mean)),
    }[fn]  # fmt: skip


def _cmp(op: str, a: float, b: float) -> bool:
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "==": a == b, "!=": a != b}[op]


def reference(data: dict[str, Any], events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(key, ts, value, threshold, window_start, window_end) of every alert, from scratch."""
    kept = [dict(e, ts=float(e["ts"]), v=float(e["v"])) for e in events if _all(data.get("where", []), e)]
    if not kept:
        return []
    final_watermark = max(e["ts"] for e in kept) - GRACE
    cond, window, agg = data["condition"], data.get("window", {}), data.get("aggregate", {})
    throttle = data.get("throttle", 0)
    out = []
    for key in sorted({e["k"] for e in kept}):
        mine = sorted(
            (e for e in kept if e["k"] == key),
            key=lambda e: (e["ts"], orjson.dumps(e, option=orjson.OPT_SORT_KEYS)),
        )
        found: list[tuple[float, float, float, Any, Any]] = []  # candidates in judging order
        alerted: set[Any] = set()
        last_alert: float | None = None

        def emit(
            ts: float, value: float, threshold: float, ws: Any, we: Any, found: list[Any] = found
        ) -> bool:
            nonlocal last_alert
            if throttle and last_alert is not None and ts < last_alert + throttle:
                return False
            last_alert = ts
            found.append((ts, value, threshold, ws, we))
            return True

        if cond["type"] == "absence":
            after = cond["after"]
            gaps = [
                (a["ts"], b["ts"]) for a, b in zip(mine, mine[1:], strict=False) if b["ts"] - a["ts"] > after
            ]
            silences = [a for a, _ in gaps]
            if mine[-1]["ts"] + after < final_watermark:
                silences.append(mine[-1]["ts"])
            for last in silences:
                emit(last + after, after, after, last, last + after)
        for i, e in enumerate(mine):
            ts = e["ts"]
            before = mine[:i]
            upto = mine[: i + 1]
            if cond["type"] == "threshold":
                wtype = window["type"]
                if wtype == "sliding":
                    vals = [x["v"] for x in upto if x["ts"] > ts - window["size"]]
                    value = _agg(agg["fn"], vals)
                    if _cmp(cond["op"], value, cond["value"]):
                        emit(ts, value, cond["value"], ts - window["size"], ts)
                elif wtype == "session":
                    start = mine[0]["ts"]
                    for j in range(1, i + 1):
                        if mine[j]["ts"] - mine[j - 1]["ts"] > window["gap"]:
                            start = mine[j]["ts"]
                    vals = [x["v"] for x in upto if x["ts"] >= start]
                    value = _agg(agg["fn"], vals)
                    if start not in alerted and _cmp(cond["op"], value, cond["value"]):
                        if emit(ts, value, cond["value"], start, ts):
                            alerted.add(start)
                else:
                    size = window["size"]
                    step = window.get("advance", size)
                    starts = sorted(
                        k * step
                        for k in range(int(ts // step) - int(size // step) - 2, int(ts // step) + 1)
                        if k * step <= ts < k * step + size
                    )
                    for start in starts:
                        vals = [x["v"] for x in upto if start <= x["ts"] < start + size]
                        value = _agg(agg["fn"], vals)
                        if start not in alerted and _cmp(cond["op"], value, cond["value"]):
                            if emit(ts, value, cond["value"], start, start + size):
                                alerted.add(start)
            elif cond["type"] in ("zscore", "ratio"):
                xs = [x["v"] for x in before]
                n = len(xs)
                if cond["type"] == "zscore" and n >= cond.get("min_samples", 30):
                    mean = sum(xs) / n
                    std = math.sqrt(max(0.0, sum(x * x for x in xs) / n - mean * mean))
                    if std > 0 and abs(e["v"] - mean) / std > cond["value"]:
                        emit(ts, abs(e["v"] - mean) / std, cond["value"], None, None)
                if cond["type"] == "ratio" and n >= cond.get("min_samples", 5):
                    mean = sum(xs) / n
                    if e["v"] > cond["value"] * mean:
                        emit(ts, e["v"], cond["value"] * mean, None, None)
            elif cond["type"] == "sequence":
                firsts = [
                    x["ts"] for x in before if _all(cond["first"], x) and x["ts"] >= ts - cond["within"]
                ]
                if _all(cond["then"], e) and len(firsts) >= cond["count"]:
                    emit(ts, float(len(firsts)), float(cond["count"]), firsts[0], ts)
        out += [(key, *f) for f in found]
    return sorted(out, key=repr)


# -- random specs and events ---------------------------------------------------------------------
filters = st.one_of(
    st.builds(lambda v: {"field": "v", ">=": v}, st.integers(0, 5)),
    st.builds(lambda v: {"field": "v", "!=": v}, st.integers(0, 9)),
    st.builds(lambda b: {"field": "flag", "is": b}, st.booleans()),
    st.builds(lambda xs: {"field": "tag", "in": xs}, st.lists(st.sampled_from(["x", "y", "z"]), min_size=1)),
    st.builds(lambda p: {"field": "tag", "match": p}, st.sampled_from(["^x", "y|z", "[xz]"])),
)
windows = st.one_of(
    st.builds(lambda s: {"type": "tumbling", "size": s}, st.sampled_from([10, 30, 60])),
    st.builds(
        lambda s, a: {"type": "hopping", "size": s, "advance": a},
        st.sampled_from([30, 60]),
        st.sampled_from([10, 15, 30]),
    ),
    st.builds(lambda s: {"type": "sliding", "size": s}, st.sampled_from([10, 30, 60])),
    st.builds(lambda g: {"type": "session", "gap": g}, st.sampled_from([5, 15, 40])),
)
aggregates = st.builds(
    lambda fn: {"fn": fn, "field": "v"},
    st.sampled_from(["count", "sum", "min", "max", "mean", "stddev", "distinct_count"]),
)
thresholds = st.builds(
    lambda op, v: {"type": "threshold", "op": op, "value": v},
    st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
    st.integers(0, 12),
)
others = st.one_of(
    st.builds(
        lambda z, n: {"type": "zscore", "field": "v", "value": z, "min_samples": n},
        st.sampled_from([0.5, 1, 1.5]),
        st.integers(2, 6),
    ),
    st.builds(
        lambda r, n: {"type": "ratio", "field": "v", "value": r, "min_samples": n},
        st.sampled_from([1, 1.5, 2]),
        st.integers(1, 4),
    ),
    st.builds(
        lambda a, b, n, t: {"type": "sequence", "first": a, "then": b, "count": n, "within": t},
        st.lists(filters, max_size=1),
        st.lists(filters, max_size=1),
        st.integers(1, 3),
        st.sampled_from([10, 30, 90]),
    ),
    st.builds(lambda t: {"type": "absence", "after": t}, st.sampled_from([5, 15, 40])),
)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "prop", "version": 1, "severity": "low", "grace": GRACE,
        "source": {"topic": "t", "fields": FIELDS}, "key": "k",
        "where": draw(st.lists(filters, max_size=1)),
        "throttle": draw(st.sampled_from([0, 0, 20, 45])) or None,
        "alert": {"text": "{key} {value} {threshold} {tag}"},
    }  # fmt: skip
    if data["throttle"] is None:
        del data["throttle"]
    if draw(st.booleans()):
        data.update(window=draw(windows), aggregate=draw(aggregates), condition=draw(thresholds))
    else:
        data["condition"] = draw(others)
    return data


event = st.fixed_dictionaries(
    {
        "ts": st.integers(1000, 1200),
        "k": st.sampled_from(["a", "b", "c"]),
        "v": st.integers(0, 9),
        "flag": st.booleans(),
        "tag": st.sampled_from(["x", "y", "z"]),
    }
)


@st.composite
def arrivals(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events in an arrival order whose disorder stays within the grace.

    Each event arrives at its time plus a random delay of at most the grace: nothing arrives
    after an event more than the grace newer than it.
    """
    events = draw(st.lists(event, max_size=60))
    delays = draw(st.lists(st.integers(0, GRACE), min_size=len(events), max_size=len(events)))
    ties = draw(st.permutations(range(len(events))))
    order = sorted(range(len(events)), key=lambda i: (events[i]["ts"] + delays[i], ties[i]))
    return [events[i] for i in order]


def _engine(spec: Spec, events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    outcome = run(spec, events)
    assert outcome.late == [] and outcome.invalid == []
    return sorted(
        ((a.key, a.ts, a.value, a.threshold, a.window_start, a.window_end) for a in outcome.alerts), key=repr
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=specs(), events=arrivals())
def test_engine_alerts_equal_the_reference_in_any_order_within_the_grace(
    data: dict[str, Any], events: list[dict[str, Any]]
) -> None:
    spec = load_text(orjson.dumps(data), "<random>")
    assert _engine(spec, events) == reference(data, events)


@settings(max_examples=100, deadline=None)
@given(data=specs(), events=arrivals(), seed=st.randoms())
def test_alert_ids_do_not_depend_on_arrival_order(
    data: dict[str, Any], events: list[dict[str, Any]], seed: Any
) -> None:
    spec = load_text(orjson.dumps(data), "<random>")
    in_order = sorted(events, key=lambda e: e["ts"])
    shuffled = list(events)
    seed.shuffle(shuffled)  # any order at all, where the grace is wider than the span
    wide = load_text(orjson.dumps({**data, "grace": 10_000}), "<random>")
    ids = sorted(a.alert_id for a in run(spec, in_order).alerts)
    assert ids == sorted(a.alert_id for a in run(spec, events).alerts)
    assert sorted(a.alert_id for a in run(wide, in_order).alerts) == sorted(
        a.alert_id for a in run(wide, shuffled).alerts
    )
