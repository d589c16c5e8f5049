"""Realistic traffic for the input topics, with known incidents injected at known times."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streamapp.settings import Settings

__all__ = ["SCENARIOS", "Incident", "Record", "TrafficGenerator", "login_traffic"]

logger = logging.getLogger(__name__)


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


@dataclass
class TrafficGenerator:
    """Interleaves background traffic with incidents; one ``tick`` is one second of event time."""

    rng: random.Random = field(default_factory=random.Random)
    incidents: list[Incident] = field(default_factory=list)


def login_traffic(gen: TrafficGenerator, now: float, per_second: int, second: int) -> Iterator[Record]:
    """One second of logins: mostly successes from many IPs; every 10 s a brute-force burst."""
    rng = gen.rng
    for _ in range(per_second):
        ip = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        user = f"user{rng.randrange(5000)}"
        # background failures are rare and spread over many IPs: never a brute force
        yield Record("logins", ip, {"ts": now, "ip": ip, "user": user, "success": rng.random() > 0.03})
    if second % 10 == 3:
        attacker = f"203.0.113.{rng.randrange(1, 255)}"
        gen.incidents.append(Incident("brute_force", attacker, now))
        for i in range(12):
            yield Record(
                "logins", attacker,
                {"ts": now + i * 0.05, "ip": attacker, "user": f"admin{i % 3}", "success": False},
            )  # fmt: skip


SCENARIOS = {"logins": [login_traffic], "all": [login_traffic]}


async def produce_traffic(
    settings: Settings,
    scenario: str = "all",
    rate: int = 200,
    duration: float | None = None,
    keyed: bool = True,
) -> int:
    """Produce ``rate`` background events per second until ``duration`` ends; return the count."""
    makers = SCENARIOS[scenario]
    gen = TrafficGenerator()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    started = time.monotonic()
    second = 0
    try:
        while duration is None or time.monotonic() - started < duration:
            tick_started = time.monotonic()
            now = time.time()
            per_maker = max(1, rate // len(makers))
            pending = []
            for make in makers:
                for record in make(gen, now, per_maker, second):
                    pending.append(
                        await producer.send(
                            settings.topic(record.topic),
                            key=record.key.encode() if keyed else None,
                            value=orjson.dumps(record.value),
                        )
                    )
            await asyncio.gather(*pending)
            sent += len(pending)
            second += 1
            if second % 10 == 0:
                logger.info(
                    "generated %d events in %.0f s, %d incidents injected",
                    sent, time.monotonic() - started, len(gen.incidents),
                )  # fmt: skip
            # hold the rate: one tick of traffic per wall-clock second
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick_started)))
    finally:
        await producer.stop()
    return sent
