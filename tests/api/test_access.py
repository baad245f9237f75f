"""The access middleware on a real aiohttp server: probes open, everything else needs the token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from processor.api.access import MAX_REQUEST_BYTES, access_middleware, token_matches
from processor.settings import Secret, Settings

TOKEN = "t0ken-for-tests"


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path})


def app_for(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[access_middleware(settings)], client_max_size=MAX_REQUEST_BYTES
    )
    app.router.add_route("*", "/{tail:.*}", ok)
    return app


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app_for(Settings(api_token=Secret(TOKEN))))) as c:
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", ["/customers/alice", "/funnel", "/funnel/local", "/", "/table/x"])
async def test_everything_but_the_probes_needs_the_token(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        response = await client.get(path, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await client.get(path, headers=AUTH)).status == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_are_open(
    client: TestClient[web.Request, web.Application], path: str
) -> None:
    assert (await client.get(path)).status == 200


async def test_metrics_can_require_the_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(api_token_file=token_file, metrics_auth=True)
    async with TestClient(TestServer(app_for(settings))) as c:
        assert (await c.get("/metrics")).status == 401
        assert (await c.get("/metrics", headers=AUTH)).status == 200
        assert (await c.get("/healthz")).status == 200


async def test_no_token_configured_means_no_access() -> None:
    async with TestClient(TestServer(app_for(Settings()))) as c:
        response = await c.get("/funnel", headers={"Authorization": "Bearer "})
        assert response.status == 401
        assert (await response.json())["error"] == "no API token is configured"
        assert (await c.get("/readyz")).status == 200


async def test_only_small_get_requests(client: TestClient[web.Request, web.Application]) -> None:
    assert (await client.post("/funnel", headers=AUTH)).status == 405
    big = await client.get(
        "/funnel",
        headers={**AUTH, "Content-Length": str(MAX_REQUEST_BYTES + 1)},
        data=b"x" * (MAX_REQUEST_BYTES + 1),
    )
    assert big.status == 413


def test_token_comparison() -> None:
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN + "x", TOKEN)
    assert not token_matches(None, TOKEN)
    assert not token_matches("", "")
