"""high_temperature and temperature_anomaly over 60-s tumbling windows of one sensor's readings."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

from streamapp.models import Alert, alert_id_for
from streamapp.rules.base import State
from streamapp.windows import bucket_start

__all__ = [
    "ANOMALY",
    "HIGH",
    "WINDOW_SECONDS",
    "TemperatureThresholds",
    "new_state",
    "record_reading",
    "window_records",
    "window_view",
]

HIGH = "high_temperature"
ANOMALY = "temperature_anomaly"
WINDOW_SECONDS = 60.0

# a window is [start, count, min, max, sum, sum of squares, alerted kinds bitmask]
_START, _COUNT, _MIN, _MAX, _SUM, _SUMSQ, _ALERTED = range(7)
_HIGH_BIT, _ANOMALY_BIT = 1, 2


@dataclass(frozen=True)
class TemperatureThresholds:
    high: float = 100.0
    sigmas: float = 4.0
    min_readings: int = 30


def new_state() -> State:
    return {"windows": [], "last": None}


def _history(windows: list[list[float]]) -> tuple[float, float, float]:
    """Count, mean and standard deviation of every reading in the retained windows."""
    n = sum(w[_COUNT] for w in windows)
    if not n:
        return 0, 0.0, 0.0
    total = sum(w[_SUM] for w in windows)
    mean = total / n
    variance = max(0.0, sum(w[_SUMSQ] for w in windows) / n - mean * mean)
    return n, mean, math.sqrt(variance)


def record_reading(
    state: State, sensor_id: str, ts: float, temperature: float, limits: TemperatureThresholds, horizon: float
) -> tuple[bool, list[Alert]]:
    """Add one reading to its 60-s tumbling window; return (counted, alerts)."""
    start = bucket_start(ts, WINDOW_SECONDS)
    if start + WINDOW_SECONDS <= horizon:
        return False, []
    windows: list[list[float]] = state["windows"]
    # expired windows leave state before they could count as history
    while windows and windows[0][_START] + WINDOW_SECONDS <= horizon:
        del windows[0]
    # the sensor's rolling mean and deviation: all retained readings before this one
    n, mean, std = _history(windows)
    i = bisect_left(windows, start, key=lambda w: w[_START])
    if i == len(windows) or windows[i][_START] != start:
        windows.insert(i, [start, 0, temperature, temperature, 0.0, 0.0, 0])
    window = windows[i]
    window[_COUNT] += 1
    window[_MIN] = min(window[_MIN], temperature)
    window[_MAX] = max(window[_MAX], temperature)
    window[_SUM] += temperature
    window[_SUMSQ] += temperature * temperature
    last = state["last"]
    if last is None or ts >= last[0]:
        state["last"] = [ts, temperature]

    alerts: list[Alert] = []
    end = start + WINDOW_SECONDS
    flags = int(window[_ALERTED])
    if temperature > limits.high and not flags & _HIGH_BIT:
        flags |= _HIGH_BIT
        alerts.append(
            Alert(
                alert_id=alert_id_for(HIGH, sensor_id, start, end),
                kind=HIGH,
                key=sensor_id,
                ts=ts,
                window_start=start,
                window_end=end,
                value=temperature,
                threshold=limits.high,
                detail=f"sensor {sensor_id} read {temperature:g} (above {limits.high:g})",
            )
        )
    deviation = abs(temperature - mean)
    if (
        n >= limits.min_readings
        and deviation > limits.sigmas * std
        and deviation > 1e-9  # a flat history has std 0: only a real change counts
        and not flags & _ANOMALY_BIT
    ):
        flags |= _ANOMALY_BIT
        sigmas = deviation / std if std else math.inf
        alerts.append(
            Alert(
                alert_id=alert_id_for(ANOMALY, sensor_id, start, end),
                kind=ANOMALY,
                key=sensor_id,
                ts=ts,
                window_start=start,
                window_end=end,
                value=temperature,
                threshold=limits.sigmas,
                detail=(
                    f"sensor {sensor_id} read {temperature:g}, {sigmas:.1f} standard deviations "
                    f"from its mean {mean:.2f} over {int(n)} readings"
                ),
            )
        )
    window[_ALERTED] = flags
    return True, alerts


def window_view(state: State, horizon: float) -> list[dict[str, float]]:
    """The retained windows, newest first, as the web API shows them."""
    return [
        {
            "start": w[_START],
            "end": w[_START] + WINDOW_SECONDS,
            "count": int(w[_COUNT]),
            "min": w[_MIN],
            "max": w[_MAX],
            "mean": w[_SUM] / w[_COUNT],
        }
        for w in reversed(state["windows"])
        if w[_START] + WINDOW_SECONDS > horizon
    ]


def window_records(state: State, sensor_id: str, starts: set[float]) -> list[dict[str, float | str]]:
    """The windows starting at ``starts`` as they are now, for the sinks (one record per window)."""
    return [
        {
            "sensor_id": sensor_id,
            "start": w[_START],
            "end": w[_START] + WINDOW_SECONDS,
            "count": int(w[_COUNT]),
            "min": w[_MIN],
            "max": w[_MAX],
            "mean": w[_SUM] / w[_COUNT],
        }
        for w in state["windows"]
        if w[_START] in starts and w[_COUNT]
    ]
