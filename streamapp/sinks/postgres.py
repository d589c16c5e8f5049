"""PostgresWriter: alerts and sensor windows upserted in one transaction per batch (asyncpg)."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from typing import Any, cast

import asyncpg
import orjson
from aiokafka import ConsumerRecord

from streamapp.sinks.base import Refusal, RowsRefused, SinkRow

__all__ = [
    "DATA_ERRORS",
    "SCHEMA",
    "PostgresWriter",
    "alert_rows",
    "alert_sink_rows",
    "connect_kwargs",
    "window_rows",
    "window_sink_rows",
]

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


class _NotARow(ValueError):
    """A record that cannot become a row; the message is the dead-letter reason."""


def _decode(record: ConsumerRecord[bytes, bytes], what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise _NotARow(f"{what} record is not a JSON object")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _rows_of(
    records: Sequence[ConsumerRecord[bytes, bytes]],
    what: str,
    make: Callable[[dict[str, Any]], tuple[Any, ...]],
) -> tuple[list[tuple[ConsumerRecord[bytes, bytes], tuple[Any, ...]]], list[Refusal]]:
    """(record, row) per record; records that cannot be rows, with the reason (one never stops the rest)."""
    rows: list[tuple[ConsumerRecord[bytes, bytes], tuple[Any, ...]]] = []
    refused: list[Refusal] = []
    for record in records:
        try:
            rows.append((record, make(_decode(record, what))))
        except _NotARow as exc:
            refused.append((record, f"sink: {exc}"))
        except KeyError as exc:
            refused.append((record, f"sink: {what} without field {exc}"))
        except (TypeError, ValueError, OverflowError) as exc:
            refused.append((record, f"sink: {what} with a bad field: {type(exc).__name__}: {str(exc)[:200]}"))
        except Exception as exc:  # per-record isolation: a bug here must not stop the batch
            refused.append((record, f"sink: internal error on a {what}: {type(exc).__name__}: {exc}"[:500]))
    return rows, refused


def _alert_row(alert: dict[str, Any]) -> AlertRow:
    return (
        _text(alert["alert_id"]), _text(alert["kind"]), _text(alert["key"]), float(alert["ts"]),
        None if alert.get("window_start") is None else float(alert["window_start"]),
        None if alert.get("window_end") is None else float(alert["window_end"]),
        float(alert["value"]), float(alert["threshold"]), _text(alert.get("detail", "")),
    )  # fmt: skip


def _window_row(window: dict[str, Any]) -> WindowRow:
    return (
        _text(window["sensor_id"]), float(window["start"]), float(window["end"]), int(window["count"]),
        float(window["min"]), float(window["max"]), float(window["mean"]),
    )  # fmt: skip


def alert_sink_rows(records: Sequence[ConsumerRecord[bytes, bytes]]) -> tuple[list[SinkRow], list[Refusal]]:
    """One row per alert_id (the alerts topic may hold an alert twice after a crash)."""
    made, refused = _rows_of(records, "alert", _alert_row)
    rows: dict[str, SinkRow] = {}
    for record, row in made:
        rows[row[0]] = SinkRow(record, row, "alert")
    return list(rows.values()), refused


def window_sink_rows(records: Sequence[ConsumerRecord[bytes, bytes]]) -> tuple[list[SinkRow], list[Refusal]]:
    """The newest update (largest count) of each (sensor, window start) in the batch."""
    made, refused = _rows_of([r for r in records if r.value is not None], "window", _window_row)
    rows: dict[tuple[str, float], SinkRow] = {}
    for record, row in made:
        known = rows.get((row[0], row[1]))
        if known is None or known.values[3] <= row[3]:
            rows[(row[0], row[1])] = SinkRow(record, row, "window")
    return list(rows.values()), refused


def alert_rows(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[AlertRow]:
    """The rows of :func:`alert_sink_rows` (records that cannot be rows left out)."""
    return [cast(AlertRow, row.values) for row in alert_sink_rows(records)[0]]


def window_rows(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[WindowRow]:
    """The rows of :func:`window_sink_rows` (records that cannot be rows left out)."""
    return [cast(WindowRow, row.values) for row in window_sink_rows(records)[0]]


#: errors that mean "the database refused these values", not "the database is not there"
DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,  # class 22: a NUL in text, bad encoding, a number out of range
    asyncpg.exceptions.IntegrityConstraintViolationError,  # class 23
    asyncpg.exceptions.ProgramLimitExceededError,  # class 54: e.g. a value too large for an index
    asyncpg.exceptions._base.DataError,  # asyncpg's own: a value it cannot encode for the column
)


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

    def rows(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> tuple[list[SinkRow], list[Refusal]]:
        alerts, bad_alerts = alert_sink_rows([r for r in records if r.topic == self.alerts_topic])
        windows, bad_windows = window_sink_rows([r for r in records if r.topic == self.windows_topic])
        return alerts + windows, bad_alerts + bad_windows

    async def write(self, rows: Sequence[SinkRow]) -> int:
        alerts = [row.values for row in rows if row.kind == "alert"]
        windows = [row.values for row in rows if row.kind == "window"]
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
        except DATA_ERRORS as exc:
            # the transaction was rolled back; the connection is fine
            raise RowsRefused(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        except BaseException:
            await self.close()  # a fresh connection for the retry
            raise
        return len(alerts) + len(windows)
