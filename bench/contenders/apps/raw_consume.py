"""The Python client's ceiling: aiokafka consume + orjson decode + failed logins per IP in a dict.

Run as its own process: ``python -m bench.contenders.apps.raw_consume`` with ``BENCH_BROKER``,
``BENCH_GROUP``, ``BENCH_TOPIC``, ``BENCH_EXPECT`` and ``BENCH_PROGRESS``. No state store, no
changelog, no commits beyond aiokafka's auto-commit: what any Python stream processor on aiokafka pays
at least.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from bench.progress import ProgressFile

__all__ = ["consume", "main"]

logger = logging.getLogger("bench.raw_consume")


class _StartClock(ConsumerRebalanceListener):  # type: ignore[misc]
    """Starts the progress clock when the partitions are assigned: aiokafka fetches ahead in the
    background from then on, so timing from the first record returned would leave that fetch out."""

    def __init__(self, progress: ProgressFile) -> None:
        self.progress = progress

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.progress.start()


async def consume(
    bootstrap: str, group: str, topic: str, expect: int, progress: ProgressFile
) -> Counter[str]:
    """Read ``expect`` records of ``topic`` and count the failed logins per IP."""
    failed: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest")
    consumer.subscribe([topic], listener=_StartClock(progress))
    await consumer.start()
    try:
        seen = 0
        while seen < expect:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    login = orjson.loads(record.value)  # type: ignore[arg-type]
                    if not login["success"]:
                        failed[login["ip"]] += 1
                seen += len(records)
                progress.tick(len(records))
        await consumer.commit()
    finally:
        await consumer.stop()
    return failed


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    expect = int(os.environ["BENCH_EXPECT"])
    progress = ProgressFile(os.environ["BENCH_PROGRESS"], expect)
    failed = asyncio.run(
        consume(
            os.environ.get("BENCH_BROKER", "127.0.0.1:9092"),
            os.environ["BENCH_GROUP"],
            os.environ["BENCH_TOPIC"],
            expect,
            progress,
        )
    )
    logger.info(
        "%d failed logins from %d IPs in %d events", sum(failed.values()), len(failed), progress.count
    )


if __name__ == "__main__":
    main()
