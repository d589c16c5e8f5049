"""Producing a scenario's traffic at a steady rate, with its incidents written down once sent."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from streamapp.ops.generate.generator import TrafficGenerator
from streamapp.ops.generate.scenarios import SCENARIOS
from streamapp.runtime.kafka_clients import client_kwargs
from streamapp.settings import Settings

__all__ = ["produce_traffic"]

logger = logging.getLogger(__name__)


async def produce_traffic(
    settings: Settings,
    scenario: str = "all",
    rate: int = 200,
    duration: float | None = None,
    keyed: bool = True,
    seed: int | None = None,
    incidents_path: Path | None = None,
) -> int:
    """Produce ``rate`` background events per second until ``duration`` ends; return the count.

    ``seed`` makes the traffic reproducible (default: a random one, logged). Every injected
    incident is appended to ``incidents_path`` as a JSON line ``{"kind", "key", "at"}`` once its
    records are on the broker.
    """
    makers = SCENARIOS[scenario]
    if seed is None:
        seed = random.randrange(2**32)
    gen = TrafficGenerator(rng=random.Random(seed))
    logger.info("generating %r traffic at %d events/s with seed %d", scenario, rate, seed)
    incidents_file = incidents_path.open("ab") if incidents_path is not None else None
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=5, acks="all", **client_kwargs(settings)
    )
    await producer.start()
    sent = 0
    written = 0
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
            if incidents_file is not None and written < len(gen.incidents):
                for incident in gen.incidents[written:]:
                    incidents_file.write(
                        orjson.dumps({"kind": incident.kind, "key": incident.key, "at": incident.at}) + b"\n"
                    )
                incidents_file.flush()
                written = len(gen.incidents)
            second += 1
            if second % 10 == 0:
                kinds = Counter(incident.kind for incident in gen.incidents)
                logger.info(
                    "generated %d events in %.0f s, %d incidents injected (%s)",
                    sent, time.monotonic() - started, len(gen.incidents),
                    ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) or "none",
                )  # fmt: skip
            # hold the rate: one tick of traffic per wall-clock second
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick_started)))
    finally:
        await producer.stop()
        if incidents_file is not None:
            incidents_file.close()
    return sent
