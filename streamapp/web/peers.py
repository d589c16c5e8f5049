"""Requests between workers: signed both ways with the peer key, one hop at most, JSON only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import aiohttp
import orjson
from yarl import URL

from streamapp.settings import Settings

__all__ = [
    "HOPS_HEADER",
    "MAX_HOPS",
    "MAX_PEER_BODY_BYTES",
    "PEER_AUTH_HEADER",
    "PEER_PROOF_HEADER",
    "PEER_TIMEOUT_SECONDS",
    "PeerAnswer",
    "PeerError",
    "hops_of",
    "peer_get",
    "peer_key",
    "sign_request",
    "sign_response",
    "verify_request",
    "verify_response",
]

#: how many times a request has been forwarded; a worker forwards only requests at 0
HOPS_HEADER = "X-Streamapp-Hops"
MAX_HOPS = 1
#: ``<unix seconds>:<nonce>:<hex HMAC>`` of the request (method, path and query, time, nonce)
PEER_AUTH_HEADER = "X-Streamapp-Peer-Auth"
#: hex HMAC of the answer (nonce, status, body): the peer that answered holds the key too
PEER_PROOF_HEADER = "X-Streamapp-Peer-Proof"
PEER_TIMEOUT_SECONDS = 3.0
#: a signed request older (or newer) than this is refused: a captured one cannot be replayed later
MAX_CLOCK_DIFFERENCE_SECONDS = 60.0
#: bigger answers are not relayed (the largest view, 1000 listed sensors, is far smaller)
MAX_PEER_BODY_BYTES = 4 * 1024 * 1024


def peer_key(settings: Settings) -> bytes | None:
    """The key workers of one app share: STREAMAPP_PEER_SECRET, else derived from the web token.

    Derived rather than the token itself, so a request between workers never carries the token.
    None when neither is set: the web API is open and peers are trusted by group membership.
    """
    if settings.peer_secret:
        return settings.peer_secret.encode()
    if settings.web_token:
        return hmac.new(settings.web_token.encode(), b"streamapp peer key v1", hashlib.sha256).digest()
    return None


def _mac(key: bytes, *parts: bytes) -> str:
    return hmac.new(key, b"\n".join(parts), hashlib.sha256).hexdigest()


def sign_request(key: bytes, method: str, path_qs: str, now: float | None = None, nonce: str = "") -> str:
    """The :data:`PEER_AUTH_HEADER` value for a request to ``path_qs`` (path and query, raw)."""
    stamp = str(int(time.time() if now is None else now))
    nonce = nonce or secrets.token_hex(16)
    mac = _mac(key, b"request", method.encode(), path_qs.encode(), stamp.encode(), nonce.encode())
    return f"{stamp}:{nonce}:{mac}"


def verify_request(
    key: bytes, header: str, method: str, path_qs: str, now: float | None = None
) -> str | None:
    """The nonce of a valid :data:`PEER_AUTH_HEADER`, or None (forged, for another path, too old)."""
    try:
        stamp, nonce, given = header.split(":")
        age = abs((time.time() if now is None else now) - int(stamp))
    except ValueError:
        return None
    if age > MAX_CLOCK_DIFFERENCE_SECONDS or not nonce:
        return None
    expected = _mac(key, b"request", method.encode(), path_qs.encode(), stamp.encode(), nonce.encode())
    return nonce if hmac.compare_digest(given.encode(), expected.encode()) else None


def sign_response(key: bytes, nonce: str, status: int, body: bytes) -> str:
    """The :data:`PEER_PROOF_HEADER` value of an answer to the request with ``nonce``."""
    return _mac(key, b"response", nonce.encode(), str(status).encode(), hashlib.sha256(body).digest())


def verify_response(key: bytes, header: str, nonce: str, status: int, body: bytes) -> bool:
    return hmac.compare_digest(header.encode(), sign_response(key, nonce, status, body).encode())


def hops_of(value: str | None) -> int | None:
    """The hop count a request says it has made (absent: 0); None when the header is not a count."""
    if value is None:
        return 0
    return int(value) if value.isdigit() and len(value) < 4 else None


@dataclass(frozen=True)
class PeerAnswer:
    """A peer's JSON answer, checked: relay ``body`` as it is with ``status``."""

    status: int
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


class PeerError(Exception):
    """The peer could not be asked, or its answer cannot be relayed; ``status`` to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def peer_get(
    session: aiohttp.ClientSession,
    url: URL,
    key: bytes | None,
    hops: int = 1,
    wait_seconds: float = PEER_TIMEOUT_SECONDS,
) -> PeerAnswer:
    """GET ``url`` from another worker and check its answer before anything of it is relayed.

    The request carries the hop count and, with a key, a signature instead of the user's token
    (the token never leaves this worker). The answer must be JSON, no bigger than
    :data:`MAX_PEER_BODY_BYTES` and, with a key, signed by a worker holding it; else
    :class:`PeerError` 502. No answer within ``wait_seconds``: :class:`PeerError` 504.
    """
    headers = {HOPS_HEADER: str(hops), "Accept": "application/json"}
    nonce = secrets.token_hex(16)
    if key is not None:
        headers[PEER_AUTH_HEADER] = sign_request(key, "GET", url.raw_path_qs, nonce=nonce)
    where = f"{url.host}:{url.port}"
    try:
        async with session.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=wait_seconds), allow_redirects=False
        ) as response:
            body = await response.content.read(MAX_PEER_BODY_BYTES + 1)
            status, content_type = response.status, response.content_type
            proof = response.headers.get(PEER_PROOF_HEADER, "")
    except TimeoutError:
        raise PeerError(504, f"worker {where} did not answer within {wait_seconds:g} s") from None
    except aiohttp.ClientError as exc:
        raise PeerError(502, f"worker {where} could not be asked: {type(exc).__name__}") from None
    if len(body) > MAX_PEER_BODY_BYTES:
        raise PeerError(502, f"worker {where} answered with more than {MAX_PEER_BODY_BYTES} bytes")
    if key is not None and not verify_response(key, proof, nonce, status, body):
        raise PeerError(502, f"worker {where} did not prove it belongs to the app")
    if content_type != "application/json":
        raise PeerError(502, f"worker {where} answered {content_type or 'without a type'}, not JSON")
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PeerError(502, f"worker {where} answered with malformed JSON") from None
    return PeerAnswer(status, body)
