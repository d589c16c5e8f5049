"""The contract's input events as typed values, and InvalidEvent: why a record is not one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["InvalidEvent", "Login", "Parser", "SensorReading", "StockPrice", "Transaction", "User"]


class InvalidEvent(ValueError):
    """A record that cannot be processed; ``str(exc)`` is the dead-letter reason."""


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class Login:
    ts: float
    ip: str
    user: str
    success: bool


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class SensorReading:
    ts: float
    sensor_id: str
    temperature: float


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class Transaction:
    ts: float
    txn_id: str
    card_id: str
    amount: float
    merchant: str | None = None
    country: str | None = None


@dataclass(slots=True)  # not frozen: a frozen init costs 3x as much, per event
class StockPrice:
    ts: float
    symbol: str
    price: float


@dataclass(slots=True, frozen=True)
class User:
    """A `users` record (Avro): name and age, every field of its schema version, and the schema id."""

    ts: float
    name: str
    age: int
    schema_id: int
    fields: dict[str, Any]


#: (the decoded record value, the record's timestamp) -> the typed event; InvalidEvent otherwise
Parser = Callable[[dict[str, Any], float | None], Any]
