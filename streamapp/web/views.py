"""The web API of the contract: health, readiness, metrics and read-only table views."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from faust.exceptions import ValueDecodeError
from faust.types import CollectionT
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from streamapp.app import app, settings
from streamapp.detections.operators import IP_DETECTIONS, SENSOR_DETECTIONS, retention_horizon, running_spec
from streamapp.models import MAX_ID_CHARS, id_problem
from streamapp.observability.liveness import StallWatchdog
from streamapp.rules import card_fraud, price_analytics, sliding_count, temperature
from streamapp.runtime.clock import worker_clock
from streamapp.runtime.dependencies import degraded
from streamapp.web.peers import HOPS_HEADER, MAX_HOPS, PeerError, hops_of, peer_get, peer_key
from streamapp.web.recent_alerts import recent_alerts
from tables.detection_state import detection_state, registry
from tables.prices_by_symbol import prices_by_symbol
from tables.users_by_name import users_by_name

__all__ = [
    "get_alerts",
    "get_card",
    "get_health",
    "get_ip",
    "get_live",
    "get_metrics",
    "get_ready",
    "get_sensor",
    "get_stock",
    "get_user",
    "is_ready",
    "owner_of",
    "routed",
    "spec_state",
    "watchdog",
]

logger = logging.getLogger(__name__)

_MAX_ALERTS = 1000
Handler = Callable[..., Awaitable[Response]]

#: fed every few seconds by streamapp.observability.monitoring; GET /live reads it
watchdog = StallWatchdog(settings.stall_seconds)
#: signs requests to other workers and checks their answers (None: no token, no peer secret)
PEER_KEY = peer_key(settings)

ViewHandler = Callable[..., Awaitable[Response]]


def _ident(url: URL) -> tuple[str, int]:
    return ((url.host if url.scheme else url.path) or "", int(url.port or 80))


def owner_of(table: CollectionT, key: str) -> URL | None:
    """The web URL of the worker that holds ``key`` of ``table``; None when it is this one."""
    owner: URL = app.router.key_store(table.name, key)
    if _ident(owner) == _ident(URL(str(app.conf.canonical_url))):
        return None
    return owner if owner.scheme else URL(f"http://{owner.path}")


def routed(table: CollectionT, match_info: str) -> Callable[[ViewHandler], ViewHandler]:
    """Answer here when this worker holds the key of ``table``, else relay the owner's answer
    (faust's ``table_route``, with the peer key, a timeout, one hop at most and JSON only).

    ``detection-state`` is partitioned by the entity alone (see agents.run_detections): a view's
    entity routes to the worker that holds every detection's state of it.
    """

    def decorate(fun: ViewHandler) -> ViewHandler:
        @wraps(fun)
        async def get(view: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                owner = owner_of(table, request.match_info[match_info])
            except KeyError:  # no assignment yet (faust answers ServiceUnavailable too)
                return view.json({"error": "no worker holds this key yet; retry"}, status=503)
            if owner is None:
                return await fun(view, request, *args, **kwargs)
            if (hops_of(request.headers.get(HOPS_HEADER)) or 0) >= MAX_HOPS:
                # forwarded to us, yet another worker holds it: partitions moved in between
                return view.json({"error": "the key is moving between workers; retry"}, status=503)
            # the path and query exactly as they came (decoding and encoding again could change them)
            raw_path: str = request.raw_path  # type: ignore[attr-defined]  # an aiohttp request
            target = URL(str(owner.origin()) + raw_path, encoded=True)
            try:
                answer = await peer_get(app.http_client, target, PEER_KEY)
            except PeerError as exc:
                logger.warning("forwarding %r: %s", raw_path, exc)
                return view.json({"error": str(exc)}, status=exc.status)
            return view.bytes(answer.body, content_type="application/json", status=answer.status)

        return get

    return decorate


def _not_found(web: View, what: str) -> Response:
    return web.json({"error": f"{what} not found"}, status=404)


def _bad_id(value: str) -> str | None:
    """Why no event could have ``value`` as its entity id (the parsers refuse it), or None."""
    if len(value) > MAX_ID_CHARS:
        return f"longer than {MAX_ID_CHARS} characters"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "not UTF-8 text"
    return id_problem(value)


def _checked_id(param: str) -> Callable[[Handler], Handler]:
    """Answer 400 for a key no event can have, before any lookup or forwarding to a peer.

    Such keys would read faust's own entries (``__faust...``), not a state: a 500 before.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def view(web: View, request: Request, **kwargs: Any) -> Response:
            problem = _bad_id(request.match_info[param])
            if problem is not None:
                return web.json({"error": f"bad {param}: {problem}"}, status=400)
            return await handler(web, request, **kwargs)

        return view

    return decorate


def _state(table: Any, key: str) -> dict[str, Any] | None:
    """The stored state of ``key``; None when absent or not JSON (restored from a changelog record
    someone else wrote: the key's next event replaces it; until then the key is unknown, rather
    than a 500 with a traceback logged at every request)."""
    try:
        state: dict[str, Any] | None = table.get(key.encode())
    except ValueDecodeError:
        logger.warning("the stored state of %r in table %s is not JSON: not shown", key[:200], table.name)
        return None
    return state


def spec_state(name: str, entity: str) -> dict[str, Any] | None:
    """The state of the running detection ``name`` about ``entity``, if it has one of its version's
    shape (a new window or key starts states afresh: an older one is not what runs); None while
    ``name`` does not run."""
    engine = registry.engines.get(name)
    state = _state(detection_state, f"{name}\x00{entity}")
    if engine is None or not isinstance(state, dict) or state.get("shape") != engine.shape:
        return None
    clock = state.get("clock")
    if isinstance(clock, int | float) and clock > time.time() + settings.max_clock_skew_seconds:
        return None  # forged (its key's next event replaces it): it would hide the key's real events
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


@app.page("/live")
async def get_live(web: View, request: Request) -> Response:
    """200 while every owned partition progresses; 503 naming those that wait without progress."""
    live, body = watchdog.report()
    return web.json(body, status=200 if live else 503)


@app.page("/metrics")
async def get_metrics(web: View, request: Request) -> Response:
    return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])


