"""Consumer lag per partition from the consumer's fetch state, and faust's sensors on our registry."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from streamapp.observability.liveness import PartitionProgress
from streamapp.observability.monitoring import (
    consumed_topics,
    install_faust_sensors,
    measure_consumer_lag,
    measure_progress,
)


class _Consumer:
    def __init__(self, highwaters: dict[TP, int | None], positions: dict[TP, int | None]) -> None:
        self.highwaters = highwaters
        self.positions = positions
        self.position_calls: list[TP] = []

    def assignment(self) -> set[TP]:
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: TP) -> int:
        self.position_calls.append(tp)
        position = self.positions[tp]
        if position is None:  # no valid position yet: aiokafka waits for the fetcher
            await asyncio.sleep(3600)
        elif position < 0:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return position


def _app(consumer: _Consumer, committed: dict[TP, int], read: dict[TP, int]) -> Any:
    agent = SimpleNamespace(get_topic_names=lambda: ["logins", "app-detection-events"])
    monitor = SimpleNamespace(tp_committed_offsets=committed, tp_read_offsets=read)
    return SimpleNamespace(consumer=consumer, monitor=monitor, agents={"route-logins": agent})


async def test_lag_is_highwater_minus_committed_for_consumed_topics_only() -> None:
    committed_tp, read_tp, fresh_tp, unfetched_tp, resetting_tp, revoked_tp = (
        TP("logins", p) for p in range(6)
    )
    changelog_tp = TP("app-detection-state-changelog", 0)
    internal_tp = TP("app-detection-events", 1)
    consumer = _Consumer(
        {
            committed_tp: 100,
            read_tp: 50,
            fresh_tp: 7,
            unfetched_tp: None,
            resetting_tp: 9,
            revoked_tp: 9,
            changelog_tp: 1000,
            internal_tp: 20,
        },
        positions={fresh_tp: 0, resetting_tp: None, revoked_tp: -1, committed_tp: 100, read_tp: 50},
    )
    app = _app(consumer, committed={committed_tp: 60, internal_tp: 20}, read={read_tp: 44})
    assert consumed_topics(app) == {"logins", "app-detection-events"}
    lags = await measure_consumer_lag(app)
    assert lags == {committed_tp: 40, read_tp: 5, fresh_tp: 7, internal_tp: 0}
    # the position is asked only before the first read and of lagging partitions (the watchdog
    # tells records from transaction markers by it), and never waited for long
    assert sorted(consumer.position_calls) == [committed_tp, read_tp, fresh_tp, resetting_tp, revoked_tp]
    progress = await measure_progress(app)
    assert progress[committed_tp] == PartitionProgress(done=60, highwater=100, read=None, position=100)
    assert progress[read_tp] == PartitionProgress(done=45, highwater=50, read=44, position=50)


def test_faust_sensors_on_our_registry_pass_promtool_names() -> None:
    registry = CollectorRegistry()
    app = SimpleNamespace(monitor=None)
    metrics = install_faust_sensors(app, registry=registry, prefix="faust")  # type: ignore[arg-type]
    assert app.monitor is not None and app.monitor._metrics is metrics
    metrics.events_runtime_latency.observe(12.0)
    text = generate_latest(registry).decode()
    assert "faust_events_runtime_latency_bucket" in text
    assert "_ms" not in text  # promtool: "metric names should not contain abbreviated units"
    assert "faust_messages_received_total" in text
