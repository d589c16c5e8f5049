"""The bearer token on the web API: an aiohttp middleware, constant-time comparison."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["OPEN_PATHS", "token_middleware"]

#: answered without the token: probes, scrapes, and the live page's static HTML shell (it holds no
#: data; the requests it makes for data carry the token from the page's URL fragment)
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_middleware(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Refuse every request but :data:`OPEN_PATHS` without ``Authorization: Bearer <token>`` (401)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode(errors="surrogateescape")
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"error": "missing or wrong bearer token (Authorization: Bearer <STREAMAPP_WEB_TOKEN>)"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="streamapp"'},
            )
        return await handler(request)

    return require_token
