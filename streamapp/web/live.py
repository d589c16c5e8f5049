"""The live page (`GET /`) and what its charts read: `/sensors`, `/stocks`, `/alerts/per-minute`."""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import logging
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from itertools import islice
from typing import Any

import orjson
from faust.web import Request, Response, View
from yarl import URL

from streamapp.app import app, settings
from streamapp.detections.operators import SENSOR_DETECTIONS, retention_horizon, running_spec
from streamapp.rules import price_analytics, temperature
from streamapp.runtime.clock import worker_clock
from streamapp.web.peers import HOPS_HEADER, PeerError, hops_of, peer_get
from streamapp.web.recent_alerts import recent_alerts
from streamapp.web.views import PEER_KEY
from tables.base import active_partitions
from tables.detection_state import detection_state, registry
from tables.prices_by_symbol import prices_by_symbol

__all__ = [
    "DEFAULT_SENSORS",
    "MAX_SENSORS",
    "SCAN_BUDGET_KEYS",
    "SensorPage",
    "alerts_per_minute",
    "decode_cursor",
    "encode_cursor",
    "get_alerts_per_minute",
    "get_live_page",
    "get_sensors",
    "get_stocks",
    "local_sensors",
    "local_stocks",
    "merge_pages",
    "other_workers",
    "scan_sensors",
]

logger = logging.getLogger(__name__)

DEFAULT_SENSORS = 100
MAX_SENSORS = 1000
#: keys one request may read from this worker's state, listed or not (expired, unreadable): what
#: a request costs is bounded by this, not by the size of the table
SCAN_BUDGET_KEYS = 10 * MAX_SENSORS
#: a cursor is a sensor id (base64url of its key): longer ones are not ids of this app
_MAX_CURSOR_CHARS = 4096
_CURSOR = re.compile(r"[A-Za-z0-9_-]*")
_MAX_STOCKS = 100
_MAX_MINUTES = 120


def _query_int(request: Request, name: str, default: int, most: int) -> int | None:
    """``?name=N`` as an integer 1..``most`` (``default`` when absent); None when it is not one."""
    try:
        value = int(request.query.get(name, str(default)))
    except ValueError:
        return None
    return value if 1 <= value <= most else None


def _live_page_html() -> str:
    return resources.files("streamapp.web").joinpath("live.html").read_text(encoding="utf-8")


def encode_cursor(key: bytes) -> str:
    """The ``next`` cursor after ``key``: opaque to clients (base64url, no padding)."""
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def decode_cursor(cursor: str) -> bytes:
    """The key a cursor stands for; ValueError when it is not a cursor."""
    if len(cursor) > _MAX_CURSOR_CHARS:
        raise ValueError("cursor too long")
    if not _CURSOR.fullmatch(cursor):  # b64decode would drop foreign characters silently
        raise ValueError("not a cursor")
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor") from None


@dataclass
class SensorPage:
    """Sensors in key order after a cursor, and where the scan stopped.

    ``next``: every key up to it has been looked at (None: the source is exhausted); a key after
    it may still be listed by asking again from it.
    """

    sensors: list[dict[str, Any]] = field(default_factory=list)
    next: bytes | None = None


def scan_sensors(
    partitions: Iterable[Iterable[tuple[bytes, bytes]]],
    after: bytes | None,
    limit: int,
    horizon: float,
    worker: str,
    budget: int = SCAN_BUDGET_KEYS,
    shape: Any = None,
) -> SensorPage:
    """Up to ``limit`` sensors with keys after ``after``, reading at most ``budget`` keys.

    ``partitions``: (key, raw value) pairs of each partition's store in key order. They are
    merged lazily, so a request reads only what it lists plus what it skips on the way (faust's
    bookkeeping keys, expired sensors, unreadable values, and with ``shape`` a detection's states
    of another shape: skipped, the unreadable logged). A detection's state keeps the retention of
    its sensor's own clock (streamapp.detections.operators.retention_horizon).
    """
    page = SensorPage()
    merged = heapq.merge(*partitions, key=lambda item: item[0])
    scanned = 0
    for key, raw in merged:
        if after is not None and key <= after:
            continue  # from_key starts at the cursor itself
        scanned += 1
        if key.startswith(b"__faust"):
            pass
        else:
            try:
                state = orjson.loads(raw)
                windows = (
                    temperature.window_view(
                        state, retention_horizon(state, horizon, settings.retention_seconds)
                    )
                    if isinstance(state, dict) and (shape is None or state.get("shape") == shape)
                    else []
                )
                if windows:
                    ts, reading = state["last"]
                    page.sensors.append(
                        {
                            "sensor_id": key.decode(errors="replace"),
                            "last": {"ts": ts, "temperature": reading},
                            "window": windows[0],
                            "worker": worker,
                        }
                    )
            except Exception:  # one unreadable state must not fail the list
                logger.warning("sensor state %r is unreadable; not listed", key[:200], exc_info=True)
        if len(page.sensors) >= limit or scanned >= budget:
            page.next = key
            break
    return page


