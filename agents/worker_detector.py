"""A detector on a worker: the Detector loop (agents.base) with the app's table, producer, topics and clock.

Apart from agents.base because importing these collaborators builds the app, which a Detector
with fakes does not need (tests/unit/agents).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import faust

from agents.base import Apply, Detector
from streamapp.pipeline.alerting import Alerting
from streamapp.rules.base import State
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.producer import RecordBatches
from streamapp.runtime.topics import alerts_topic, dead_letters_topic, late_events_topic
from streamapp.settings import Settings
from tables.base import TableStore

__all__ = ["detector_for"]


def detector_for(
    app: faust.App,
    settings: Settings,
    *,
    source: str,
    table: faust.types.TableT,
    new_state: Callable[[], State],
    apply: Apply,
) -> Detector:
    """A detector on a worker: ``table``'s RocksDB, the app's producer, its alerts topic and clock."""
    alerting = Alerting(settings.publish_alerts, alerts_topic.send)
    return Detector(
        source=source, store=TableStore(table), new_state=new_state, apply=apply, settings=settings,
        new_sink=partial(RecordBatches, app), publish_alert=alerting.publish, clock=worker_clock,
        late_events_topic=late_events_topic.get_topic_name(),
        dead_letters_topic=dead_letters_topic.get_topic_name(),
    )  # fmt: skip
