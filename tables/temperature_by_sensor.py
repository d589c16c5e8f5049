"""temperature_by_sensor: per sensor, 60-s tumbling windows of readings and the last reading."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["temperature_by_sensor"]

temperature_by_sensor = define_table(
    "temperature-by-sensor",
    help="sensor -> {windows: [[start, count, min, max, sum, sumsq, alerted]], last: [ts, t], src}",
)