def merge_pages(pages: Iterable[SensorPage], limit: int) -> SensorPage:
    """One page from the pages of several sources (workers), each in key order after one cursor.

    Keys up to the smallest ``next`` of the sources are complete everywhere: the answer lists
    those, at most ``limit``, and continues from the last listed (or from that smallest ``next``).
    """
    pages = list(pages)
    bounds = [page.next for page in pages if page.next is not None]
    bound = min(bounds) if bounds else None
    found = sorted((s for page in pages for s in page.sensors if bound is None or _key(s) <= bound), key=_key)
    if len(found) > limit:
        return SensorPage(found[:limit], _key(found[limit - 1]))
    return SensorPage(found, bound)


def _key(sensor: dict[str, Any]) -> bytes:
    return str(sensor["sensor_id"]).encode(errors="surrogateescape")


def local_sensors(after: bytes | None = None, limit: int = DEFAULT_SENSORS) -> SensorPage:
    """Sensors of this worker's active partitions, in key order after ``after``: a running
    temperature spec's (streamapp.detections.operators.running_spec); none while neither runs."""
    worker = str(app.conf.canonical_url).rstrip("/")
    name = running_spec(SENSOR_DETECTIONS, registry.engines)
    if name is None:
        return SensorPage()
    prefix = f"{name}\x00".encode()
    specs = [_entities(db, prefix, after) for _, db in active_partitions(detection_state)]
    return scan_sensors(specs, after, limit, worker_clock.horizon, worker, shape=registry.engines[name].shape)


def _entities(db: Any, prefix: bytes, after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """(entity, raw state) of one detection's keys ``prefix + entity`` in a partition's store, in
    key order from the entity ``after`` (the store holds every detection's keys, sorted by name)."""
    for key, raw in db.items(from_key=prefix + (after or b"")):
        if not key.startswith(prefix):
            return
        yield key[len(prefix) :], raw


def other_workers() -> list[str]:
    """Base URLs of the other workers of this app, from the partition assignor's table metadata."""
    own = str(app.conf.canonical_url).rstrip("/")
    urls = set()
    for host in app.router.tables_metadata():
        url = (host if "://" in host else f"http://{host}").rstrip("/")
        if url != own:
            urls.add(url)
    return sorted(urls)


async def _peer_sensors(url: str, limit: int, cursor: str | None) -> SensorPage:
    query = {"scope": "local", "limit": str(limit), **({"cursor": cursor} if cursor else {})}
    answer = await peer_get(app.http_client, URL(f"{url}/sensors").with_query(query), PEER_KEY)
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("sensors"), list):
        raise PeerError(502, f"{url} answered {answer.status} without a sensor list")
    nxt = body.get("next")
    sensors = [s for s in body["sensors"] if isinstance(s, dict) and isinstance(s.get("sensor_id"), str)]
    return SensorPage(sensors[:limit], decode_cursor(nxt) if isinstance(nxt, str) else None)


@app.page("/sensors")
async def get_sensors(web: View, request: Request) -> Response:
    """``{"sensors": [...], "workers": {url: "ok" | error}, "next": cursor | null}``, by sensor id.

    ``?limit=N`` (default 100, at most 1000) sensors after ``?cursor=`` (the ``next`` of the page
    before). ``?scope=local`` lists only this worker's sensors; otherwise the other workers are
    asked too (each owns the sensors of its partitions). Each worker reads a bounded number of
    keys per request, whatever the size of its table.
    """
    limit = _query_int(request, "limit", DEFAULT_SENSORS, MAX_SENSORS)
    if limit is None:
        return web.json({"error": f"limit must be an integer 1-{MAX_SENSORS}"}, status=400)
    cursor = request.query.get("cursor") or None
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError:
        return web.json({"error": "cursor must be the next value of an earlier page"}, status=400)
    pages = [local_sensors(after, limit)]
    workers = {str(app.conf.canonical_url).rstrip("/"): "ok"}
    forwarded = (hops_of(request.headers.get(HOPS_HEADER)) or 0) > 0
    if request.query.get("scope") != "local" and not forwarded:
        peers = other_workers()
        answers = await asyncio.gather(
            *(_peer_sensors(url, limit, cursor) for url in peers), return_exceptions=True
        )
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, BaseException):
                workers[url] = (
                    f"error: {answer}" if isinstance(answer, PeerError) else f"error: {type(answer).__name__}"
                )
                logger.debug("sensors of %s: %r", url, answer)
            else:
                workers[url] = "ok"
                pages.append(answer)
    page = merge_pages(pages, limit)
    return web.json(
        {
            "sensors": page.sensors,
            "workers": workers,
            "next": encode_cursor(page.next) if page.next is not None else None,
        }
    )


