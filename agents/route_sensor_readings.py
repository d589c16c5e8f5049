"""route_sensor_readings: validate `sensor-readings` and re-key them by sensor."""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import SensorReading, parse_sensor_reading
from streamapp.pipeline.ingest import route
from streamapp.runtime.topics import readings_by_sensor_topic, sensor_readings_topic

__all__ = ["route_sensor_readings"]


def _targets(reading: SensorReading) -> list[tuple[faust.TopicT, str]]:
    return [(readings_by_sensor_topic, reading.sensor_id)]


@app.agent(sensor_readings_topic, name="route-sensor-readings")
async def route_sensor_readings(stream: faust.StreamT[bytes]) -> None:
    await route(stream, parse_sensor_reading, "sensor-readings", _targets)
