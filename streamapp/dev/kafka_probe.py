"""Whether a Kafka broker answers, and how many brokers its cluster reports (an admin metadata call)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from aiokafka.admin import AIOKafkaAdminClient

from streamapp.dev.process import port_in_use

__all__ = ["broker_answers", "cluster_brokers"]


def broker_answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a Kafka broker answers a metadata request at ``bootstrap``."""
    return cluster_brokers(bootstrap, timeout) > 0


async def _cluster_brokers(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await admin.start()
        described = await admin.describe_cluster()
        return len(described["brokers"])
    finally:
        await admin.close()


def cluster_brokers(bootstrap: str, timeout: float = 5.0) -> int:
    """How many brokers the cluster at ``bootstrap`` reports (0 when it does not answer)."""
    host, _, port = bootstrap.rpartition(":")
    if not port_in_use(host, int(port)):
        return 0  # not listening yet: spare aiokafka's connection-error log lines

    def ask() -> int:
        try:
            return asyncio.run(asyncio.wait_for(_cluster_brokers(bootstrap), timeout))
        except Exception:
            return 0

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return ask()
    # called from async code (a test, a service): asyncio.run needs a thread of its own
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(ask).result()
