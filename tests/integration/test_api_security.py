"""The HTTP API of a real worker: its OpenAPI contract (schemathesis), the token, forged peers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import hypothesis
import pytest
import schemathesis
from aiohttp import web
from schemathesis.specs.openapi.adapter import responses as schemathesis_responses

from processor import processes
from processor.broker import EmbeddedBroker, free_port
from processor.settings import Settings
from tests.integration.conftest import AUTH, WorkerProcess, isolated_settings, start_worker
from tests.integration.http import wait_for
from tests.integration.journeys import event, to_records
from tests.integration.kafka import produce

pytestmark = pytest.mark.integration

OPENAPI = Path(__file__).resolve().parents[2] / "schemas" / "api" / "openapi.json"


def _keep_prefix_items(*args: Any, **kwargs: Any) -> Any:
    """Workaround: schemathesis 4.32 rewrites ``prefixItems`` in *response* schemas to the
    draft-4 ``items: [...]`` form, then checks them against the OpenAPI 3.1 (2020-12)
    meta-schema, which rejects that form. Our LocalFunnel rows are 2020-12 tuples."""
    kwargs["convert_prefix_items"] = False
    return _to_json_schema(*args, **kwargs)


_to_json_schema = schemathesis_responses.to_json_schema
schemathesis_responses.to_json_schema = _keep_prefix_items  # type: ignore[assignment]
SCHEMA = schemathesis.openapi.from_path(OPENAPI)
CUSTOMERS = [f"api-{i}" for i in range(12)]


@dataclass
class Served:
    settings: Settings
    url: str
    tmp: Path


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r.headers


@pytest.fixture(scope="module")
def served(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One worker with a few customers, ready, for the whole module."""
    tmp = tmp_path_factory.mktemp("api")
    settings = isolated_settings(broker, tmp)
    started: list[WorkerProcess] = []
    worker = start_worker(started, settings, tmp, "api")
    url = f"http://127.0.0.1:{worker.settings.web_port}"

    async def prepare() -> None:
        async def ready() -> bool:
            return (await _get(url + "/readyz"))[0] == 200

        await wait_for(ready, 90, "worker ready")
        sent = [event(c, "clickstream", "page_view", i) for i, c in enumerate(CUSTOMERS)]
        await produce(settings, to_records(settings, sent))

        async def known() -> bool:
            statuses = [(await _get(f"{url}/customers/{c}", AUTH))[0] for c in CUSTOMERS]
            return all(s == 200 for s in statuses)

        await wait_for(known, 60, "every customer queryable")

    try:
        asyncio.run(prepare())
        yield Served(worker.settings, url, tmp)
    finally:
        for w in started:
            w.stop()


@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_openapi_contract(case: Any, served: Served) -> None:
    """No 5xx, no response outside the documented statuses and schemas, auth enforced."""
    case.call_and_validate(base_url=served.url, headers=AUTH)


async def test_protected_paths_refuse_requests_without_the_token(served: Served) -> None:
    url = served.url
    protected = [
        f"/customers/{CUSTOMERS[0]}",
        "/funnel",
        "/funnel/local",
        "/",
        "/router/",
        "/table/",
        "/nothing-here",
    ]
    for path in protected:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            status, body, response_headers = await _get(url + path, headers)
            assert status == 401, (path, headers, status, body)
            assert response_headers["WWW-Authenticate"].startswith("Bearer")
            assert CUSTOMERS[0] not in str(body)
    # The same requests with the token: the data, and Faust's own views are gone.
    assert (await _get(f"{url}/customers/{CUSTOMERS[0]}", AUTH))[0] == 200
    assert (await _get(url + "/funnel", AUTH))[0] == 200
    for faust_view in ("/router/", "/table/", "/graph/", "/stats/", "/performance/"):
        assert (await _get(url + faust_view, AUTH))[0] == 404, faust_view
    # Probes and metrics stay open (JOURNEY_METRICS_AUTH is off by default).
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await _get(url + path))[0] == 200, path
    # Bounded: a too-long customer id, a body, and methods other than GET.
    assert (await _get(f"{url}/customers/{'x' * 257}", AUTH))[0] == 400
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/funnel", headers=AUTH, data=b"x" * 100) as r:
            assert r.status == 405
        big = {**AUTH, "Content-Length": str(10**7)}
        async with http.get(url + "/funnel", headers=big, data=b"") as r:
            assert r.status in (400, 413)


@dataclass
class Recorder:
    """An HTTP server that records every request it gets (the forged peer's address)."""

    host: str
    port: int
    hits: list[str]


async def _recorder(host: str, port: int) -> tuple[Recorder, web.AppRunner]:
    hits: list[str] = []

    async def record(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        return web.json_response({"partitions": {}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return Recorder(host, port, hits), runner


async def test_a_forged_peer_url_is_never_fetched(served: Served) -> None:
    """A group member advertising an address outside JOURNEY_WEB_PEERS gets no request.

    The forger is a real worker of the group: it listens on 127.0.0.1 but
    advertises 127.0.0.2 (not in the default peers), where a recorder waits.
    """
    port = free_port()
    recorder, runner = await _recorder("127.0.0.2", port)
    forged_settings = replace(
        served.settings,
        web_host="127.0.0.2",
        web_bind="127.0.0.1",
        web_port=port,
        data_dir=served.tmp / "data-forger",
    )
    forger = processes.start_worker(forged_settings, served.tmp / "worker-forger.log")
    forged_url = f"http://127.0.0.2:{port}"
    try:

        async def forger_in_the_funnel() -> Any:
            status, body, _ = await _get(served.url + "/funnel", AUTH)
            return body if status == 200 and forged_url in body["unreachable"] else None

        funnel = await wait_for(forger_in_the_funnel, 120, "the forger holding partitions")
        assert funnel["workers"] == [served.url]

        refused = []
        for customer in CUSTOMERS:
            status, body, _ = await _get(f"{served.url}/customers/{quote(customer)}", AUTH)
            assert status in (200, 503), body
            if status == 503:
                assert "not an allowed peer" in body["error"], body
                refused.append(customer)
        assert refused, "the forger owns none of the customers: nothing was tested"
        assert recorder.hits == []
    finally:
        forger.stop()
        await runner.cleanup()
