"""InfluxWriter: sensor windows as InfluxDB 1.x line protocol, one POST /write per batch (aiohttp)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import aiohttp
from aiokafka import ConsumerRecord

from streamapp.sinks.base import Refusal, RowsRefused, SinkRow
from streamapp.sinks.postgres import window_sink_rows

__all__ = [
    "MEASUREMENT",
    "InfluxWriteError",
    "InfluxWriter",
    "field_key",
    "line_protocol",
    "point_line",
    "split_url",
    "string_field",
    "tag_value",
]

logger = logging.getLogger(__name__)

MEASUREMENT = "sensor_window"
DEFAULT_DATABASE = "streamapp"


class InfluxWriteError(RuntimeError):
    """InfluxDB did not take the batch."""


def split_url(url: str) -> tuple[str, str]:
    """``http://host:8086/db`` -> (``http://host:8086``, ``db``); no path means database ``streamapp``."""
    parsed = urlparse(url)
    database = parsed.path.strip("/") or DEFAULT_DATABASE
    return f"{parsed.scheme}://{parsed.netloc}", database


def tag_value(value: str) -> str:
    """``value`` as an InfluxDB 1.x tag value (or tag key, or field key), read back exactly.

    1.x treats a comma, space or equals sign right after a backslash as escaped, and unescapes
    only those three; every other backslash is taken as it is (``a\\b`` is stored as written).
    So: those three characters get a backslash, backslashes are left alone, and what 1.x cannot
    carry at all is refused with the reason (ValueError): an empty value, a newline (it ends the
    line), and a backslash at the end (it would escape the separator after it).
    """
    if not value:
        raise ValueError("an empty value cannot be an InfluxDB tag")
    if "\n" in value:
        raise ValueError("InfluxDB line protocol cannot carry a newline in a tag")
    if value.endswith("\\"):
        raise ValueError("InfluxDB 1.x line protocol cannot carry a backslash at the end of a tag")
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def field_key(name: str) -> str:
    """A field key: escaped as a tag value."""
    return tag_value(name)


def string_field(value: str) -> str:
    """A string field value, double-quoted: backslashes and double quotes get a backslash.

    Inside the quotes everything else, newlines included, is taken as it is.
    """
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def point_line(row: Sequence[Any]) -> str:
    """One point per window: series (measurement, sensor_id), time = window start in seconds.

    A window written again (a newer update, or the same batch after a retry) has the same
    series and time, so InfluxDB overwrites the point: writes are idempotent by nature.
    ValueError when the sensor id cannot be a tag (see :func:`tag_value`).
    """
    sensor, start, end, count, low, high, mean = row
    if not all(math.isfinite(x) for x in (start, end, low, high, mean)):
        raise ValueError("InfluxDB cannot store a non-finite number")
    return (
        f"{MEASUREMENT},sensor_id={tag_value(sensor)} count={count}i,min={low!r},max={high!r},mean={mean!r},"
        f"window_end={int(end)}i {int(start)}"
    )


def line_protocol(rows: Sequence[Sequence[Any]]) -> str:
    """The points of ``rows`` (see :func:`point_line`), one line each."""
    return "\n".join(point_line(row) for row in rows)


class InfluxWriter:
    """One aiohttp session for the life of the service; the database is created when it opens."""

    name = "influx"

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.base_url, self.database = split_url(url)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._database_ready = False

    async def open(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        self._database_ready = False
        await self._ensure_database()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _ensure_database(self) -> None:
        assert self._session is not None
        query = f'CREATE DATABASE "{self.database}"'  # a no-op when it exists
        async with self._session.post(f"{self.base_url}/query", data={"q": query}) as response:
            if response.status != 200:
                raise InfluxWriteError(f"CREATE DATABASE answered {response.status}: {await response.text()}")
        self._database_ready = True

    def rows(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> tuple[list[SinkRow], list[Refusal]]:
        rows, refused = window_sink_rows(records)
        points: list[SinkRow] = []
        for row in rows:
            try:
                points.append(SinkRow(row.record, (point_line(row.values),), "point"))
            except (ValueError, TypeError, OverflowError) as exc:
                refused.append((row.record, f"influx sink: {exc}"))
        return points, refused

    async def write(self, rows: Sequence[SinkRow]) -> int:
        if not rows:
            return 0
        if self._session is None or self._session.closed or not self._database_ready:
            await self.open()
        assert self._session is not None
        params = {"db": self.database, "precision": "s"}
        body = "\n".join(row.values[0] for row in rows).encode()
        async with self._session.post(f"{self.base_url}/write", params=params, data=body) as response:
            if response.status == 204:
                return len(rows)
            text = (await response.text())[:300]
            if response.status == 400:
                # the points themselves are refused (unable to parse, a field type conflict)
                raise RowsRefused(f"InfluxDB answered 400: {text.strip()}")
            if response.status == 404:
                self._database_ready = False  # database dropped: created again on the retry
            raise InfluxWriteError(f"write answered {response.status}: {text}")
