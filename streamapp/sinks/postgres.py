"""PostgresWriter: alerts and sensor windows upserted in one transaction per batch (asyncpg)."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from aiokafka import ConsumerRecord

__all__ = ["SCHEMA", "PostgresWriter", "alert_rows", "connect_kwargs", "window_rows"]

logger = logging.getLogger(__name__)

#: created at start (idempotent); times are epoch seconds, as in the alerts topic and the web API
SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id     text PRIMARY KEY,
    kind         text NOT NULL,
    key          text NOT NULL,
    ts           double precision NOT NULL,
    window_start double precision,
    window_end   double precision,
    value        double precision NOT NULL,
    threshold    double precision NOT NULL,
    detail       text NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alerts_kind_key_ts ON alerts (kind, key, ts DESC);
CREATE TABLE IF NOT EXISTS sensor_windows (
    sensor_id    text NOT NULL,
    window_start double precision NOT NULL,
    window_end   double precision NOT NULL,
    count        integer NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    mean         double precision NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor_id, window_start)
);
"""

_INSERT_ALERT = """
INSERT INTO alerts (alert_id, kind, key, ts, window_start, window_end, value, threshold, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (alert_id) DO NOTHING
"""

# a window only grows: an older update (a batch read again after a crash) never replaces a newer one
_UPSERT_WINDOW = """
INSERT INTO sensor_windows (sensor_id, window_start, window_end, count, min, max, mean)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (sensor_id, window_start) DO UPDATE SET
    window_end = EXCLUDED.window_end, count = EXCLUDED.count, min = EXCLUDED.min,
    max = EXCLUDED.max, mean = EXCLUDED.mean, updated_at = now()
WHERE sensor_windows.count <= EXCLUDED.count
"""

AlertRow = tuple[str, str, str, float, float | None, float | None, float, float, str]
WindowRow = tuple[str, float, float, int, float, float, float]


def connect_kwargs(dsn: str) -> dict[str, Any]:
    """asyncpg takes URI DSNs; the libpq keyword form (``host=... dbname=...``) becomes arguments."""
    if "://" in dsn:
        return {"dsn": dsn}
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    kwargs: dict[str, Any] = {}
    for part in shlex.split(dsn):
        name, _, value = part.partition("=")
        if name in names:
            kwargs[names[name]] = int(value) if name == "port" else value
    return kwargs


def _decode(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any] | None:
    try:
        value = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        logger.warning("postgres sink: skipping a record that is not a JSON object (%s)", record.topic)
        return None
    return value


def alert_rows(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[AlertRow]:
    """One row per alert_id (the alerts topic may hold an alert twice after a crash)."""
    rows: dict[str, AlertRow] = {}
    for record in records:
        alert = _decode(record)
        if alert is None:
            continue
        try:
            rows[str(alert["alert_id"])] = (
                str(alert["alert_id"]), str(alert["kind"]), str(alert["key"]), float(alert["ts"]),
                None if alert.get("window_start") is None else float(alert["window_start"]),
                None if alert.get("window_end") is None else float(alert["window_end"]),
                float(alert["value"]), float(alert["threshold"]), str(alert.get("detail", "")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("postgres sink: skipping an alert without %s", exc)
    return list(rows.values())


def window_rows(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[WindowRow]:
    """The newest update (largest count) of each (sensor, window start) in the batch."""
    rows: dict[tuple[str, float], WindowRow] = {}
    for record in records:
        window = _decode(record)
        if window is None:
            continue
        try:
            row: WindowRow = (
                str(window["sensor_id"]), float(window["start"]), float(window["end"]), int(window["count"]),
                float(window["min"]), float(window["max"]), float(window["mean"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("postgres sink: skipping a window without %s", exc)
            continue
        known = rows.get(row[:2])  # type: ignore[index]
        if known is None or known[3] <= row[3]:
            rows[(row[0], row[1])] = row
    return list(rows.values())


class PostgresWriter:
    """One asyncpg connection, opened (and the tables created) at start and after every failure."""

    name = "postgres"

    def __init__(self, dsn: str, alerts_topic: str, windows_topic: str, timeout: float = 30.0) -> None:
        self.dsn = dsn
        self.alerts_topic = alerts_topic
        self.windows_topic = windows_topic
        self.timeout = timeout
        self._conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        await self.close()
        conn = await asyncpg.connect(
            **connect_kwargs(self.dsn), timeout=self.timeout, command_timeout=self.timeout
        )
        try:
            async with conn.transaction():
                # concurrent workers creating the tables at once: one at a time
                await conn.execute("SELECT pg_advisory_xact_lock(8008)")
                await conn.execute(SCHEMA)
        except BaseException:
            await conn.close(timeout=5)
            raise
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:  # already broken: nothing to close cleanly
                conn.terminate()

    async def write(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> int:
        alerts = alert_rows([r for r in records if r.topic == self.alerts_topic])
        windows = window_rows([r for r in records if r.topic == self.windows_topic])
        if not alerts and not windows:
            return 0
        if self._conn is None or self._conn.is_closed():
            await self.open()
        conn = self._conn
        assert conn is not None
        try:
            async with conn.transaction():
                if alerts:
                    await conn.executemany(_INSERT_ALERT, alerts)
                if windows:
                    await conn.executemany(_UPSERT_WINDOW, sorted(windows))  # sorted: no deadlocks
        except BaseException:
            await self.close()  # a fresh connection for the retry
            raise
        return len(alerts) + len(windows)
