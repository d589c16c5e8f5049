"""`streamapp batch`: the Lambda batch layer, the detections recomputed over the archive and reconciled.

pyarrow (the columnar engine) reads the archived source topics, drops what is not a row of the
source, and orders every entity's events by event time; the rules of streamapp.rules are then
applied with :func:`streamapp.rules.base.step`, the same lateness model the agents use, so in-order
events give exactly the stream's answers. The alerts the stream published (the archived
``alerts`` topic) are compared by ``alert_id``: every alert of the stream must come out of the
batch and the reverse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streamapp.archive.store import ArchiveStore, concat_tables
from streamapp.models import (
    Alert,
    InvalidEvent,
    Transaction,
    configure_limits,
    decode_json_object,
    parse_login,
    parse_sensor_reading,
    parse_transaction,
    parse_valid_json,
)
from streamapp.rules import account_takeover, card_fraud, sliding_count, temperature
from streamapp.rules.base import Apply, Judge, State, step
from streamapp.rules.brute_force import BRUTE_FORCE
from streamapp.settings import Settings
from streamapp.types import Envelope

__all__ = ["Reconciliation", "reconcile", "recompute"]

_COLUMNS = ["kafka_partition", "kafka_offset", "kafka_timestamp", "kafka_value"]


@dataclass
class Reconciliation:
    """What the batch found against what the stream published, in [since, until)."""

    since: float
    until: float
    stream: dict[str, dict[str, Any]]
    batch: dict[str, dict[str, Any]]
    events: int = 0
    seconds: float = 0.0
    only_in_stream: list[dict[str, Any]] = field(default_factory=list)
    only_in_batch: list[dict[str, Any]] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.only_in_stream and not self.only_in_batch

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since, "until": self.until, "agrees": self.agrees,
            "source_events": self.events, "seconds": round(self.seconds, 3),
            "stream_alerts": len(self.stream), "batch_alerts": len(self.batch),
            "only_in_stream": self.only_in_stream, "only_in_batch": self.only_in_batch,
        }  # fmt: skip

    def summary(self) -> str:
        kinds = sorted({a["kind"] for a in [*self.stream.values(), *self.batch.values()]})
        lines = [
            f"batch over {self.events:,} archived source events in {self.seconds:.1f} s: "
            f"{len(self.stream)} alerts from the stream, {len(self.batch)} from the batch",
            *(
                f"  {kind:<20} stream {sum(a['kind'] == kind for a in self.stream.values()):>6}"
                f"  batch {sum(a['kind'] == kind for a in self.batch.values()):>6}"
                for kind in kinds
            ),
        ]
        for title, alerts in (
            ("raised by the stream, not by the batch", self.only_in_stream),
            ("found by the batch, not raised by the stream", self.only_in_batch),
        ):
            if alerts:
                lines.append(f"{len(alerts)} {title}:")
                lines.extend(f"  {a['alert_id']} {a['kind']} {a['key']}: {a['detail']}" for a in alerts[:50])
        lines.append("stream and batch agree" if self.agrees else "stream and batch DIFFER")
        return "\n".join(lines)


def _read(store: ArchiveStore, topic: str) -> pa.Table | None:
    objects = store.objects(topic)
    if not objects:
        return None
    table = concat_tables([store.read(obj, _COLUMNS) for obj in objects])
    return table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])


def _events(table: pa.Table | None, topic: str, parse: Callable[[dict[str, Any], float | None], Any],
            max_bytes: int) -> list[Envelope[Any]]:  # fmt: skip
    """Envelopes of the valid events, as the routers forward them."""
    if table is None:
        return []
    ms = pc.cast(table["kafka_timestamp"], pa.int64()).to_pylist()
    out = []
    for part, offset, ts_ms, value in zip(
        table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), ms,
        table["kafka_value"].to_pylist(), strict=True,
    ):  # fmt: skip
        record_ts = ts_ms / 1000.0
        parsed = parse_valid_json(value, record_ts, parse, max_bytes)
        if parsed is None:
            try:
                parsed = parse(decode_json_object(value), record_ts)
            except (InvalidEvent, Exception):  # a dead letter in the stream too
                continue
        out.append(Envelope(topic, part, offset, parsed))
    return out


def _run_rule(
    events: Iterable[Envelope[Any]], entity: Callable[[Any], str | None],
    new_state: Callable[[], State], apply: Apply, judge: Judge | None, grace: float,
) -> list[Alert]:  # fmt: skip
    """Every entity's events in event time order through ``step``, then a final tick."""
    by_key: dict[str, list[Envelope[Any]]] = {}
    for event in events:
        key = entity(event.event)
        if key is not None:
            by_key.setdefault(key, []).append(event)
    alerts: list[Alert] = []
    horizon = float("-inf")  # the whole archive counts: no retention horizon
    for key, key_events in by_key.items():
        key_events.sort(key=lambda ev: (ev.event.ts, ev.partition, ev.offset))
        state = new_state()
        for event in key_events:
            outcome = step(state, key, event, apply, judge, grace, horizon)
            if isinstance(outcome, list):
                alerts.extend(outcome)
        final = step(state, key, None, apply, judge, grace, horizon)
        if isinstance(final, list):
            alerts.extend(final)
    return alerts


