"""Reads the `alerts` topic and appends one JSON line per alert with the time it was read.

Run as its own process (so a busy producer cannot delay the reads): ``python -m bench.alert_reader
BOOTSTRAP TOPIC OUT_FILE``. Every partition of TOPIC is read (no group) from its beginning; the
line is ``{"recv": epoch seconds, "key", "kind", "ts", "produced"}``, where ``ts`` is the alert's ``ts``:
the event time of the event that made the count cross the threshold, and ``produced`` the alert
record's Kafka timestamp (the time the worker's producer took it). Writes ``OUT_FILE.ready`` once reading.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

__all__ = ["main", "read_alerts"]

logger = logging.getLogger("bench.alert_reader")


async def read_alerts(bootstrap: str, topic: str, out: Path) -> None:
    """Append every alert of ``topic`` to ``out`` until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # no group: the consumer takes every partition of the topic, from the beginning
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=50,
        enable_auto_commit=False, metadata_max_age_ms=1000,
    )  # fmt: skip
    await consumer.start()
    try:
        for _ in range(600):  # up to a minute: the topic comes with the worker
            if consumer.assignment() or stop.is_set():
                break
            await asyncio.sleep(0.1)
        for tp in consumer.assignment():
            await consumer.position(tp)
        out.with_name(out.name + ".ready").write_text("ready\n")
        with out.open("ab") as sink:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batches.values():
                    for record in records:
                        alert = orjson.loads(record.value)  # type: ignore[arg-type]
                        line = {
                            "recv": now, "key": alert["key"], "kind": alert["kind"], "ts": alert["ts"],
                            "produced": record.timestamp / 1000,
                        }  # fmt: skip
                        sink.write(orjson.dumps(line) + b"\n")
                sink.flush()
    finally:
        await consumer.stop()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    bootstrap, topic, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    asyncio.run(read_alerts(bootstrap, topic, out))


if __name__ == "__main__":
    main()
