"""Erasure end to end: `journey forget` on a real worker with RocksDB leaves no trace of the id.

No record in the local stores, no live key in any changelog (the last record per
key), and, once the worker has stopped, not one byte of the id in the files of
its data directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from processor.app.partitioning import partition_for
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, run_forget, start_worker
from tests.integration.http import get, samples, total, wait_for
from tests.integration.journeys import Sent, event, to_records
from tests.integration.kafka import Collector, Received, produce
from tests.schemas import validator

pytestmark = pytest.mark.integration

ERASED = validator("customer-erased.v1.json")
FORGOTTEN = "forget-me-5d1c9a"
TABLES = ("customer-state", "dedupe-chunks", "event-order")


def journeys() -> list[Sent]:
    sent = [event(FORGOTTEN, "clickstream", "page_view", i) for i in range(40)]  # a sealed chunk
    sent += [
        event(FORGOTTEN, "research", "review_read", 41),
        event(FORGOTTEN, "clickstream", "checkout_started", 42),  # an absence timer
    ]
    for i in range(20):
        sent += [
            event(f"keep-{i}", "clickstream", "product_view", i),
            event(f"keep-{i}", "clickstream", "add_to_cart", i + 1),
        ]
    return sent


def live_keys_holding(records: list[Received], needle: bytes) -> list[bytes]:
    last: dict[bytes | None, bytes | None] = {}
    for r in records:
        last[r.key] = r.value
    return [
        k or b"" for k, v in last.items() if v is not None and (needle in (k or b"") or needle in v)
    ]


async def test_forget_leaves_no_live_key_and_no_byte_on_disk(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    needle = FORGOTTEN.encode()
    changelogs = [Collector(settings, f"{settings.app_id}-{t}-changelog") for t in TABLES]
    async with (
        Collector(settings, settings.stage_changes_topic) as changes,
        Collector(settings, settings.erasures_topic) as erasures,
        Collector(settings, settings.dead_letter_topic) as dead_letters,
        changelogs[0],
        changelogs[1],
        changelogs[2],
    ):
        worker = start_worker(workers, settings, tmp_path, "a")
        url = f"http://127.0.0.1:{worker.settings.web_port}"
        await produce(settings, to_records(settings, journeys()))
        await changes.wait_until(
            lambda rs: (
                {r.doc["customer_id"] for r in rs} >= {FORGOTTEN, "keep-19"}
                and sum(r.doc["customer_id"] == FORGOTTEN for r in rs) >= 3
            ),
            90,
            "stage changes of every customer",
        )

        async def known() -> Any:
            status, body = await get(f"{url}/customers/{quote(FORGOTTEN)}")
            return body if status == 200 and body["stage"] == "evaluation" else None

        body = await wait_for(known, 60, "the customer's state")
        assert body["pending_timers"], "it holds a timer"
        await changelogs[1].wait_until(
            lambda rs: live_keys_holding(rs, needle) != [], 30, "its sealed chunk in the changelog"
        )

        await produce(settings, [(settings.erasure_requests_topic, b"x", b"not json")])
        request_id = (await run_forget(settings, FORGOTTEN)).split()[1]

        [confirmation] = await erasures.wait_until(lambda rs: len(rs) >= 1, 60, "confirmation")
        doc = confirmation.doc
        ERASED.validate(doc)
        assert (doc["customer_id"], doc["request_id"]) == (FORGOTTEN, request_id)
        assert confirmation.key == needle
        assert confirmation.headers["ce_type"] == b"io.journey-processor.customer_erased.v1"
        assert confirmation.headers["ce_id"] == doc["id"].encode()

        status, body = await get(f"{url}/customers/{quote(FORGOTTEN)}")
        assert status == 404, body

        async def funnel() -> Any:
            status, body = await get(url + "/funnel")
            return body if status == 200 and body["customers"] == 20 else None

        await wait_for(funnel, 30, "a funnel of the 20 other customers")
        requests = settings.erasure_requests_topic

        async def counted() -> Any:
            _, text = await get(url + "/metrics")
            metrics = samples(text)
            return (
                metrics
                if total(metrics, "journey_records_consumed_total", topic=requests) == 2
                else None
            )

        metrics = await wait_for(counted, 30, "both requests consumed")
        assert total(metrics, "journey_erasures_total", state="found") == 1
        assert total(metrics, "journey_records_total", topic=requests, outcome="applied") == 1
        assert total(metrics, "journey_records_total", topic=requests, outcome="dead_lettered") == 1
        [letter] = await dead_letters.wait_until(lambda rs: len(rs) >= 1, 30, "a dead letter")
        assert letter.doc["reason"] == "not_json"
        assert letter.doc["source"]["topic"] == requests

        for changelog in changelogs:
            await changelog.wait_until(
                lambda rs: live_keys_holding(rs, needle) == [],
                30,
                f"no live key of {FORGOTTEN} in {changelog.topic}",
            )
        state_log = changelogs[0].records
        assert any(r.key == needle and r.value is None for r in state_log), "a state tombstone"

    worker.stop()
    assert worker.process is not None and worker.process.returncode == 0, worker.log_tail()
    data = worker.settings.data_dir
    stored = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sst" for p in stored), "the worker kept its tables in RocksDB"
    holding = [str(p.relative_to(data)) for p in stored if needle in p.read_bytes()]
    assert holding == [], holding


def spread_ids(partitions: int) -> list[str]:
    """Two customer ids per partition, so both workers own some of them."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for n in range(1000):
        candidate = f"gone-{n}-c81e"
        slot = chosen[partition_for(candidate, partitions)]
        if len(slot) < 2:
            slot.append(candidate)
    return [c for ids in chosen.values() for c in ids]


