"""Quix Streams: failed logins per IP in a 60-s window hopping by 10 s, RocksDB state with changelog.

Run as its own process: ``python -m bench.contenders.apps.quix_count`` with ``BENCH_BROKER`` (host:port list),
``BENCH_GROUP``, ``BENCH_TOPIC``, ``BENCH_DATA_DIR``, ``BENCH_EXPECT`` and ``BENCH_PROGRESS``.
Written as Quix's docs show it; the records are keyed by IP already, so no ``group_by``.
"""

from __future__ import annotations

import os
from typing import Any

from quixstreams import Application

from bench.progress import ProgressFile

__all__ = ["build", "event_time_ms", "main"]


def event_time_ms(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """Event time from the record's ``ts`` (epoch seconds) in milliseconds."""
    return int(value["ts"] * 1000)


def build() -> tuple[Application, Any]:
    """The application and its dataframe (``count().current()`` per 60-s window, 10-s step)."""
    progress = ProgressFile(os.environ["BENCH_PROGRESS"], int(os.environ["BENCH_EXPECT"]))
    app = Application(
        broker_address=os.environ.get("BENCH_BROKER", "127.0.0.1:9092"),
        consumer_group=os.environ["BENCH_GROUP"],
        auto_offset_reset="earliest",
        state_dir=os.environ["BENCH_DATA_DIR"],
        on_message_processed=lambda _topic, _partition, _offset: progress.tick(),
        loglevel="INFO",
    )
    topic = app.topic(
        os.environ["BENCH_TOPIC"],
        key_deserializer="str",
        value_deserializer="json",
        timestamp_extractor=event_time_ms,
    )
    sdf = app.dataframe(topic)
    sdf = sdf.filter(lambda login: not login["success"])
    sdf = sdf.hopping_window(duration_ms=60_000, step_ms=10_000).count().current()
    return app, sdf


def main() -> None:
    app, sdf = build()
    app.run(sdf)


if __name__ == "__main__":
    main()
