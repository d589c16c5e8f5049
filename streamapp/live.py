"""The live page (`GET /`) and what its charts read: `/sensors`, `/stocks`, `/alerts/per-minute`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import aiohttp
import orjson
from faust.web import Request, Response, View

from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.recent_alerts import recent_alerts
from streamapp.rules import price_analytics, temperature
from tables.prices_by_symbol import prices_by_symbol
from tables.temperature_by_sensor import temperature_by_sensor

__all__ = [
    "alerts_per_minute",
    "get_alerts_per_minute",
    "get_live_page",
    "get_sensors",
    "get_stocks",
    "local_sensors",
    "local_stocks",
    "other_workers",
]

logger = logging.getLogger(__name__)

_MAX_SENSORS = 1000
_MAX_STOCKS = 100
_MAX_MINUTES = 120
_PEER_TIMEOUT_SECONDS = 1.5


def _live_page_html() -> str:
    return resources.files("streamapp").joinpath("live.html").read_text(encoding="utf-8")


def local_sensors() -> list[dict[str, Any]]:
    """The newest window and last reading of every sensor in this worker's active partitions."""
    horizon = worker_clock.horizon
    found = []
    for key, state in temperature_by_sensor.items():
        if not isinstance(key, bytes) or key.startswith(b"__faust") or not isinstance(state, dict):
            continue
        windows = temperature.window_view(state, horizon)
        if not windows:
            continue
        ts, reading = state["last"]
        found.append(
            {
                "sensor_id": key.decode(errors="replace"),
                "last": {"ts": ts, "temperature": reading},
                "window": windows[0],
                "worker": str(app.conf.canonical_url).rstrip("/"),
            }
        )
    return found


def other_workers() -> list[str]:
    """Base URLs of the other workers of this app, from the partition assignor's table metadata."""
    own = str(app.conf.canonical_url).rstrip("/")
    urls = set()
    for host in app.router.tables_metadata():
        url = (host if "://" in host else f"http://{host}").rstrip("/")
        if url != own:
            urls.add(url)
    return sorted(urls)


def local_stocks() -> list[dict[str, Any]]:
    """Every symbol of this worker's active partitions: the web API's view plus the last 60 s of ticks."""
    horizon = worker_clock.horizon
    found = []
    for key, state in prices_by_symbol.items():
        if not isinstance(key, bytes) or key.startswith(b"__faust") or not isinstance(state, dict):
            continue
        if state.get("ts") is None or state["ts"] <= horizon:
            continue
        view = price_analytics.view(key.decode(errors="replace"), state)
        view["ticks"] = [[ts, price] for ts, price in state.get("recent") or []]
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


async def _peer_list(url: str, path: str, field: str, limit: int, headers: dict[str, str]) -> list[Any]:
    timeout = aiohttp.ClientTimeout(total=_PEER_TIMEOUT_SECONDS)
    async with app.http_client.get(
        f"{url}{path}", params={"scope": "local", "limit": str(limit)}, headers=headers, timeout=timeout
    ) as response:
        response.raise_for_status()
        body = orjson.loads(await response.read())
    found: list[Any] = body[field]
    return found


async def _gather(
    request: Request, path: str, field: str, limit: int, local: Callable[[], list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """This worker's items, and unless ``?scope=local`` every other worker's (each owns its partitions)."""
    items = local()
    workers = {str(app.conf.canonical_url).rstrip("/"): "ok"}
    if request.query.get("scope") != "local":
        headers = {}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        peers = other_workers()
        answers = await asyncio.gather(
            *(_peer_list(url, path, field, limit, headers) for url in peers), return_exceptions=True
        )
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, BaseException):
                workers[url] = f"error: {type(answer).__name__}"
                logger.debug("%s of %s: %r", path, url, answer)
            else:
                workers[url] = "ok"
                items.extend(answer)
    return items, workers


def _limit(request: Request, default: int, most: int) -> int | None:
    try:
        limit = int(request.query.get("limit", str(default)))
    except ValueError:
        return None
    return limit if 1 <= limit <= most else None


@app.page("/sensors")
async def get_sensors(web: View, request: Request) -> Response:
    """``{"sensors": [...], "workers": {url: "ok" | error}}``, newest reading first.

    ``?scope=local`` lists only this worker's sensors; otherwise the other workers are asked too
    (each owns the sensors of its partitions). ``?limit=N`` caps the list (default 200).
    """
    limit = _limit(request, 200, _MAX_SENSORS)
    if limit is None:
        return web.json({"error": f"limit must be an integer 1-{_MAX_SENSORS}"}, status=400)
    sensors, workers = await _gather(request, "/sensors", "sensors", limit, local_sensors)
    unique = {sensor["sensor_id"]: sensor for sensor in sensors}
    ordered = sorted(unique.values(), key=lambda s: (-s["last"]["ts"], s["sensor_id"]))
    return web.json({"sensors": ordered[:limit], "workers": workers})


@app.page("/")
async def get_live_page(web: View, request: Request) -> Response:
    """One self-contained HTML page (inline CSS and JS, no external resources)."""
    return web.html(_live_page_html())


@app.page("/stocks")
async def get_stocks(web: View, request: Request) -> Response:
    """``{"stocks": [...], "workers": {...}}``: every symbol as ``/stocks/{symbol}`` answers, plus
    ``ticks`` (``[[ts, price]]`` of the last 60 s), by symbol; ``?limit=N`` (default 20), ``?scope=local``."""
    limit = _limit(request, 20, _MAX_STOCKS)
    if limit is None:
        return web.json({"error": f"limit must be an integer 1-{_MAX_STOCKS}"}, status=400)
    stocks, workers = await _gather(request, "/stocks", "stocks", limit, local_stocks)
    unique = {stock["symbol"]: stock for stock in stocks}
    return web.json({"stocks": [unique[s] for s in sorted(unique)][:limit], "workers": workers})


@app.page("/alerts/per-minute")
async def get_alerts_per_minute(web: View, request: Request) -> Response:
    """``{"start", "minutes", "kinds": {kind: [count per minute]}}`` of the alerts this worker has seen
    (every worker tails every alert), by event time, for the last ``?minutes=N`` (default 30)."""
    try:
        minutes = int(request.query.get("minutes", "30"))
        if not 1 <= minutes <= _MAX_MINUTES:
            raise ValueError
    except ValueError:
        return web.json({"error": f"minutes must be an integer 1-{_MAX_MINUTES}"}, status=400)
    alerts = recent_alerts.query(None, None, recent_alerts.capacity)
    return web.json(alerts_per_minute(alerts, time.time(), minutes))
