"""route_sensor_readings: validate `sensor-readings` and re-key them by sensor."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import SensorReading, parse_sensor_reading
from streamapp.pipeline.ingest import Ingest, ingest_for
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import readings_by_sensor_topic, sensor_readings_topic
from streamapp.settings import Settings

__all__ = ["ingest", "route_sensor_readings"]


def _targets(reading: SensorReading) -> list[tuple[faust.TopicT, str]]:
    return [(readings_by_sensor_topic, reading.sensor_id)]


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `sensor-readings` (streamapp.app.declare_routes)."""
    return ingest_for(app, settings, source="sensor-readings", parse=parse_sensor_reading, rekey=_targets)


@app.agent(sensor_readings_topic, name="route-sensor-readings")
async def route_sensor_readings(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_sensor_readings.name)
