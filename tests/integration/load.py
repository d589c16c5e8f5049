"""Continuous login traffic with a known answer: bursts of 6 failures per new IP (one brute_force
alert each), produced by an idempotent producer until stopped."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

__all__ = ["PER_IP", "LoginLoad"]

PER_IP = 6  # over the threshold of 5: exactly one brute_force alert per IP


class LoginLoad:
    """``ips_per_round`` new IPs every ``interval`` s, each with ``PER_IP`` failures and 10
    successes, shuffled and unkeyed: spread over the partitions by the producer, as a producer that
    does not know the entity sends them (``keyed=True``: keyed by IP); ``ips`` lists every IP whose
    records the broker acknowledged, ``acked_at`` when (monotonic clock)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        ips_per_round: int = 4,
        interval: float = 0.5,
        keyed: bool = False,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.ips_per_round = ips_per_round
        self.interval = interval
        self.keyed = keyed
        self.ips: list[str] = []
        self.acked_at: dict[str, float] = {}
        self.events = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> LoginLoad:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        # idempotent: a retry of the test's own producer (leader moved, broker away) adds nothing
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=60000
        )
        await producer.start()
        n = len(self.ips)
        try:
            while not self._stop.is_set():
                now = time.time()
                round_ips = [
                    f"100.{64 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
                    for i in range(n, n + self.ips_per_round)
                ]
                n += self.ips_per_round
                futures = []
                for ip in round_ips:
                    events = [
                        {"ts": now + i * 0.01, "ip": ip, "user": "root", "success": False}
                        for i in range(PER_IP)
                    ]
                    events += [
                        {"ts": now + i * 0.01, "ip": ip, "user": f"u{i}", "success": True} for i in range(10)
                    ]
                    random.shuffle(events)  # the count is the same in any order within the grace
                    key = ip.encode() if self.keyed else None
                    for event in events:
                        futures.append(await producer.send(self.topic, orjson.dumps(event), key=key))
                await asyncio.gather(*futures)
                acked = time.monotonic()
                self.acked_at.update((ip, acked) for ip in round_ips)
                self.ips.extend(round_ips)
                self.events += len(futures)
                try:
                    await asyncio.wait_for(self._stop.wait(), self.interval)
                except TimeoutError:
                    pass
        finally:
            await producer.stop()


def failed_logins(body: dict) -> int:
    """The failed logins an `/ips/{ip}` answer counts over its windows."""
    return int(sum(w["failed"] for w in body.get("windows", [])))


async def bursts_not_counted(worker: Any, ips: list[str], within: float) -> dict[str, int]:
    """Ask ``worker`` for every IP until each counts PER_IP or ``within`` s pass: what is left.

    The worker forwards a key it does not own to its owner. The values are the last answers
    (0 for a 404, -1 for no answer at all).
    """
    pending: dict[str, int] = dict.fromkeys(ips, -1)
    deadline = time.monotonic() + within
    while pending and time.monotonic() < deadline:
        for ip in list(pending):
            try:
                status, body = await asyncio.to_thread(worker.get, f"/ips/{ip}", 5.0)
            except OSError:
                continue
            pending[ip] = failed_logins(body) if status == 200 else 0
            if pending[ip] == PER_IP:
                del pending[ip]
        if pending:
            await asyncio.sleep(1.0)
    return pending