def local_stocks(limit: int = _MAX_STOCKS) -> list[dict[str, Any]]:
    """Symbols of this worker's active partitions (at most ``limit``, reading a bounded number of
    keys): the web API's view plus the last 60 s of ticks."""
    horizon = worker_clock.horizon
    found: list[dict[str, Any]] = []
    for _, db in active_partitions(prices_by_symbol):
        for key, raw in islice(db.items(), SCAN_BUDGET_KEYS):
            if len(found) >= limit:
                return found
            if key.startswith(b"__faust"):
                continue
            try:
                state = orjson.loads(raw)
                if not isinstance(state, dict) or state.get("ts") is None or state["ts"] <= horizon:
                    continue
                view = price_analytics.view(key.decode(errors="replace"), state)
                view["ticks"] = [[ts, price] for ts, price in state.get("recent") or []]
            except Exception:  # one unreadable state must not fail the list
                logger.warning("price state %r is unreadable; not listed", key[:200], exc_info=True)
                continue
            found.append(view)
    return found


def alerts_per_minute(alerts: list[dict[str, Any]], now: float, minutes: int) -> dict[str, Any]:
    """Alerts counted per minute of event time and per kind, for the ``minutes`` up to ``now``."""
    end = (now // 60 + 1) * 60
    start = end - minutes * 60
    kinds: dict[str, list[int]] = {}
    for alert in alerts:
        ts = alert.get("ts")
        if not isinstance(ts, (int, float)) or not start <= ts < end:
            continue
        counts = kinds.setdefault(str(alert.get("kind")), [0] * minutes)
        counts[int((ts - start) // 60)] += 1
    return {"start": start, "minutes": minutes, "kinds": dict(sorted(kinds.items()))}


async def _peer_stocks(url: str, limit: int) -> list[dict[str, Any]]:
    query = {"scope": "local", "limit": str(limit)}
    answer = await peer_get(app.http_client, URL(f"{url}/stocks").with_query(query), PEER_KEY)
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("stocks"), list):
        raise PeerError(502, f"{url} answered {answer.status} without a stock list")
    return [s for s in body["stocks"] if isinstance(s, dict) and isinstance(s.get("symbol"), str)][:limit]


@app.page("/stocks")
async def get_stocks(web: View, request: Request) -> Response:
    """``{"stocks": [...], "workers": {...}}``: every symbol as ``/stocks/{symbol}`` answers, plus
    ``ticks`` (``[[ts, price]]`` of the last 60 s), by symbol; ``?limit=N`` (default 20), ``?scope=local``."""
    limit = _query_int(request, "limit", 20, _MAX_STOCKS)
    if limit is None:
        return web.json({"error": f"limit must be an integer 1-{_MAX_STOCKS}"}, status=400)
    stocks = local_stocks(limit)
    workers = {str(app.conf.canonical_url).rstrip("/"): "ok"}
    forwarded = (hops_of(request.headers.get(HOPS_HEADER)) or 0) > 0
    if request.query.get("scope") != "local" and not forwarded:
        peers = other_workers()
        answers = await asyncio.gather(*(_peer_stocks(url, limit) for url in peers), return_exceptions=True)
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, BaseException):
                workers[url] = f"error: {type(answer).__name__}"
                logger.debug("stocks of %s: %r", url, answer)
            else:
                workers[url] = "ok"
                stocks.extend(answer)
    unique = {stock["symbol"]: stock for stock in stocks}
    return web.json({"stocks": [unique[s] for s in sorted(unique)][:limit], "workers": workers})


@app.page("/alerts/per-minute")
async def get_alerts_per_minute(web: View, request: Request) -> Response:
    """``{"start", "minutes", "kinds": {kind: [count per minute]}}`` of the alerts this worker has seen
    (every worker tails every alert), by event time, for the last ``?minutes=N`` (default 30)."""
    minutes = _query_int(request, "minutes", 30, _MAX_MINUTES)
    if minutes is None:
        return web.json({"error": f"minutes must be an integer 1-{_MAX_MINUTES}"}, status=400)
    alerts = recent_alerts.query(None, None, recent_alerts.capacity)
    return web.json(alerts_per_minute(alerts, time.time(), minutes))


@app.page("/")
async def get_live_page(web: View, request: Request) -> Response:
    """One self-contained HTML page (inline CSS and JS, no external resources)."""
    return web.html(_live_page_html())
