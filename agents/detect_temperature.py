"""detect_temperature: per-sensor 60-s windows; high_temperature and temperature_anomaly alerts."""

from __future__ import annotations

from typing import Any

import faust
import orjson

from agents.base import HeldKeys, detect, send_ticks
from streamapp.app import app, settings
from streamapp.models import Alert
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
from streamapp.runtime.topics import readings_by_sensor_topic, sensor_windows_topic
from tables.temperature_by_sensor import temperature_by_sensor

__all__ = ["detect_temperature", "held_sensors", "tick_temperature"]

#: sensors holding readings for temperature_anomaly, until a later one or a quiet grace judges them
held_sensors = HeldKeys()

_limits = TemperatureThresholds(
    high=settings.thresholds.high_temperature,
    sigmas=settings.thresholds.temperature_anomaly_sigmas,
    min_readings=settings.thresholds.temperature_anomaly_min_readings,
)


def _apply(state: State, sensor_id: str, reading: dict[str, Any]) -> tuple[bool, list[Alert]]:
    return record_reading(
        state, sensor_id, reading["ts"], reading["temperature"], _limits, worker_clock.horizon
    )


def _judge(state: State, sensor_id: str, before: float) -> list[Alert]:
    return judge_readings(state, sensor_id, before, _limits, worker_clock.horizon)


def _window_updates(sensor_id: str, state: State, readings: list[dict[str, Any]]) -> list[bytes]:
    # every window a batch touched, as it is now (one record per window per batch, not per reading)
    starts = {bucket_start(reading["ts"], WINDOW_SECONDS) for reading in readings}
    return [orjson.dumps(record) for record in window_records(state, sensor_id, starts)]


@app.agent(readings_by_sensor_topic, name="detect-temperature")
async def detect_temperature(stream: faust.StreamT[bytes]) -> None:
    await detect(
        stream, temperature_by_sensor, new_state, _apply, "sensor-readings",
        updates=(sensor_windows_topic, _window_updates), judge=_judge, held=held_sensors,
    )  # fmt: skip


@app.task
async def tick_temperature() -> None:
    await send_ticks(readings_by_sensor_topic, held_sensors)
