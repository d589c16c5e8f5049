"""detect_temperature: per-sensor 60-s windows; high_temperature and temperature_anomaly alerts."""

from __future__ import annotations

from functools import partial

import faust
import orjson

from agents.base import Detector, detect
from agents.held_keys import HeldKeys, send_ticks
from agents.worker_detector import detector_for
from streamapp.app import app, settings
from streamapp.models import Alert, SensorReading
from streamapp.rules.base import State
from streamapp.rules.temperature import (
    WINDOW_SECONDS,
    TemperatureThresholds,
    judge_readings,
    new_state,
    record_reading,
    window_records,
)
from streamapp.rules.windows import bucket_start
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.producer import RecordBatches
from streamapp.runtime.topics import readings_by_sensor_topic, sensor_windows_topic
from streamapp.settings import Settings
from tables.temperature_by_sensor import temperature_by_sensor

__all__ = ["detect_temperature", "detector", "held_sensors", "tick_temperature", "window_updates"]

#: sensors holding readings for temperature_anomaly, until a later one or a quiet grace judges them
held_sensors = HeldKeys()


def window_updates(sensor_id: str, state: State, readings: list[SensorReading]) -> list[bytes]:
    """Every window a batch touched, as it is now (one record per window per batch, not per reading)."""
    starts = {bucket_start(reading.ts, WINDOW_SECONDS) for reading in readings}
    return [orjson.dumps(record) for record in window_records(state, sensor_id, starts)]


def detector(app: faust.App, settings: Settings) -> Detector:
    """The batch handler of readings-by-sensor (streamapp.app.declare_routes)."""
    limits = TemperatureThresholds(
        high=settings.thresholds.high_temperature,
        sigmas=settings.thresholds.temperature_anomaly_sigmas,
        min_readings=settings.thresholds.temperature_anomaly_min_readings,
    )

    def apply(state: State, sensor_id: str, reading: SensorReading) -> tuple[bool, list[Alert]]:
        return record_reading(state, sensor_id, reading.ts, reading.temperature, limits, worker_clock.horizon)

    def judge(state: State, sensor_id: str, before: float) -> list[Alert]:
        return judge_readings(state, sensor_id, before, limits, worker_clock.horizon)

    return detector_for(
        app, settings, source="sensor-readings", table=temperature_by_sensor, new_state=new_state,
        apply=apply, updates=(sensor_windows_topic.get_topic_name(), window_updates), judge=judge,
        held=held_sensors,
    )  # fmt: skip


@app.agent(readings_by_sensor_topic, name="detect-temperature")
async def detect_temperature(stream: faust.StreamT[bytes]) -> None:
    await detect(stream, detect_temperature.name)


@app.task
async def tick_temperature() -> None:
    await send_ticks(
        readings_by_sensor_topic.get_topic_name(),
        held_sensors,
        settings.grace_seconds,
        partial(RecordBatches, app),
    )
