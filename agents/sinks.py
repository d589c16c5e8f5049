"""sinks: the PostgreSQL and InfluxDB sink services, started with the worker when configured."""

from __future__ import annotations

from streamapp.app import app, settings
from streamapp.runtime.topics import alerts_topic, sensor_windows_topic
from streamapp.sinks import register_sinks
from streamapp.sinks.base import SinkService

__all__ = ["sinks"]


async def _declare_topics() -> None:
    # before a sink's consumer subscribes: a topic it would auto-create gets the broker's
    # partition count instead of STREAMAPP_PARTITIONS
    for topic in (alerts_topic, sensor_windows_topic):
        await topic.maybe_declare()


#: the sink services of this worker (empty without STREAMAPP_POSTGRES_DSN / STREAMAPP_INFLUX_URL)
sinks: list[SinkService] = register_sinks(app, settings, _declare_topics)
