"""Login events for the bench: realistic traffic with hot attackers, distinct-IP fills, paced live traffic."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import orjson
from confluent_kafka import Producer

__all__ = [
    "Dataset",
    "LatencyTraffic",
    "distinct_ip",
    "fill_events",
    "login_events",
    "make_producer",
    "produce",
    "produce_paced",
]

logger = logging.getLogger("bench")

#: hot attackers: few IPs, a tenth of the traffic, every login of theirs fails
HOT_IPS = 20
HOT_SHARE = 0.10
#: failure rate of the other logins, so that about 20% of all logins fail
BACKGROUND_FAILURE_RATE = (0.20 - HOT_SHARE) / (1 - HOT_SHARE)

Record = tuple[bytes, bytes]  # (key, value)


@dataclass(frozen=True)
class Dataset:
    """What was produced into ``topic``."""

    topic: str
    events: int
    failures: int
    ips: int
    seconds: float  # time to produce


def distinct_ip(i: int) -> str:
    """The i-th of 16 million distinct private IPv4 addresses."""
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def _login(ts: float, ip: str, user: str, success: bool) -> Record:
    return ip.encode(), orjson.dumps({"ts": round(ts, 3), "ip": ip, "user": user, "success": success})


def login_events(
    n: int, seed: int = 9, now: float | None = None, span: float = 300.0
) -> Iterator[tuple[Record, bool]]:
    """``n`` logins over the ``span`` seconds before ``now``, keyed by IP; yields (record, failed).

    Many ordinary IPs (one per ten events, at least 1,000) with about 11% failures, plus 20 hot
    attackers sending a tenth of the traffic, all failures: about 20% of the logins fail, and each
    hot IP crosses the brute-force threshold every minute. Users: one per two events (at least
    10,000), so account takeovers are rare, as they are in real traffic.
    """
    rng = random.Random(seed)
    now = time.time() if now is None else now
    start = now - span
    normal_ips = max(1000, n // 10)
    users = max(10_000, n // 2)
    hot = [f"203.0.113.{i + 1}" for i in range(HOT_IPS)]
    for i in range(n):
        ts = start + span * i / n + rng.random() * 0.5
        user = f"user{rng.randrange(users)}"
        if rng.random() < HOT_SHARE:
            yield _login(ts, rng.choice(hot), user, False), True
        else:
            failed = rng.random() < BACKGROUND_FAILURE_RATE
            yield _login(ts, distinct_ip(rng.randrange(normal_ips)), user, not failed), failed


def fill_events(k: int, now: float | None = None, span: float = 60.0) -> Iterator[tuple[Record, bool]]:
    """``k`` failed logins from ``k`` distinct IPs by ``k`` distinct users (one table key each)."""
    now = time.time() if now is None else now
    for i in range(k):
        yield _login(now - span + span * i / k, distinct_ip(i), f"u{i}", False), True


def make_producer(bootstrap: str, linger_ms: int = 50) -> Producer:
    # murmur2 like Java clients and aiokafka, so a key lands where any other client would put it
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "partitioner": "murmur2_random",
            "acks": "all",
        }
    )


def produce(bootstrap: str, topic: str, events: Iterator[tuple[Record, bool]], label: str) -> Dataset:
    """Produce every event to ``topic`` and wait until all are acknowledged."""
    producer = make_producer(bootstrap)
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    started = time.monotonic()
    count = failures = 0
    ips: set[bytes] = set()
    for (key, value), failed in events:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        failures += failed
        ips.add(key)
        if count % 100_000 == 0:
            producer.poll(0)
            logger.info("%s: %s events produced ...", label, f"{count:,}")
    remaining = producer.flush(120)
    if remaining or errors:
        raise RuntimeError(f"producing to {topic} failed: {remaining} not delivered, errors {errors[:3]}")
    seconds = time.monotonic() - started
    logger.info(
        "%s: %s events (%s failed logins, %s IPs) in %s in %.1f s",
        label, f"{count:,}", f"{failures:,}", f"{len(ips):,}", topic, seconds,
    )  # fmt: skip
    return Dataset(topic=topic, events=count, failures=failures, ips=len(ips), seconds=seconds)


@dataclass
class LatencyTraffic:
    """What :func:`produce_paced` sent: attack IPs and the produce time of each one's crossing event."""

    events: int = 0
    attacks: dict[str, float] | None = None
    seconds: float = 0.0


def produce_paced(
    bootstrap: str,
    topic: str,
    rate: float,
    duration: float,
    attacks_per_second: float = 4.0,
    threshold: int = 5,
    seed: int = 11,
    stop: Callable[[], bool] = lambda: False,
    warmup: float = 0.0,
) -> LatencyTraffic:
    """Hold ``rate`` logins/s for ``duration`` s: background traffic plus brute-force bursts.

    Every ``1 / attacks_per_second`` s a new IP sends ``threshold + 1`` failed logins at once; the
    last one makes the count cross the threshold. Each event's ``ts`` is the time it was handed to
    the producer (ms precision), so an alert's ``ts`` is the produce time of its crossing event.
    Synchronous (no event loop here): paced in 10-ms ticks. Bursts of the first ``warmup``
    seconds are sent but not returned in ``attacks`` (not timed): the worker's first seconds
    of traffic (connections, metadata, first fetches) are start-up, not its steady latency.
    """
    rng = random.Random(seed)
    producer = make_producer(bootstrap, linger_ms=1)
    burst = threshold + 1
    attacks: dict[str, float] = {}
    users = 100_000
    normal_ips = 50_000
    started = time.time()
    sent = 0
    next_attack = started + 0.5
    attack_no = 0
    while not stop():
        now = time.time()
        elapsed = now - started
        if elapsed >= duration:
            break
        due = int(rate * elapsed) - sent
        if now >= next_attack:
            attack_no += 1
            ip = f"198.18.{attack_no >> 8 & 255}.{attack_no & 255}"
            for _ in range(burst):
                ts = time.time()
                key, value = _login(ts, ip, f"user{rng.randrange(users)}", False)
                producer.produce(topic, value=value, key=key)
            if elapsed >= warmup:
                attacks[ip] = round(ts, 3)
            sent += burst
            due -= burst
            next_attack += 1.0 / attacks_per_second
        for _ in range(max(0, due)):
            failed = rng.random() < BACKGROUND_FAILURE_RATE
            key, value = _login(
                time.time(), distinct_ip(rng.randrange(normal_ips)), f"user{rng.randrange(users)}", not failed
            )
            try:
                producer.produce(topic, value=value, key=key)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0, 0.01 - (time.time() - now)))
    producer.flush(30)
    return LatencyTraffic(events=sent, attacks=attacks, seconds=time.time() - started)
