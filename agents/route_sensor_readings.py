"""route_sensor_readings: validate `sensor-readings`; the valid readings go to its detections.

The temperature specs' states keep `/sensors` and the sinks' sensor windows.
"""

from __future__ import annotations

import faust

from streamapp.app import app
from streamapp.models import parse_sensor_reading
from streamapp.pipeline.ingest import Ingest, ingest_for, to_specs_only
from streamapp.runtime.consumer import drain_to_router
from streamapp.runtime.topics import sensor_readings_topic
from streamapp.settings import Settings

__all__ = ["ingest", "route_sensor_readings"]


def ingest(app: faust.App, settings: Settings) -> Ingest:
    """The batch handler of `sensor-readings` (streamapp.app.declare_routes)."""
    parse = parse_sensor_reading
    return ingest_for(app, settings, source="sensor-readings", parse=parse, rekey=to_specs_only)


@app.agent(sensor_readings_topic, name="route-sensor-readings")
async def route_sensor_readings(stream: faust.StreamT[bytes]) -> None:
    await drain_to_router(stream, route_sensor_readings.name)
