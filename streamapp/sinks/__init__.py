"""Sinks: alerts and sensor windows written to PostgreSQL and InfluxDB by services of the worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust

from streamapp.settings import Settings
from streamapp.sinks.base import SinkService

__all__ = ["register_sinks", "sink_services"]


def sink_services(
    settings: Settings, prepare: Callable[[], Awaitable[None]] | None = None
) -> list[SinkService]:
    """One service per configured sink: PostgreSQL when STREAMAPP_POSTGRES_DSN, InfluxDB when
    STREAMAPP_INFLUX_URL is set; none otherwise."""
    alerts = settings.topic("alerts")
    windows = f"{settings.app_id}-sensor-windows"  # streamapp.runtime.topics.sensor_windows_topic
    services: list[SinkService] = []
    if settings.postgres_dsn:
        from streamapp.sinks.postgres import PostgresWriter

        services.append(
            SinkService(
                PostgresWriter(settings.postgres_dsn, alerts, windows), [alerts, windows], settings, prepare
            )
        )
    if settings.influx_url:
        from streamapp.sinks.influx import InfluxWriter

        services.append(SinkService(InfluxWriter(settings.influx_url), [windows], settings, prepare))
    return services


def register_sinks(
    app: faust.App, settings: Settings, prepare: Callable[[], Awaitable[None]] | None = None
) -> list[SinkService]:
    """Start and stop the configured sinks with the app (``app.service``)."""
    services = sink_services(settings, prepare)
    for service in services:
        app.service(service)  # type: ignore[arg-type]  # faust starts instances as well as classes
    return services
