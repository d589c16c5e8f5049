"""Fakes of the pipeline's collaborators (streamapp.types): a record sink, a state store, records."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from agents.base import Detector
from streamapp.models import Alert, Login
from streamapp.rules import sliding_count
from streamapp.rules.base import State
from streamapp.rules.brute_force import BRUTE_FORCE
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.producer import Delivery
from streamapp.settings import Settings

NOW = time.time()


@dataclasses.dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> bytes | None:
        return dict(self.headers).get(name)


class FakeSink:
    """A record sink that keeps what it is given; every delivery is done at once (offset 0 on)."""

    def __init__(
        self, partitions: int = 4, log: list[Sent] | None = None, counts: dict[str, int] | None = None
    ) -> None:
        self.default_partitions = partitions
        #: partition counts of particular topics (others have ``partitions``)
        self.counts = counts or {}
        self.prepared: set[str] = set()
        self.queued: list[Sent] = []
        self.sent: list[Sent] = log if log is not None else []

    async def prepare(self, *topics: str) -> None:
        self.prepared.update(topics)

    def partitions_of(self, topic: str) -> int:
        return self.counts.get(topic, self.default_partitions)

    def add(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.queued.append(Sent(topic, key, value, partition, list(headers or [])))

    async def send(self) -> list[Delivery]:
        deliveries = []
        for sent in self.queued:
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
            deliveries.append(Delivery(TP(sent.topic, sent.partition or 0), 1, future))
        self.sent.extend(self.queued)
        self.queued = []
        return deliveries


class SinkLog:
    """A sink factory (``new_sink``) whose sinks all write to one list."""

    def __init__(self, partitions: int = 4, counts: dict[str, int] | None = None) -> None:
        self.sent: list[Sent] = []
        self.partitions = partitions
        self.counts = counts or {}

    def __call__(self) -> FakeSink:
        return FakeSink(self.partitions, self.sent, self.counts)

    def to(self, topic: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.topic == topic]


class FakeStore:
    """A state store in a dict: (partition, key) -> the state as written (JSON)."""

    name = "t-unit"

    def __init__(self) -> None:
        self.states: dict[tuple[int, bytes], bytes] = {}
        self.clock_writes: list[int] = []

    def load(self, partition: int, key: bytes) -> bytes | None:
        return self.states.get((partition, key))

    def store(self, states: Any, sink: Any) -> None:
        for partition, key, state in states:
            raw = orjson.dumps(state)
            self.states[(partition, key)] = raw
            sink.add(f"{self.name}-changelog", key, raw, partition)

    def store_clock(self, partition: int, sink: Any) -> None:
        self.clock_writes.append(partition)

    def remember(self, deliveries: list[Delivery]) -> None:
        pass

    def state(self, key: bytes, partition: int = 0) -> Any:
        raw = self.states.get((partition, key))
        return None if raw is None else orjson.loads(raw)


class FakeAlerts:
    """An alert publisher (``publish_alert``) that keeps the alerts."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    async def __call__(self, alert: Alert) -> asyncio.Future[Any]:
        self.alerts.append(alert)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def record(
    topic: str,
    value: bytes | None,
    key: bytes | None = None,
    partition: int = 0,
    offset: int = 0,
    timestamp: float = NOW,
) -> ConsumerRecord:
    return ConsumerRecord(
        topic=topic, partition=partition, offset=offset, timestamp=int(timestamp * 1000), timestamp_type=0,
        key=key, value=value, checksum=None, serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""), headers=(),
    )  # fmt: skip


def records(topic: str, values: Sequence[bytes | None], partition: int = 0) -> list[ConsumerRecord]:
    return [record(topic, value, partition=partition, offset=n) for n, value in enumerate(values)]


@dataclasses.dataclass
class Faked:
    """A detector with fakes for its state, its output and its alerts."""

    detector: Detector
    store: FakeStore
    out: SinkLog
    alerts: FakeAlerts


def faked(detector: Detector, partitions: int = 4) -> Faked:
    """``detector`` (as an agent module builds it) on a dict, a list of records and a list of alerts."""
    store, out, alerts = FakeStore(), SinkLog(partitions), FakeAlerts()
    fake = dataclasses.replace(detector, store=store, new_sink=out, publish_alert=alerts)
    return Faked(fake, store, out, alerts)


def failed_logins_detector(settings: Settings) -> Detector:
    """A detector of failed logins per IP on the detector loop (agents.base) that the stock prices
    run on: a rule that alerts (streamapp.rules.brute_force), to check what the loop does with
    alerts; its state, output and alerts are fakes (see :func:`faked`)."""
    failures, keep = settings.thresholds.brute_force_failures, settings.retention_seconds

    def apply(state: State, ip: str, login: Login) -> tuple[bool, list[Alert]]:
        return BRUTE_FORCE.record(state, ip, login.ts, failures, worker_clock.horizon, keep=keep)

    return Detector(
        source="logins", store=FakeStore(), new_state=sliding_count.new_state, apply=apply, settings=settings,
        new_sink=SinkLog(), publish_alert=FakeAlerts(), clock=worker_clock,
        late_events_topic=settings.topic("late-events"), dead_letters_topic=settings.topic("dead-letters"),
    )  # fmt: skip
