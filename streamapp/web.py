"""The web API of the contract: health, readiness, metrics and read-only table views."""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.rules import brute_force
from tables.failed_logins_by_ip import failed_logins_by_ip

__all__ = ["get_health", "get_ip", "get_metrics", "get_ready", "is_ready"]


def _not_found(web: View, what: str) -> Response:
    return web.json({"error": f"{what} not found"}, status=404)


def is_ready() -> bool:
    """Recovery of the assigned table partitions is done and no rebalance is under way."""
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # concrete TableManager has it
    return bool(recovery.completed.is_set() and not recovery.in_recovery and not app.rebalancing)


@app.page("/health")
async def get_health(web: View, request: Request) -> Response:
    return web.json({"status": "ok"})


@app.page("/ready")
async def get_ready(web: View, request: Request) -> Response:
    ready = is_ready()
    return web.json({"ready": ready}, status=200 if ready else 503)


@app.page("/metrics")
async def get_metrics(web: View, request: Request) -> Response:
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/ips/{ip}")
@app.table_route(table=failed_logins_by_ip, match_info="ip")
async def get_ip(web: View, request: Request, ip: str) -> Response:
    state: dict[str, Any] | None = failed_logins_by_ip.get(ip.encode())
    size = brute_force.BUCKET_SECONDS
    horizon = worker_clock.horizon
    buckets = [b for b in (state or {}).get("buckets", []) if b[0] + size > horizon]
    if not buckets:
        return _not_found(web, f"ip {ip!r}")
    since = time.time() - brute_force.WINDOW_SECONDS
    return web.json(
        {
            "ip": ip,
            "failed_logins_60s": int(sum(n for start, n in buckets if start + size > since)),
            "windows": [
                {"start": start, "end": start + size, "failed": int(n)} for start, n in reversed(buckets)
            ],
        }
    )
