"""The worker's HTTP surface: health, metrics, and where customers stand.

Any worker answers for any customer: the customer-state table's partition
owner is found through Faust's assignor metadata (the same murmur2 partitioner
the router uses), and a request for someone else's customer is forwarded once.
A forwarded request that lands on a worker that no longer owns the customer (a
rebalance in between) gets 503 rather than bouncing back and forth.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from processor.app.funnel import funnel_document, merge_funnels
from processor.contracts.outputs import rfc3339, stage_change_document, trigger_document
from processor.contracts.state import decode_state

if TYPE_CHECKING:
    from processor.app.factory import JourneyApp

log = logging.getLogger(__name__)

FORWARDED = "x-journey-forwarded"
"""Set on a request one worker forwards to another; such a request is never forwarded again."""

PEER_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


def register_routes(journey: JourneyApp) -> None:
    app = journey.faust
    operations = journey.operations
    table_name = journey.states.name

    def own_url() -> URL:
        return URL(str(app.conf.canonical_url))

    def same_host(a: URL, b: URL) -> bool:
        return (a.host, a.port) == (b.host, b.port)

    @app.page("/healthz")
    async def healthz(view: Any, request: Any) -> Any:
        """The process is alive and its event loop answers."""
        return view.json({"status": "alive"})

    @app.page("/readyz")
    async def readyz(view: Any, request: Any) -> Any:
        """200 once partitions are assigned and tables recovered; 503 with the reason before."""
        ready, reason = operations.readiness()
        return view.json({"ready": ready, "reason": reason}, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(view: Any, request: Any) -> Any:
        body = generate_latest(journey.metrics.registry)
        return view.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/customers/{customer_id}")
    async def customer(view: Any, request: Any, customer_id: str) -> Any:
        """Where one customer stands, from whichever worker owns it."""
        try:
            owner = URL(str(app.router.key_store(table_name, customer_id.encode())))
        except KeyError:
            return view.json({"error": "no partition owner known yet (starting?)"}, status=503)
        if not same_host(owner, own_url()):
            if request.headers.get(FORWARDED):
                return view.json({"error": "ownership moved (rebalancing)"}, status=503)
            path = "/customers/" + quote(customer_id, safe="")
            return await forward(view, owner.with_path(path, encoded=True))
        raw = journey.states.get(customer_id.encode())
        if raw is None:
            return view.json({"error": "unknown customer", "customer_id": customer_id}, status=404)
        state = decode_state(raw)
        return view.json(
            {
                "customer_id": state.customer_id,
                "stage": state.stage,
                "cycle": state.cycle,
                "stage_entered_at": rfc3339(state.stage_entered_at),
                "last_event_at": rfc3339(state.last_event_at),
                "purchase_at": None if state.purchase_at is None else rfc3339(state.purchase_at),
                "applied_events": state.applied_count,
                "recent_changes": [stage_change_document(c) for c in state.recent_changes],
                "pending_timers": [
                    {"trigger": t.rule, "deadline": rfc3339(t.deadline), "evidence": [t.anchor]}
                    for t in state.triggers.timers
                ],
                "recent_triggers": [trigger_document(t) for t in state.triggers.recent],
                "model": journey.model.label,
                "served_by": str(own_url()),
            }
        )

    async def forward(view: Any, url: URL) -> Any:
        try:
            async with app.http_client.get(
                url, headers={FORWARDED: "1"}, timeout=PEER_TIMEOUT
            ) as response:
                body = await response.read()
                return view.bytes(body, content_type="application/json", status=response.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return view.json(
                {"error": f"owner {url.host}:{url.port} unreachable: {exc!r}"}, status=503
            )

    @app.page("/funnel/local")
    async def funnel_local(view: Any, request: Any) -> Any:
        """This worker's share of the funnel, per partition it owns."""
        return view.json(funnel_document(operations.counts, operations.engine_partitions()))

    @app.page("/funnel")
    async def funnel(view: Any, request: Any) -> Any:
        """Customers per stage and cycle over all workers of the group."""
        me = own_url()
        peers = [
            URL(str(host))
            for host in app.router.tables_metadata()
            if not same_host(URL(str(host)), me)
        ]
        local = funnel_document(operations.counts, operations.engine_partitions())
        answers = await asyncio.gather(*(fetch_local(peer) for peer in peers))
        documents = [local, *(a for a in answers if a is not None)]
        merged = merge_funnels(documents, journey.model.stages)
        merged["computed_at"] = rfc3339(datetime.now(UTC))
        merged["workers"] = [str(me), *(str(p) for p, a in zip(peers, answers, strict=True) if a)]
        merged["unreachable"] = [str(p) for p, a in zip(peers, answers, strict=True) if a is None]
        return view.json(merged)

    async def fetch_local(peer: URL) -> dict[str, Any] | None:
        try:
            async with app.http_client.get(
                peer.with_path("/funnel/local"), timeout=PEER_TIMEOUT
            ) as response:
                if response.status != 200:
                    return None
                document: dict[str, Any] = await response.json()
                return document
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("funnel: %s unreachable: %r", peer, exc)
            return None
