"""Realistic traffic for the input topics, with known incidents injected at known times."""

from streamapp.ops.generate.generator import Incident, Record, TrafficGenerator
from streamapp.ops.generate.produce import produce_traffic
from streamapp.ops.generate.scenarios import (
    SCENARIOS,
    login_traffic,
    sensor_traffic,
    stock_traffic,
    transaction_traffic,
)

__all__ = [
    "SCENARIOS",
    "Incident",
    "Record",
    "TrafficGenerator",
    "login_traffic",
    "produce_traffic",
    "sensor_traffic",
    "stock_traffic",
    "transaction_traffic",
]
