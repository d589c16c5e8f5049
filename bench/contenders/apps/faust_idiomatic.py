"""Idiomatic Faust: failed logins per IP in a hopping windowed RocksDB table, as Faust's docs show it.

Run as its own worker: ``python -m bench.contenders.apps.faust_idiomatic worker`` with ``BENCH_BROKER``,
``BENCH_APP_ID``, ``BENCH_TOPIC``, ``BENCH_DATA_DIR``, ``BENCH_WEB_PORT``, ``BENCH_PARTITIONS``,
``BENCH_EXPECT`` (events to see) and ``BENCH_PROGRESS`` (the progress file the harness reads).
The records are keyed by IP already, so the table is fed without a ``group_by`` repartition.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import cast

import faust
from faust.types import FieldDescriptorT

from bench.progress import ProgressFile

__all__ = ["Login", "app", "count_failed_logins", "failed_logins", "logins"]


class Login(faust.Record, serializer="json"):
    """A `logins` event of the contract."""

    ts: float
    ip: str
    user: str
    success: bool


app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-faust-idiomatic"),
    broker=os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:9092"),
    store="rocksdb://",
    datadir=os.environ.get("BENCH_DATA_DIR", "bench-faust-data"),
    web_port=int(os.environ.get("BENCH_WEB_PORT", "6067")),
    web_host="127.0.0.1",
    web_bind="127.0.0.1",
    topic_partitions=int(os.environ.get("BENCH_PARTITIONS", "8")),
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
)

logins = app.topic(os.environ.get("BENCH_TOPIC", "logins"), value_type=Login)

# the docs' windowed table: 60-s windows every 10 s on event time, kept for an hour
failed_logins = (
    app.Table("failed-logins", default=int, options={"driver": "rocksdict"})
    .hopping(60, 10, expires=timedelta(hours=1))
    .relative_to_field(cast(FieldDescriptorT, Login.ts))  # a field descriptor at class level
)

progress = ProgressFile(
    os.environ.get("BENCH_PROGRESS", "faust-progress.json"), int(os.environ.get("BENCH_EXPECT", "0"))
)


@app.agent(logins)
async def count_failed_logins(stream: faust.StreamT[Login]) -> None:
    async for login in stream:
        if not login.success:
            failed_logins[login.ip] += 1
        progress.tick()


if __name__ == "__main__":
    app.main()
