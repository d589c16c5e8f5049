"""high_temperature and temperature_anomaly over 60-s tumbling windows of one sensor's readings.

high_temperature alerts as a reading arrives. temperature_anomaly compares a reading with the
readings before it in event time; one that arrives late can move that mean either way, so
readings are held (``pending``) and judged once the sensor's event clock has passed them by the
grace, when no earlier reading can still count.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass

from streamapp.models import Alert
from streamapp.rules.base import State, rule_alert
from streamapp.rules.windows import bucket_start

__all__ = [
    "ANOMALY",
    "AnomalyAlert",
    "HIGH",
    "MAX_HELD",
    "WINDOW_SECONDS",
    "TemperatureThresholds",
    "anomaly_alert",
    "judge_readings",
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
#: readings held per sensor at most: a flood within the grace has its oldest judged early
MAX_HELD = 128


@dataclass(frozen=True)
class TemperatureThresholds:
    high: float = 100.0
    sigmas: float = 4.0
    min_readings: int = 30


def new_state() -> State:
    # pending: [[ts, temperature]] readings not yet judged for anomalies, oldest first
    return {"windows": [], "last": None, "pending": []}


def _history(windows: list[list[float]], minus: list[list[float]]) -> tuple[float, float, float]:
    """Count, mean and standard deviation of the retained readings, less the ``minus`` ones."""
    n = sum(w[_COUNT] for w in windows) - len(minus)
    if n <= 0:
        return 0, 0.0, 0.0
    total = sum(w[_SUM] for w in windows) - sum(r[1] for r in minus)
    squares = sum(w[_SUMSQ] for w in windows) - sum(r[1] * r[1] for r in minus)
    mean = total / n
    variance = max(0.0, squares / n - mean * mean)
    return n, mean, math.sqrt(variance)


def record_reading(
    state: State, sensor_id: str, ts: float, temperature: float, limits: TemperatureThresholds, horizon: float
) -> tuple[bool, list[Alert]]:
    """Add one reading to its 60-s tumbling window and hold it for the anomaly check.

    Returns (counted, alerts): high_temperature alerts at once (a window alerts when any of its
    readings is above the limit, in whatever order they come). temperature_anomaly compares a
    reading with every reading before it, so it waits: see :func:`judge_readings`.
    """
    start = bucket_start(ts, WINDOW_SECONDS)
    if start + WINDOW_SECONDS <= horizon:
        return False, []
    windows: list[list[float]] = state["windows"]
    _expire(state, horizon)
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
    # the newest reading; of two at the same time the higher, whatever order they came in
    if last is None or [ts, temperature] > last:
        state["last"] = [ts, temperature]
    insort(state.setdefault("pending", []), [ts, temperature])

    flags = int(window[_ALERTED])
    if temperature > limits.high and not flags & _HIGH_BIT:
        window[_ALERTED] = flags | _HIGH_BIT
        detail = f"sensor {sensor_id} read {temperature:g} (above {limits.high:g})"
        window_span = (start, start + WINDOW_SECONDS)
        return True, [rule_alert(HIGH, sensor_id, ts, window_span, temperature, limits.high, detail)]
    return True, []


def _expire(state: State, horizon: float) -> None:
    windows = state["windows"]
    # expired windows leave state before they could count as history
    while windows and windows[0][_START] + WINDOW_SECONDS <= horizon:
        del windows[0]
    pending = state.get("pending", [])
    # readings whose window expired go unjudged: the alert would name a window that is gone
    del pending[: bisect_left(pending, [windows[0][_START]]) if windows else len(pending)]


#: (sensor_id, ts, temperature, its window, readings before it, their mean, deviations, limits) -> alert
AnomalyAlert = Callable[
    [str, float, float, tuple[float, float], int, float, float, TemperatureThresholds], Alert
]


def anomaly_alert(
    sensor_id: str,
    ts: float,
    temperature: float,
    window: tuple[float, float],
    n: int,
    mean: float,
    sigmas: float,
    limits: TemperatureThresholds,
) -> Alert:
    """The temperature_anomaly alert of a reading ``sigmas`` standard deviations from ``mean``."""
    detail = (
        f"sensor {sensor_id} read {temperature:g}, {sigmas:.1f} standard deviations "
        f"from its mean {mean:.2f} over {n} readings"
    )
    return rule_alert(ANOMALY, sensor_id, ts, window, temperature, limits.sigmas, detail)


def judge_readings(
    state: State,
    sensor_id: str,
    before: float,
    limits: TemperatureThresholds,
    horizon: float,
    alert: AnomalyAlert = anomaly_alert,
) -> list[Alert]:
    """Judge the held readings earlier than ``before`` for anomalies, oldest first.

    A reading is compared with the mean and deviation of every retained reading strictly before
    it in event time: all readings in the windows, less those still held (which are not before
    it). Nothing earlier than ``before`` arrives afterwards (the lateness model), so this is the
    answer of any arrival order.
    """
    _expire(state, horizon)
    pending: list[list[float]] = state.get("pending", [])
    ready = max(bisect_left(pending, [before]), len(pending) - MAX_HELD)
    alerts: list[Alert] = []
    windows: list[list[float]] = state["windows"]
    i = 0
    while i < ready:
        j = i
        while j < ready and pending[j][0] == pending[i][0]:
            j += 1
        n, mean, std = _history(windows, pending[i:])
        for ts, temperature in pending[i:j]:
            found = _anomaly(windows, sensor_id, ts, temperature, n, mean, std, limits, alert)
            if found is not None:
                alerts.append(found)
        i = j
    del pending[:ready]
    return alerts


def _anomaly(
    windows: list[list[float]],
    sensor_id: str,
    ts: float,
    temperature: float,
    n: float,
    mean: float,
    std: float,
    limits: TemperatureThresholds,
    alert: AnomalyAlert,
) -> Alert | None:
    start = bucket_start(ts, WINDOW_SECONDS)
    k = bisect_left(windows, start, key=lambda w: w[_START])
    if k == len(windows) or windows[k][_START] != start:
        return None  # its window expired while it was held
    window = windows[k]
    deviation = abs(temperature - mean)
    if (
        n < limits.min_readings
        or deviation <= limits.sigmas * std
        or deviation <= 1e-9  # a flat history has std 0: only a real change counts
        or int(window[_ALERTED]) & _ANOMALY_BIT
    ):
        return None
    window[_ALERTED] = int(window[_ALERTED]) | _ANOMALY_BIT
    sigmas = deviation / std if std else math.inf
    return alert(sensor_id, ts, temperature, (start, start + WINDOW_SECONDS), int(n), mean, sigmas, limits)


def _window_summary(w: list[float]) -> dict[str, float]:
    """One window's span and statistics, as the web API and the sinks show them."""
    return {
        "start": w[_START],
        "end": w[_START] + WINDOW_SECONDS,
        "count": int(w[_COUNT]),
        "min": w[_MIN],
        "max": w[_MAX],
        "mean": w[_SUM] / w[_COUNT],
    }


def window_view(state: State, horizon: float) -> list[dict[str, float]]:
    """The retained windows, newest first, as the web API shows them."""
    return [_window_summary(w) for w in reversed(state["windows"]) if w[_START] + WINDOW_SECONDS > horizon]


def window_records(state: State, sensor_id: str, starts: set[float]) -> list[dict[str, float | str]]:
    """The windows starting at ``starts`` as they are now, for the sinks (one record per window)."""
    return [
        {"sensor_id": sensor_id, **_window_summary(w)}
        for w in state["windows"]
        if w[_START] in starts and w[_COUNT]
    ]
