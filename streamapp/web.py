"""The web API of the contract: health, readiness, metrics and read-only table views."""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamapp.app import app
from streamapp.clock import worker_clock
from streamapp.dependencies import degraded
from streamapp.recent_alerts import recent_alerts
from streamapp.rules import card_fraud, price_analytics, sliding_count, temperature
from tables.failed_logins_by_ip import failed_logins_by_ip
from tables.prices_by_symbol import prices_by_symbol
from tables.temperature_by_sensor import temperature_by_sensor
from tables.transactions_by_card import transactions_by_card
from tables.users_by_name import users_by_name

__all__ = [
    "get_alerts",
    "get_card",
    "get_health",
    "get_ip",
    "get_metrics",
    "get_ready",
    "get_sensor",
    "get_stock",
    "get_user",
    "is_ready",
]

_MAX_ALERTS = 1000


def _not_found(web: View, what: str) -> Response:
    return web.json({"error": f"{what} not found"}, status=404)


def _state(table: Any, key: str) -> dict[str, Any] | None:
    state: dict[str, Any] | None = table.get(key.encode())
    return state


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
    # a dependency that is down pauses only what needs it: still ready, but say what waits
    return web.json({"ready": ready, "degraded": degraded()}, status=200 if ready else 503)


@app.page("/metrics")
async def get_metrics(web: View, request: Request) -> Response:
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/ips/{ip}")
@app.table_route(table=failed_logins_by_ip, match_info="ip")
async def get_ip(web: View, request: Request, ip: str) -> Response:
    state = _state(failed_logins_by_ip, ip)
    size = sliding_count.BUCKET_SECONDS
    horizon = worker_clock.horizon
    buckets = [b for b in (state or {}).get("buckets", []) if b[0] + size > horizon]
    if not buckets:
        return _not_found(web, f"ip {ip!r}")
    since = time.time() - sliding_count.WINDOW_SECONDS
    return web.json(
        {
            "ip": ip,
            "failed_logins_60s": int(sum(n for start, n in buckets if start + size > since)),
            "windows": [
                {"start": start, "end": start + size, "failed": int(n)} for start, n in reversed(buckets)
            ],
        }
    )


@app.page("/sensors/{sensor_id}")
@app.table_route(table=temperature_by_sensor, match_info="sensor_id")
async def get_sensor(web: View, request: Request, sensor_id: str) -> Response:
    state = _state(temperature_by_sensor, sensor_id)
    windows = temperature.window_view(state, worker_clock.horizon) if state else []
    if not state or not windows:
        return _not_found(web, f"sensor {sensor_id!r}")
    ts, reading = state["last"]
    return web.json({"sensor_id": sensor_id, "last": {"ts": ts, "temperature": reading}, "windows": windows})


@app.page("/cards/{card_id}")
@app.table_route(table=transactions_by_card, match_info="card_id")
async def get_card(web: View, request: Request, card_id: str) -> Response:
    state = _state(transactions_by_card, card_id)
    if not state or not state["count"] or state["last"] <= worker_clock.horizon:
        return _not_found(web, f"card {card_id!r}")
    return web.json(
        {
            "card_id": card_id,
            "transactions_60s": card_fraud.transactions_within(
                state, time.time() - sliding_count.WINDOW_SECONDS
            ),
            "count": state["count"],
            "mean_amount": state["sum"] / state["count"],
        }
    )


@app.page("/stocks/{symbol}")
@app.table_route(table=prices_by_symbol, match_info="symbol")
async def get_stock(web: View, request: Request, symbol: str) -> Response:
    state = _state(prices_by_symbol, symbol)
    if not state or state["ts"] is None or state["ts"] <= worker_clock.horizon:
        return _not_found(web, f"symbol {symbol!r}")
    return web.json(price_analytics.view(symbol, state))


@app.page("/users/{name}")
@app.table_route(table=users_by_name, match_info="name")
async def get_user(web: View, request: Request, name: str) -> Response:
    state = _state(users_by_name, name)
    if not state or "record" not in state:
        return _not_found(web, f"user {name!r}")
    return web.json(
        {"name": name, "schema_id": state["schema_id"], "ts": state["ts"], "record": state["record"]}
    )


@app.page("/alerts")
async def get_alerts(web: View, request: Request) -> Response:
    query = request.query
    try:
        limit = int(query.get("limit", "100"))
        if not 1 <= limit <= _MAX_ALERTS:
            raise ValueError
    except ValueError:
        return web.json({"error": f"limit must be an integer 1-{_MAX_ALERTS}"}, status=400)
    alerts = recent_alerts.query(query.get("kind") or None, query.get("key") or None, limit)
    return web.json({"alerts": alerts})