async def test_two_workers_each_forget_the_customers_they_own(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    a = start_worker(workers, settings, tmp_path, "a")
    b = start_worker(workers, settings, tmp_path, "b")
    urls = [f"http://127.0.0.1:{w.settings.web_port}" for w in (a, b)]

    async def both_own_partitions() -> Any:
        for url in urls:
            status, body = await get(url + "/readyz")
            if status != 200:
                return None
        status, body = await get(urls[0] + "/funnel")
        ok = status == 200 and len(body["workers"]) == 2 and len(body["partitions"]) == 4
        return body if ok else None

    # Data only once the group is settled: no revoked partition keeps an old copy.
    await wait_for(both_own_partitions, 120, "two workers sharing the partitions")
    gone = spread_ids(settings.partitions)
    sent = [event(c, "clickstream", "add_to_cart", i) for i, c in enumerate(gone)]
    sent += [event(f"stays-{i}", "research", "review_read", i) for i in range(10)]
    changelogs = [Collector(settings, f"{settings.app_id}-{t}-changelog") for t in TABLES]
    async with (
        Collector(settings, settings.stage_changes_topic) as changes,
        Collector(settings, settings.erasures_topic) as erasures,
        changelogs[0],
        changelogs[1],
        changelogs[2],
    ):
        await produce(settings, to_records(settings, sent))
        await changes.wait_until(lambda rs: len(rs) >= len(sent), 90, "every first stage")
        served_by = set()
        for customer in gone:
            status, body = await get(f"{urls[0]}/customers/{quote(customer)}")
            assert status == 200, body
            served_by.add(body["served_by"])
        assert len(served_by) == 2, "the forgotten customers live on both workers"

        out = await run_forget(settings, *gone)
        requested = dict(line.split("\t") for line in out.splitlines())
        await erasures.wait_until(lambda rs: len(rs) >= len(gone), 60, "every confirmation")
        confirmed = {r.doc["customer_id"]: r.doc["request_id"] for r in erasures.records}
        assert confirmed == requested
        for url in urls:
            for customer in gone:
                status, body = await get(f"{url}/customers/{quote(customer)}")
                assert status == 404, (url, customer, body)

        async def funnel() -> Any:
            status, body = await get(urls[1] + "/funnel")
            return body if status == 200 and body["customers"] == 10 else None

        await wait_for(funnel, 30, "a funnel of the 10 customers left")
        for changelog in changelogs:
            await changelog.wait_until(
                lambda rs: all(live_keys_holding(rs, c.encode()) == [] for c in gone),
                30,
                f"no live key of the forgotten in {changelog.topic}",
            )

    for worker in (a, b):
        worker.stop()
        assert worker.process is not None and worker.process.returncode == 0, worker.log_tail()
        data = worker.settings.data_dir
        for path in (p for p in data.rglob("*") if p.is_file()):
            content = path.read_bytes()
            assert not [c for c in gone if c.encode() in content], path
