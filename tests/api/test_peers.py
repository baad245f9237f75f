"""Asking peers: only assigned and allowed hosts, with the token, no redirects, a capped body.

The servers here are real aiohttp servers on loopback that record every request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from processor.api.peers import (
    FORWARDED,
    MAX_RELAY_BYTES,
    PeerClient,
    PeerFailed,
    PeerPolicy,
    PeerRefused,
)
from processor.broker import free_port
from processor.settings import Settings


@dataclass
class Recorder:
    url: URL
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Recorder]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> Recorder:
        port = free_port()
        recorder = Recorder(URL(f"http://127.0.0.1:{port}"))

        async def record(request: web.Request) -> web.StreamResponse:
            recorder.hits.append((request.path, dict(request.headers)))
            return await handler(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return recorder

    yield start
    for runner in runners:
        await runner.cleanup()


async def json_ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def test_policy_asks_only_assigned_allowed_hosts() -> None:
    policy = PeerPolicy.from_settings(Settings())
    a, b = (
        URL("http://journey-processor-1.journey-processor-headless:6066"),
        URL("http://worker-2:6066"),
    )
    assigned = [a, b]
    assert policy.target(a, assigned, "/funnel/local") == a.with_path("/funnel/local")
    assert policy.target(b, assigned, "/x").host == "worker-2"
    with pytest.raises(PeerRefused, match="holds no partitions"):
        policy.target(URL("http://worker-3:6066"), assigned, "/x")
    metadata = URL("http://169.254.169.254:80")
    with pytest.raises(PeerRefused, match="JOURNEY_WEB_PEERS"):
        policy.target(metadata, [*assigned, metadata], "/x")
    with pytest.raises(PeerRefused, match="credentials"):
        creds = URL("http://user:pw@worker-1:6066")
        policy.target(creds, [creds], "/x")
    # The scheme is this worker's own, whatever the peer advertised.
    https = PeerPolicy(("worker-*",), "https")
    assert (
        https.target(URL("http://worker-1:6066"), [URL("http://worker-1:6066")], "/x").scheme
        == "https"
    )
    # A pattern may pin the port.
    pinned = PeerPolicy(("10.0.0.*:6066",), "http")
    assert pinned.host_allowed(URL("http://10.0.0.7:6066"))
    assert not pinned.host_allowed(URL("http://10.0.0.7:22"))


async def test_allowed_peer_gets_the_token_and_the_forwarded_mark(serve) -> None:  # type: ignore[no-untyped-def]
    peer = await serve(json_ok)
    async with aiohttp.ClientSession() as session:
        status, body = await PeerClient(session, "tok").get(peer.url.with_path("/funnel/local"))
    assert (status, body) == (200, b'{"ok": true}')
    [(path, headers)] = peer.hits
    assert path == "/funnel/local"
    assert headers["Authorization"] == "Bearer tok" and headers[FORWARDED] == "1"


async def test_a_redirect_is_never_followed(serve) -> None:  # type: ignore[no-untyped-def]
    elsewhere = await serve(json_ok)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(str(elsewhere.url.with_path("/internal")))

    peer = await serve(redirect)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PeerFailed, match="redirect"):
            await PeerClient(session, "tok").get(peer.url.with_path("/customers/a"))
    assert len(peer.hits) == 1 and elsewhere.hits == []


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_oversized_answer_is_not_relayed(serve, chunked: bool) -> None:  # type: ignore[no-untyped-def]
    async def huge(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(body=b"x" * (MAX_RELAY_BYTES + 1))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(MAX_RELAY_BYTES // 65536 + 2):
            await response.write(b"x" * 65536)
        await response.write_eof()
        return response

    peer = await serve(huge)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PeerFailed, match="more than"):
            await PeerClient(session, "tok").get(peer.url)


async def test_an_unreachable_peer_is_a_peer_failure() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(PeerFailed, match="unreachable"):
            await PeerClient(session, "").get(URL(f"http://127.0.0.1:{free_port()}/x"))
