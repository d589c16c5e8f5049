"""The traffic generator's state: records, injected incidents, and what each scenario remembers."""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CardsState",
    "Cooldown",
    "Incident",
    "LoginsState",
    "Maker",
    "Record",
    "SensorsState",
    "StocksState",
    "TrafficGenerator",
]

#: the stocks scenario's symbols and their opening prices
_SYMBOLS = {
    "AAPL": 190.0, "MSFT": 410.0, "GOOG": 150.0, "AMZN": 180.0, "NVDA": 120.0,
    "META": 480.0, "TSLA": 240.0, "NFLX": 620.0, "ORCL": 125.0, "INTC": 31.0,
}  # fmt: skip


@dataclass(frozen=True)
class Record:
    topic: str
    key: str
    value: dict[str, Any]


@dataclass
class Incident:
    """An injected incident the detector should report."""

    kind: str
    key: str
    at: float


class Cooldown:
    """Keys used within the last ``span`` seconds of event time (oldest first)."""

    def __init__(self, span: float) -> None:
        self.span = span
        self._last: OrderedDict[str, float] = OrderedDict()

    def ready(self, key: str, ts: float) -> bool:
        while self._last:
            oldest, at = next(iter(self._last.items()))
            if at > ts - self.span:
                break
            del self._last[oldest]
        return key not in self._last

    def use(self, key: str, ts: float) -> None:
        self._last[key] = ts
        self._last.move_to_end(key)


@dataclass
class LoginsState:
    # an IP fails at most once per 70 s (brute_force needs 6 in 60 s), a user at most once per
    # 310 s (account_takeover needs 3 in 300 s)
    failed_ips: Cooldown = field(default_factory=lambda: Cooldown(70.0))
    failed_users: Cooldown = field(default_factory=lambda: Cooldown(310.0))
    attackers: int = -1  # counters of fresh keys; -1: not yet offset
    victims: int = -1
    stuffing_ips: int = -1


@dataclass
class SensorsState:
    bases: list[float] = field(default_factory=list)  # each background sensor's own level
    readings: list[int] = field(default_factory=list)
    last_anomaly: dict[int, int] = field(default_factory=dict)  # sensor -> second
    next_anomaly: int = 0
    fresh: int = -1


@dataclass
class CardsState:
    bases: dict[str, float] = field(default_factory=dict)  # each card's typical amount
    # a card is used at most once per 30 s: at most 2 in any 60 s (card_velocity needs 6)
    recent: Cooldown = field(default_factory=lambda: Cooldown(30.0))
    fresh: int = -1


@dataclass
class StocksState:
    prices: dict[str, float] = field(default_factory=lambda: dict(_SYMBOLS))
    turn: int = 0


@dataclass
class TrafficGenerator:
    """Interleaves background traffic with incidents; one ``tick`` is one second of event time."""

    rng: random.Random = field(default_factory=random.Random)
    incidents: list[Incident] = field(default_factory=list)
    logins: LoginsState = field(default_factory=LoginsState)
    sensors: SensorsState = field(default_factory=SensorsState)
    cards: CardsState = field(default_factory=CardsState)
    stocks: StocksState = field(default_factory=StocksState)
    # records of incidents that unfold over several seconds: (topic, second) -> [(record, incident)]
    pending: dict[tuple[str, int], list[tuple[Record, Incident | None]]] = field(default_factory=dict)

    def later(
        self,
        second: int,
        now: float,
        delay: float,
        record: Record,
        incident: tuple[str, str] | None = None,
    ) -> None:
        """Emit ``record`` with event time ``now + delay`` in the tick ``delay`` seconds on.

        A negative ``delay`` is an event from the past that arrives now (late). ``incident`` is the
        (kind, key) this record makes fire: it is recorded when the record is emitted, so a run that
        stops before then does not claim it.
        """
        ts = round(now + delay, 3)
        value = {"ts": ts, **record.value}
        made = Incident(incident[0], incident[1], ts) if incident else None
        due = (record.topic, second + max(0, int(delay)))
        self.pending.setdefault(due, []).append((Record(record.topic, record.key, value), made))

    def due(self, topic: str, second: int) -> Iterator[Record]:
        """The scheduled records of ``topic`` for this tick; their incidents count from now."""
        for record, incident in self.pending.pop((topic, second), []):
            if incident is not None:
                self.incidents.append(incident)
            yield record

    def fresh(self, counter: int, size: int) -> int:
        """The next value of a fresh-key counter (-1 starts it at a random offset)."""
        return (counter + 1) % size if counter >= 0 else self.rng.randrange(size)


Maker = Callable[[TrafficGenerator, float, int, int], Iterator[Record]]
