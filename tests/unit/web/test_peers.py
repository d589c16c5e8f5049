"""Requests between workers: the peer key both ways, the hop limit, a timeout, JSON-only relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from streamapp.settings import load_settings
from streamapp.web.auth import web_middleware
from streamapp.web.peers import (
    HOPS_HEADER,
    PEER_AUTH_HEADER,
    PEER_PROOF_HEADER,
    PeerError,
    peer_get,
    peer_key,
    sign_request,
    verify_request,
)

TOKEN = "token-0123456789abcdef"
KEY = peer_key(load_settings({"STREAMAPP_WEB_TOKEN": TOKEN}))


def test_the_peer_key_comes_from_the_peer_secret_or_the_token_never_is_the_token() -> None:
    assert KEY is not None and TOKEN.encode() not in KEY
    assert peer_key(load_settings({"STREAMAPP_WEB_TOKEN": TOKEN})) == KEY  # every worker derives it
    secret = "peer-secret-0123456789"
    assert peer_key(load_settings({"STREAMAPP_WEB_TOKEN": TOKEN, "STREAMAPP_PEER_SECRET": secret})) == (
        secret.encode()
    )
    assert peer_key(load_settings({})) is None


def test_a_signature_holds_only_for_its_key_method_path_and_time() -> None:
    assert KEY is not None
    header = sign_request(KEY, "GET", "/ips/1.2.3.4?x=1", now=1000.0, nonce="n1")
    assert verify_request(KEY, header, "GET", "/ips/1.2.3.4?x=1", now=1010.0) == "n1"
    assert verify_request(b"another app's key", header, "GET", "/ips/1.2.3.4?x=1", now=1010.0) is None
    assert verify_request(KEY, header, "GET", "/ips/5.6.7.8?x=1", now=1010.0) is None
    assert verify_request(KEY, header, "POST", "/ips/1.2.3.4?x=1", now=1010.0) is None
    assert verify_request(KEY, header, "GET", "/ips/1.2.3.4?x=1", now=1000.0 + 3600) is None  # replayed
    for forged in ("", "1000:n1", "x:n1:00", f"1000::{header.rsplit(':', 1)[1]}"):
        assert verify_request(KEY, forged, "GET", "/ips/1.2.3.4?x=1", now=1010.0) is None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(routes: dict[str, Handler], token: str | None, key: bytes | None) -> TestClient:
    application = web.Application(middlewares=[web_middleware(token, key)])
    for path, handler in routes.items():
        application.router.add_get(path, handler)
    client = TestClient(TestServer(application))
    await client.start_server()
    return client


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path, "hops": request.headers.get(HOPS_HEADER)})


async def _html(request: web.Request) -> web.Response:
    return web.Response(text="<script>alert(1)</script>", content_type="text/html")


async def _bad_json(request: web.Request) -> web.Response:
    return web.Response(text="{not json", content_type="application/json")


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({})


async def _fails(request: web.Request) -> web.Response:
    raise KeyError("a view that breaks on one request")


@asynccontextmanager
async def _peer() -> AsyncIterator[TestClient]:
    """A worker of this app (in the test's own event loop: pytest-asyncio fixtures run in another)."""
    routes = {"/ips/{ip}": _json, "/html": _html, "/bad": _bad_json, "/slow": _slow, "/fails": _fails}
    client = await _serve(routes, TOKEN, KEY)
    try:
        yield client
    finally:
        await client.close()


def _url(client: TestClient, path: str) -> URL:
    return URL(str(client.make_url(path)))


async def test_a_peer_signed_request_needs_no_token_and_its_answer_is_proven() -> None:
    async with _peer() as peer:
        async with aiohttp.ClientSession() as session:
            answer = await peer_get(session, _url(peer, "/ips/1.2.3.4"), KEY)
        assert answer.status == 200 and answer.json() == {"path": "/ips/1.2.3.4", "hops": "1"}


async def test_a_worker_of_another_app_or_no_key_gets_nothing() -> None:
    async with _peer() as peer:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(PeerError) as refused:  # its signature fails: 401, unsigned, so 502 here
                await peer_get(session, _url(peer, "/ips/1.2.3.4"), b"not this app's key")
            assert refused.value.status == 502 and "did not prove" in str(refused.value)
            # a worker without the key is just a client without the token
            assert (await peer_get(session, _url(peer, "/ips/1.2.3.4"), None)).status == 401
        response = await peer.get("/ips/1.2.3.4", headers={PEER_AUTH_HEADER: "1:2:3", HOPS_HEADER: "1"})
        assert response.status == 401 and "peer key" in (await response.json())["error"]


async def test_a_member_that_cannot_prove_it_belongs_is_not_relayed() -> None:
    """An impostor registered as a member answers: without the key its answer is refused."""
    impostor = await _serve({"/ips/{ip}": _json}, None, None)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(PeerError) as refused:
                await peer_get(session, _url(impostor, "/ips/1.2.3.4"), KEY)
    finally:
        await impostor.close()
    assert refused.value.status == 502 and "did not prove it belongs" in str(refused.value)


async def test_only_json_is_relayed() -> None:
    async with _peer() as peer:
        async with aiohttp.ClientSession() as session:
            for path, why in (("/html", "text/html, not JSON"), ("/bad", "malformed JSON")):
                with pytest.raises(PeerError) as refused:
                    await peer_get(session, _url(peer, path), KEY)
                assert refused.value.status == 502 and why in str(refused.value), path


async def test_a_slow_peer_times_out() -> None:
    async with _peer() as peer:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(PeerError) as refused:
                await peer_get(session, _url(peer, "/slow"), KEY, wait_seconds=0.2)
        assert refused.value.status == 504


async def test_a_peer_that_does_not_answer_is_a_502() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PeerError) as refused:
            await peer_get(session, URL("http://127.0.0.1:1/ips/x"), KEY)
    assert refused.value.status == 502


async def test_hops_beyond_one_or_not_a_count_are_refused() -> None:
    async with _peer() as peer:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await peer.get("/ips/1", headers={**auth, HOPS_HEADER: "1"})).status == 200
        for hops in ("2", "99", "-1", "x", "1" * 10):
            response = await peer.get("/ips/1", headers={**auth, HOPS_HEADER: hops})
            assert response.status == 400, hops
            assert HOPS_HEADER in (await response.json())["error"]


async def test_a_failing_view_answers_500_json_and_the_next_request_is_served() -> None:
    async with _peer() as peer:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = await peer.get("/fails", headers=auth)
        assert response.status == 500 and "error" in await response.json()
        assert (await peer.get("/ips/2", headers=auth)).status == 200
        # an unknown path answers JSON too (signed for a peer)
        async with aiohttp.ClientSession() as session:
            answer = await peer_get(session, _url(peer, "/nowhere"), KEY)
        assert answer.status == 404 and "error" in answer.json()  # type: ignore[operator]
        response = await peer.get("/ips/3", headers={**auth})
        assert PEER_PROOF_HEADER not in response.headers  # only peers get proofs


async def test_without_a_token_the_api_is_open_and_peers_need_no_key() -> None:
    client = await _serve({"/ips/{ip}": _json}, None, None)
    try:
        assert (await client.get("/ips/1")).status == 200
        async with aiohttp.ClientSession() as session:
            answer = await peer_get(session, _url(client, "/ips/1"), None)
        assert answer.json() == {"path": "/ips/1", "hops": "1"}
    finally:
        await client.close()