def recompute(settings: Settings, store: ArchiveStore) -> tuple[list[Alert], int]:
    """Every alert the enabled rules give over the archived source topics; and the events read."""
    configure_limits(settings)
    limits, grace, inf = settings.thresholds, settings.grace_seconds, float("-inf")
    keep = float(settings.retention_seconds)
    max_bytes = settings.max_record_bytes
    logins = _events(_read(store, "logins"), "logins", parse_login, max_bytes)
    readings = _events(_read(store, "sensor-readings"), "sensor-readings", parse_sensor_reading, max_bytes)
    txns = _events(_read(store, "transactions"), "transactions", parse_transaction, max_bytes)
    rules = settings.rules
    alerts: list[Alert] = []
    if "brute_force" in rules:
        alerts += _run_rule(
            logins, lambda e: None if e.success else e.ip, sliding_count.new_state,
            lambda s, k, e: BRUTE_FORCE.record(s, k, e.ts, limits.brute_force_failures, inf, keep=keep),
            None, grace,
        )  # fmt: skip
    if "account_takeover" in rules:
        alerts += _run_rule(
            logins, lambda e: e.user, account_takeover.new_state,
            lambda s, k, e: account_takeover.record_login(
                s, k, e.ts, e.success, limits.account_takeover_failures, inf
            ),
            None, grace,
        )  # fmt: skip
    if {"card_velocity", "amount_spike"} & rules:

        def apply_txn(state: State, card: str, txn: Transaction) -> tuple[bool, list[Alert]]:
            counted, found = card_fraud.CARD_VELOCITY.record(
                state, card, txn.ts, limits.card_velocity_transactions, inf, keep=keep
            )
            if counted:
                card_fraud.hold_amount(state, txn.txn_id, txn.ts, txn.amount)
            return counted, found

        def judge_txn(state: State, card: str, before: float) -> list[Alert]:
            return card_fraud.judge_amounts(
                state, card, before, limits.amount_spike_factor, limits.amount_spike_min_transactions
            )

        alerts += _run_rule(txns, lambda e: e.card_id, card_fraud.new_state, apply_txn, judge_txn, grace)
    if {"high_temperature", "temperature_anomaly"} & rules:
        thresholds = temperature.TemperatureThresholds(
            high=limits.high_temperature, sigmas=limits.temperature_anomaly_sigmas,
            min_readings=limits.temperature_anomaly_min_readings,
        )  # fmt: skip
        alerts += _run_rule(
            readings, lambda e: e.sensor_id, temperature.new_state,
            lambda s, k, e: temperature.record_reading(s, k, e.ts, e.temperature, thresholds, inf),
            lambda s, k, before: temperature.judge_readings(s, k, before, thresholds, inf),
            grace,
        )  # fmt: skip
    return [a for a in alerts if a.kind in rules], len(logins) + len(readings) + len(txns)


def _when(alert: dict[str, Any]) -> float:
    """The time an alert is about: its window's start, or its event time."""
    start = alert.get("window_start")
    return float(start if start is not None else alert["ts"])


def reconcile(settings: Settings, store: ArchiveStore, since: float, until: float) -> Reconciliation:
    """The batch's alerts against the archived ``alerts`` of the stream, both within [since, until)."""
    started = time.monotonic()
    computed, events = recompute(settings, store)
    batch = {a.alert_id: asdict(a) for a in computed if since <= _when(asdict(a)) < until}
    stream: dict[str, dict[str, Any]] = {}
    archived = _read(store, "alerts")
    for value in [] if archived is None else archived["kafka_value"].to_pylist():
        try:
            alert = orjson.loads(value)
            if since <= _when(alert) < until and alert.get("kind") in settings.rules:
                stream[alert["alert_id"]] = alert  # a re-published alert has the same id
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    result = Reconciliation(since=since, until=until, stream=stream, batch=batch, events=events)
    result.only_in_stream = sorted((a for i, a in stream.items() if i not in batch), key=_when)
    result.only_in_batch = sorted((a for i, a in batch.items() if i not in stream), key=_when)
    result.seconds = time.monotonic() - started
    return result
