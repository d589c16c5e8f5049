"""route_sensor_readings: validate `sensor-readings` and re-key them by sensor.

Only while a temperature rule runs (``high_temperature`` or ``temperature_anomaly`` in
``STREAMAPP_RULES``): without them the temperature detector gets nothing, and specs of those
names keep `/sensors` and the sinks' sensor windows instead.
"""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.detections.operators import SENSOR_DETECTIONS
from streamapp.models import parse_sensor_reading
from streamapp.pipeline.ingest import Ingest, ingest_for, rekey_by
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import readings_by_sensor_topic, sensor_readings_topic
from streamapp.settings import Settings
from streamapp.types import Rekey

__all__ = ["ingest", "reading_targets", "route_sensor_readings"]


def reading_targets(rules: frozenset[str]) -> Rekey:
    """Where a reading goes for these rules (STREAMAPP_RULES): by sensor if a temperature rule runs."""
    return rekey_by(readings_by_sensor_topic, "sensor_id", not rules.isdisjoint(SENSOR_DETECTIONS))


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `sensor-readings` (streamapp.app.declare_routes)."""
    rekey = reading_targets(settings.hand_written_rules)
    return ingest_for(app, settings, source="sensor-readings", parse=parse_sensor_reading, rekey=rekey)


@app.agent(sensor_readings_topic, name="route-sensor-readings")
async def route_sensor_readings(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_sensor_readings.name)
