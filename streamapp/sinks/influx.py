"""InfluxWriter: sensor windows as InfluxDB 1.x line protocol, one POST /write per batch (aiohttp)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlparse

import aiohttp
from aiokafka import ConsumerRecord

from streamapp.sinks.postgres import window_rows

__all__ = ["MEASUREMENT", "InfluxWriter", "InfluxWriteError", "line_protocol", "split_url"]

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


def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def line_protocol(rows: Sequence[tuple[str, float, float, int, float, float, float]]) -> str:
    """One point per window: series (measurement, sensor_id), time = window start in seconds.

    A window written again (a newer update, or the same batch after a retry) has the same
    series and time, so InfluxDB overwrites the point: writes are idempotent by nature.
    """
    return "\n".join(
        f"{MEASUREMENT},sensor_id={_tag(sensor)} count={count}i,min={low!r},max={high!r},mean={mean!r},"
        f"window_end={int(end)}i {int(start)}"
        for sensor, start, end, count, low, high, mean in rows
    )


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

    async def write(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> int:
        rows = window_rows(records)
        if not rows:
            return 0
        if self._session is None or self._session.closed or not self._database_ready:
            await self.open()
        assert self._session is not None
        params = {"db": self.database, "precision": "s"}
        body = line_protocol(rows).encode()
        async with self._session.post(f"{self.base_url}/write", params=params, data=body) as response:
            if response.status == 204:
                return len(rows)
            text = (await response.text())[:300]
            if response.status == 400:
                # the points themselves are refused (e.g. a field type conflict): retrying cannot help
                logger.error("influx sink: %d points refused and skipped: %s", len(rows), text)
                return 0
            if response.status == 404:
                self._database_ready = False  # database dropped: created again on the retry
            raise InfluxWriteError(f"write answered {response.status}: {text}")
