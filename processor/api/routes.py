"""The worker's HTTP routes: health, metrics, and where customers stand.

Any worker answers for any customer: the customer-state table's partition
owner is found through Faust's assignor metadata (the same murmur2 partitioner
the router uses), and a request for someone else's customer is forwarded once,
through :mod:`processor.api.peers`. A forwarded request that lands on a worker
that no longer owns the customer (a rebalance in between) gets 503 rather than
bouncing back and forth.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast
from urllib.parse import quote

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from processor.api.access import MAX_CUSTOMER_ID_LENGTH
from processor.api.interface import Worker
from processor.api.peers import (
    FORWARDED,
    PeerClient,
    PeerFailed,
    PeerPolicy,
    PeerRefused,
    host_port,
    peer_ssl_context,
)
from processor.contracts.funnel import funnel_document, is_local_funnel, merge_funnels
from processor.contracts.identity import aliases_key, decode_alias, decode_alias_list
from processor.contracts.outputs import rfc3339, stage_change_document, trigger_document
from processor.contracts.state import decode_state
from processor.engine import CustomerState

log = logging.getLogger(__name__)


class Answer(NamedTuple):
    """A peer's answer to a forwarded request."""

    status: int
    body: bytes


def register_routes(worker: Worker) -> None:
    app = worker.faust
    operations = worker.operations
    table_name = worker.states.name
    policy = PeerPolicy.from_settings(worker.settings)
    token = worker.settings.api_token_value()
    tls = peer_ssl_context(worker.settings)

    def peers() -> PeerClient:
        return PeerClient(app.http_client, token, tls)

    def own_url() -> URL:
        return URL(str(app.conf.canonical_url))

    def assignment() -> list[URL]:
        return [URL(str(host)) for host in app.router.tables_metadata()]

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
        body = generate_latest(worker.metrics.registry)
        return view.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/customers/{customer_id}")
    async def customer(view: Any, request: Any, customer_id: str) -> Any:
        """Where one customer stands, from whichever worker owns it."""
        if not customer_id or len(customer_id) > MAX_CUSTOMER_ID_LENGTH:
            return view.json(
                {"error": f"a customer id has 1 to {MAX_CUSTOMER_ID_LENGTH} characters"},
                status=400,
            )
        try:
            owner = URL(str(app.router.key_store(table_name, customer_id.encode())))
        except KeyError:
            return view.json({"error": "no partition owner known yet (starting?)"}, status=503)
        if host_port(owner) != host_port(own_url()):
            if request.headers.get(FORWARDED):
                return view.json({"error": "ownership moved (rebalancing)"}, status=503)
            path = "/customers/" + quote(customer_id, safe="")
            return await forward(view, owner, path)
        raw = worker.states.get(customer_id.encode())
        if raw is None:
            alias = None if worker.aliases is None else worker.aliases.get(customer_id.encode())
            if alias is not None:  # an anonymous id merged into a customer (identity)
                return await resolved(view, customer_id, decode_alias(alias).customer_id)
            return view.json({"error": "unknown customer", "customer_id": customer_id}, status=404)
        return view.json(document(decode_state(raw)))

    async def resolved(view: Any, anonymous_id: str, customer_id: str) -> Any:
        """The customer's document for its alias, from whichever worker owns the customer.

        The alias lives on the anonymous id's partition, the customer's state on
        its own: at most one more hop. ``resolved_from`` says which id was asked for.
        """
        try:
            owner = URL(str(app.router.key_store(table_name, customer_id.encode())))
        except KeyError:
            return view.json({"error": "no partition owner known yet (starting?)"}, status=503)
        if host_port(owner) == host_port(own_url()):
            raw = worker.states.get(customer_id.encode())
            if raw is None:
                missing = {"error": "unknown customer", "customer_id": customer_id}
                return view.json(missing, status=404)
            found = document(decode_state(raw))
        else:
            answer = await ask(owner, "/customers/" + quote(customer_id, safe=""))
            if not isinstance(answer, Answer):
                return view.json(answer[0], status=answer[1])
            status, body = answer.status, answer.body
            if status != 200:
                return view.bytes(body, content_type="application/json", status=status)
            found = orjson.loads(body)
        found["resolved_from"] = anonymous_id
        return view.json(found)

    def merged_ids(customer_id: str) -> tuple[str, ...]:
        """The anonymous ids merged into a customer (its alias list, on its partition)."""
        raw = None if worker.aliases is None else worker.aliases.get(aliases_key(customer_id))
        return () if raw is None else decode_alias_list(raw)

    def document(state: CustomerState) -> dict[str, Any]:
        return dict(
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
                "model": worker.model.label,
                "served_by": str(own_url()),
            },
            **({"aliases": list(aliases)} if (aliases := merged_ids(state.customer_id)) else {}),
        )

    async def forward(view: Any, owner: URL, path: str) -> Any:
        answer = await ask(owner, path)
        if not isinstance(answer, Answer):
            return view.json(answer[0], status=answer[1])
        return view.bytes(answer.body, content_type="application/json", status=answer.status)

    async def ask(owner: URL, path: str) -> Answer | tuple[dict[str, str], int]:
        """The owner's answer (200, 404 or 503), or the error document and status to send."""
        where = f"{owner.host}:{owner.port}"
        try:
            status, body = await peers().get(policy.target(owner, assignment(), path))
        except PeerRefused as exc:
            log.warning("not forwarding to %s: %s", where, exc)
            return {"error": f"owner {where} is not an allowed peer"}, 503
        except PeerFailed as exc:
            return {"error": f"owner {where} {exc}"}, 503
        if status not in (200, 404, 503):
            return {"error": f"owner {where} answered {status}"}, 503
        return Answer(status, body)

    @app.page("/funnel/local")
    async def funnel_local(view: Any, request: Any) -> Any:
        """This worker's share of the funnel, per partition it owns."""
        return view.json(funnel_document(operations.counts, operations.engine_partitions()))

    @app.page("/funnel")
    async def funnel(view: Any, request: Any) -> Any:
        """Customers per stage and cycle over all workers of the group."""
        me = own_url()
        members = assignment()
        others = [p for p in members if host_port(p) != host_port(me)]
        local = funnel_document(operations.counts, operations.engine_partitions())
        answers = await asyncio.gather(*(fetch_local(p, members) for p in others))
        documents = [local, *(a for a in answers if a is not None)]
        merged = merge_funnels(documents, worker.model.stages)
        merged["computed_at"] = rfc3339(datetime.now(UTC))
        merged["workers"] = [str(me), *(str(p) for p, a in zip(others, answers, strict=True) if a)]
        merged["unreachable"] = [str(p) for p, a in zip(others, answers, strict=True) if a is None]
        return view.json(merged)

    async def fetch_local(peer: URL, members: list[URL]) -> dict[str, Any] | None:
        try:
            status, body = await peers().get(policy.target(peer, members, "/funnel/local"))
            if status != 200:
                return None
            document = orjson.loads(body)
            if not is_local_funnel(document):
                log.warning("funnel: %s:%s answered something else", peer.host, peer.port)
                return None
            return cast(dict[str, Any], document)
        except (PeerRefused, PeerFailed, orjson.JSONDecodeError) as exc:
            log.warning("funnel: %s:%s skipped: %s", peer.host, peer.port, exc)
            return None
