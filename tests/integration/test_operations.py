"""Operations surface on two real workers: readiness, metrics, customer queries, the funnel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from processor.settings import Settings
from tests.deploy.exposed_metrics import EXPOSED, normalise
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.http import get, samples, total, wait_for
from tests.integration.journeys import Sent, event, expected_final, to_records
from tests.integration.kafka import Collector, Received, produce

pytestmark = pytest.mark.integration

ODD_ID = "ünï/çødé id?#%"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
OPENAPI_ID = "https://journey-processor.dev/schemas/api/openapi.json"


def openapi_validator(component: str) -> Draft202012Validator:
    """Validate against a component of schemas/openapi.json (which refers to stage-change.v1)."""
    openapi = json.loads((SCHEMAS / "api" / "openapi.json").read_text())
    contracts = [
        json.loads((SCHEMAS / n).read_text()) for n in ("stage-change.v2.json", "trigger.v2.json")
    ]
    registry: Registry[Any] = Registry().with_resources(
        [
            (OPENAPI_ID, DRAFT202012.create_resource(openapi)),
            *((c["$id"], DRAFT202012.create_resource(c)) for c in contracts),
        ]
    )
    return Draft202012Validator(
        {"$ref": f"{OPENAPI_ID}#/components/schemas/{component}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def population(customers: int) -> list[Sent]:
    sent: list[Sent] = []
    for i in range(customers):
        c = f"ops-{i}" if i else ODD_ID
        sent.append(event(c, "clickstream", "page_view", i))
        if i % 2:
            sent.append(event(c, "research", "comparison_view", i + 1))
        if i % 3 == 0:
            sent.append(event(c, "clickstream", "order_completed", i + 2))
    return sent


async def test_two_workers_answer_for_every_customer_and_sum_the_funnel(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    a = start_worker(workers, settings, tmp_path, "a")
    url_a = f"http://127.0.0.1:{a.settings.web_port}"

    async def ready(url: str) -> bool:
        status, _ = await get(url + "/readyz")
        return status == 200

    # Readiness goes from 503 (joining, recovering) to 200.
    seen: list[int] = []

    async def watch_a() -> bool:
        status, body = await get(url_a + "/readyz")
        seen.append(status)
        assert status in (200, 503), body
        return status == 200

    await wait_for(watch_a, 90, "worker a ready")
    assert 503 in seen, f"readiness went straight to 200: {seen}"

    status, text = await get(url_a + "/metrics")
    assert status == 200
    before = samples(text)
    assert total(before, "journey_build_info") == 1
    assert total(before, "journey_ready") == 1

    sent = population(60)
    expected = expected_final(settings, sent)
    async with Collector(settings, settings.stage_changes_topic) as changes:
        await produce(settings, to_records(settings, sent))
        await produce(settings, [(settings.support_topic, b"k", b"not json")])

        def done(records: list[Received]) -> bool:
            latest: dict[str, dict[str, Any]] = {}
            for r in records:
                latest[r.doc["customer_id"]] = r.doc
            return len(latest) == len(expected) and all(
                (latest[c]["to_stage"], latest[c]["cycle"]) == (s.stage, s.cycle)
                for c, s in expected.items()
            )

        await changes.wait_until(done, 90, "all customers at their final stage")

    # Counters moved as the events flowed through worker a.
    async def scrape_with_lag() -> Any:
        """Consumer lag is sampled every few seconds; wait for its first sample."""
        status, text = await get(url_a + "/metrics")
        found = samples(text)
        return found if status == 200 and "journey_consumer_lag" in found else None

    after = await wait_for(scrape_with_lag, 30, "consumer lag in /metrics")
    # Everything the dashboard and the alert rules use is really exposed.
    scraped = {normalise(name) for name in after}
    assert scraped >= EXPOSED, sorted(EXPOSED - scraped)
    applied = total(after, "journey_events_total", outcome="applied")
    assert applied - total(before, "journey_events_total", outcome="applied") == len(sent)
    assert total(after, "journey_stage_changes_total") >= len(expected)
    assert total(after, "journey_event_processing_seconds_count") == applied
    assert total(after, "journey_event_time_lag_seconds_count") == applied
    assert total(after, "journey_rebalances_total") >= 1
    assert total(after, "journey_dead_letters_total", reason="not_json") == 1

    # A second worker joins the group; both become ready and split the partitions.
    b = start_worker(workers, settings, tmp_path, "b")
    url_b = f"http://127.0.0.1:{b.settings.web_port}"
    await wait_for(lambda: ready(url_b), 120, "worker b ready")
    await wait_for(lambda: ready(url_a), 120, "worker a ready again after the rebalance")

    async def both_own_partitions() -> bool:
        owned = []
        for url in (url_a, url_b):
            _, text = await get(url + "/metrics")
            owned.append(total(samples(text), "journey_assigned_partitions"))
        return all(n > 0 for n in owned)

    await wait_for(both_own_partitions, 60, "partitions on both workers")

    # Any worker answers for any customer (forwarding to the owner), ids URL-encoded.
    served_by: set[str] = set()
    customer_schema = openapi_validator("Customer")
    for customer, state in expected.items():
        for url in (url_a, url_b):
            status, body = await wait_for(
                lambda url=url, customer=customer: _customer(url, customer),
                30,
                f"{customer} from {url}",
            )
            assert status == 200, body
            customer_schema.validate(body)
            assert body["customer_id"] == customer
            assert (body["stage"], body["cycle"]) == (state.stage, state.cycle)
            assert body["recent_changes"][-1]["to_stage"] == state.stage
            served_by.add(body["served_by"])
    assert len(served_by) == 2, "customers live on both workers"

    status, body = await get(url_a + "/customers/" + quote("nobody-at-all", safe=""))
    assert status == 404 and body["customer_id"] == "nobody-at-all"
    openapi_validator("Error").validate(body)

    # The funnel sums over both workers, from either of them.
    by_stage = {stage: 0 for stage in ("need_recognition", "evaluation", "purchase")}
    for s in expected.values():
        by_stage[s.stage] = by_stage.get(s.stage, 0) + 1
    for url in (url_a, url_b):

        async def funnel(url: str = url) -> Any:
            status, body = await get(url + "/funnel")
            return body if status == 200 and body["customers"] == len(expected) else None

        body = await wait_for(funnel, 60, f"funnel from {url}")
        openapi_validator("Funnel").validate(body)
        assert {k: v for k, v in body["stages"].items() if v} == {
            k: v for k, v in by_stage.items() if v
        }
        assert len(body["workers"]) == 2 and body["unreachable"] == []
        assert body["computed_at"].endswith("Z")


async def _customer(url: str, customer: str) -> tuple[int, Any] | None:
    status, body = await get(f"{url}/customers/{quote(customer, safe='')}")
    return (status, body) if status != 503 else None
