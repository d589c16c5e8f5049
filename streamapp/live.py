"""The live page (`GET /`): newest alerts and each sensor's current window, refreshed in the browser."""

from __future__ import annotations

import asyncio
import logging
from importlib import resources
from typing import Any

import aiohttp
import orjson
from faust.web import Request, Response, View

from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.rules import temperature
from tables.temperature_by_sensor import temperature_by_sensor

__all__ = ["get_live_page", "get_sensors", "local_sensors", "other_workers"]

logger = logging.getLogger(__name__)

_MAX_SENSORS = 1000
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


async def _peer_sensors(url: str, limit: int, headers: dict[str, str]) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=_PEER_TIMEOUT_SECONDS)
    async with app.http_client.get(
        f"{url}/sensors", params={"scope": "local", "limit": str(limit)}, headers=headers, timeout=timeout
    ) as response:
        response.raise_for_status()
        body = orjson.loads(await response.read())
    sensors: list[dict[str, Any]] = body["sensors"]
    return sensors


@app.page("/sensors")
async def get_sensors(web: View, request: Request) -> Response:
    """``{"sensors": [...], "workers": {url: "ok" | error}}``, newest reading first.

    ``?scope=local`` lists only this worker's sensors; otherwise the other workers are asked too
    (each owns the sensors of its partitions). ``?limit=N`` caps the list (default 200).
    """
    try:
        limit = int(request.query.get("limit", "200"))
        if not 1 <= limit <= _MAX_SENSORS:
            raise ValueError
    except ValueError:
        return web.json({"error": f"limit must be an integer 1-{_MAX_SENSORS}"}, status=400)
    sensors = local_sensors()
    workers = {str(app.conf.canonical_url).rstrip("/"): "ok"}
    if request.query.get("scope") != "local":
        headers = {}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        peers = other_workers()
        answers = await asyncio.gather(
            *(_peer_sensors(url, limit, headers) for url in peers), return_exceptions=True
        )
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, BaseException):
                workers[url] = f"error: {type(answer).__name__}"
                logger.debug("sensors of %s: %r", url, answer)
            else:
                workers[url] = "ok"
                sensors.extend(answer)
    unique = {sensor["sensor_id"]: sensor for sensor in sensors}
    ordered = sorted(unique.values(), key=lambda s: (-s["last"]["ts"], s["sensor_id"]))
    return web.json({"sensors": ordered[:limit], "workers": workers})


@app.page("/")
async def get_live_page(web: View, request: Request) -> Response:
    """One self-contained HTML page (inline CSS and JS, no external resources)."""
    return web.html(_live_page_html())
