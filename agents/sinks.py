"""sinks: the PostgreSQL and InfluxDB sink services, started with the worker when configured."""

from __future__ import annotations

from streamapp.app import app, settings
from streamapp.sinks import register_sinks
from streamapp.sinks.base import SinkService

__all__ = ["sinks"]

#: the sink services of this worker (empty without STREAMAPP_POSTGRES_DSN / STREAMAPP_INFLUX_URL)
sinks: list[SinkService] = register_sinks(app, settings)