@app.page("/ips/{ip:[^/]+}")
@_checked_id("ip")
@routed(detection_state, "ip")
async def get_ip(web: View, request: Request, ip: str) -> Response:
    horizon = worker_clock.horizon
    name = running_spec(IP_DETECTIONS, registry.engines)
    state = spec_state(name, ip) if name is not None else None
    if state is not None:  # it keeps the retention of the IP's own clock (streamapp.detections.operators)
        horizon = retention_horizon(state, horizon, settings.retention_seconds)
    size = sliding_count.BUCKET_SECONDS
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


@app.page("/sensors/{sensor_id:[^/]+}")
@_checked_id("sensor_id")
@routed(detection_state, "sensor_id")
async def get_sensor(web: View, request: Request, sensor_id: str) -> Response:
    horizon = worker_clock.horizon
    # either temperature spec keeps the sensor's windows and last reading (the rule's state)
    name = running_spec(SENSOR_DETECTIONS, registry.engines)
    state = spec_state(name, sensor_id) if name is not None else None
    if state is not None:
        horizon = retention_horizon(state, horizon, settings.retention_seconds)
    windows = temperature.window_view(state, horizon) if state else []
    if not state or not windows:
        return _not_found(web, f"sensor {sensor_id!r}")
    ts, reading = state["last"]
    return web.json({"sensor_id": sensor_id, "last": {"ts": ts, "temperature": reading}, "windows": windows})


@app.page("/cards/{card_id:[^/]+}")
@_checked_id("card_id")
@routed(detection_state, "card_id")
async def get_card(web: View, request: Request, card_id: str) -> Response:
    answer = _card_from_specs(card_id, time.time() - sliding_count.WINDOW_SECONDS)
    if answer is None:
        return _not_found(web, f"card {card_id!r}")
    recent, count, total = answer
    mean = total / count if total is not None else None
    return web.json({"card_id": card_id, "transactions_60s": recent, "count": count, "mean_amount": mean})


def _card_from_specs(card_id: str, since: float) -> tuple[int, int, float | None] | None:
    """(transactions in the last 60 s, count, sum of amounts) of a card from the running card specs'
    states: the recent count from ``card_velocity``'s buckets, the count and sum from
    ``amount_spike``'s totals (judged and held). Without ``amount_spike``: the transactions
    ``card_velocity`` keeps (its retention) and no sum. None: neither knows the card."""
    velocity, spike = spec_state("card_velocity", card_id), spec_state("amount_spike", card_id)
    horizon = worker_clock.horizon
    recent = 0
    if velocity is not None:
        recent = card_fraud.transactions_within(velocity, since)
    retention = settings.retention_seconds
    if spike is not None and spike["last"] > retention_horizon(spike, horizon, retention):
        count, total = card_fraud.card_totals(spike)
        if count:
            return recent, count, total
    if velocity is not None:
        size, kept = sliding_count.BUCKET_SECONDS, retention_horizon(velocity, horizon, retention)
        count = int(sum(n for start, n in velocity["buckets"] if start + size > kept))
        if count:
            return recent, count, None
    return None


@app.page("/stocks/{symbol:[^/]+}")
@_checked_id("symbol")
@routed(prices_by_symbol, "symbol")
async def get_stock(web: View, request: Request, symbol: str) -> Response:
    state = _state(prices_by_symbol, symbol)
    if not state or state["ts"] is None or state["ts"] <= worker_clock.horizon:
        return _not_found(web, f"symbol {symbol!r}")
    return web.json(price_analytics.view(symbol, state))


@app.page("/users/{name:[^/]+}")
@_checked_id("name")
@routed(users_by_name, "name")
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
