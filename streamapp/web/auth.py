"""Who may call the web API: the bearer token, peers signing with the peer key, the hop limit."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from streamapp.observability.metrics import WEB_ERRORS_TOTAL
from streamapp.web.peers import (
    HOPS_HEADER,
    MAX_HOPS,
    PEER_AUTH_HEADER,
    PEER_PROOF_HEADER,
    hops_of,
    sign_response,
    verify_request,
)

__all__ = ["OPEN_PATHS", "token_middleware", "web_middleware"]

logger = logging.getLogger(__name__)

#: answered without the token: probes, scrapes, and the live page's static HTML shell (it holds no
#: data; the requests it makes for data carry the token from the page's URL fragment)
OPEN_PATHS = frozenset({"/health", "/ready", "/live", "/metrics", "/"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def web_middleware(token: str | None, peer_key: bytes | None) -> Middleware:
    """The one middleware of the web API.

    - A request whose :data:`HOPS_HEADER` is not a count, or more than :data:`MAX_HOPS`: 400.
    - A request signed with the peer key (:data:`PEER_AUTH_HEADER`) comes from a worker of the
      app: it needs no token, and its answer is signed back (:data:`PEER_PROOF_HEADER`) so the
      forwarding worker knows whom it relays. A wrong or stale signature: 401.
    - Otherwise, with a token, every path but :data:`OPEN_PATHS` needs ``Authorization: Bearer``.
    """
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        hops = hops_of(request.headers.get(HOPS_HEADER))
        if hops is None or hops > MAX_HOPS:
            return _error(400, f"{HOPS_HEADER} must be a count of at most {MAX_HOPS} (a forwarding loop?)")
        signature = request.headers.get(PEER_AUTH_HEADER)
        if signature is not None and peer_key is not None:
            nonce = verify_request(peer_key, signature, request.method, request.raw_path)
            if nonce is None:
                return _error(401, "the request is not signed with this app's peer key (or is stale)")
            return _signed(await _answer(request, handler), peer_key, nonce)
        if expected is not None and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode(errors="surrogateescape")
            if not hmac.compare_digest(given, expected):
                return _error(
                    401,
                    "missing or wrong bearer token (Authorization: Bearer <STREAMAPP_WEB_TOKEN>)",
                    **{"WWW-Authenticate": 'Bearer realm="streamapp"'},
                )
        return await _answer(request, handler)

    return guard


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's answer; an HTTP error or a failure as a JSON answer (which can be signed).

    A view that fails on one request (a state it cannot read, say) answers 500 and is logged; the
    next request is served as usual.
    """
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason)
    except Exception:
        logger.exception("%s %r failed", request.method, request.path)
        WEB_ERRORS_TOTAL.inc()
        return _error(500, "internal error (logged by the worker)")


def _signed(response: web.StreamResponse, key: bytes, nonce: str) -> web.StreamResponse:
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes):
        response.headers[PEER_PROOF_HEADER] = sign_response(key, nonce, response.status, body)
    else:  # a streamed answer cannot be signed: the forwarding worker refuses it (502)
        logger.warning("answer to a peer is not a plain body; left unsigned")
    return response


def token_middleware(token: str) -> Middleware:
    """Refuse every request but :data:`OPEN_PATHS` without ``Authorization: Bearer <token>`` (401)."""
    return web_middleware(token, None)
