"""Identity end to end: an anonymous visitor browses, identifies, buys, and comes back anonymously.

Real broker, real ``journey worker`` processes. The visitor's journey is merged into
the customer's: the customer's chain holds the merged change (with its
``ce_journeymergedfrom`` header), the anonymous id gets its ``identity_merged``
record, ``/customers/<anonymous id>`` answers with the customer, the funnel counts
one customer, and events that carry only the anonymous id land on the customer.
With two workers the two ids live on partitions owned by different workers; and a
SIGKILL right after the merge re-emits only identical bytes and fires no trigger twice.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import orjson
import pytest

from processor.app.partitioning import partition_for
from processor.contracts.outputs import MERGED_FROM_HEADER
from processor.engine import Source
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, run_forget, start_worker
from tests.integration.http import get, samples, total, wait_for
from tests.integration.journeys import T0, Sent, to_records
from tests.integration.kafka import Collector, Received, produce
from tests.schemas import validator

pytestmark = pytest.mark.integration

IDENTITY_MERGED = validator("identity-merged.v1.json")
STAGE_CHANGE = validator("stage-change.v2.json")
TRIGGER = validator("trigger.v2.json")
_ids = itertools.count(1)


def sent(
    customer: str, source: str, event_type: str, minutes: float, anonymous: str | None = None
) -> Sent:
    doc: dict[str, Any] = {
        "event_id": f"id-ev-{next(_ids)}",
        "customer_id": customer,
        "type": event_type,
        "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"),
    }
    if anonymous is not None:
        doc["anonymous_id"] = anonymous
    return Sent(cast(Source, source), customer.encode(), orjson.dumps(doc))


def browse(anon: str) -> list[Sent]:
    return [
        sent(anon, "clickstream", "page_view", 0, anon),
        sent(anon, "clickstream", "product_view", 2, anon),
        sent(anon, "research", "review_read", 3, anon),
        sent(anon, "clickstream", "checkout_started", 5, anon),  # evaluation, timers armed
    ]


def id_on(partitions: set[int], other_than: set[int], prefix: str, count: int) -> str:
    """An id whose partition (of ``count``) is in ``partitions`` and not in ``other_than``."""
    for i in range(10_000):
        candidate = f"{prefix}-{i}"
        p = partition_for(candidate, count)
        if p in partitions and p not in other_than:
            return candidate
    raise AssertionError("no id found")


def chain(records: list[Received], customer: str) -> list[Received]:
    return [r for r in records if r.doc["customer_id"] == customer]


async def counted_once(urls: list[str], topics: list[str]) -> Any:
    """journey_records_total per input topic equals what the routers consumed, over all workers."""
    consumed: dict[str, float] = defaultdict(float)
    outcomes: dict[str, float] = defaultdict(float)
    for url in urls:
        _, text = await get(url + "/metrics")
        metrics = samples(text)
        for topic in topics:
            consumed[topic] += total(metrics, "journey_records_consumed_total", topic=topic)
            outcomes[topic] += total(metrics, "journey_records_total", topic=topic)
    return consumed if consumed == outcomes and all(consumed.values()) else None


async def run_the_visit(
    settings: Settings, urls: list[str], anon: str, customer: str
) -> dict[str, Any]:
    """Browse, identify, buy, come back anonymously; check everything on the way."""
    async with (
        Collector(settings, settings.stage_changes_topic) as changes,
        Collector(settings, settings.identities_topic) as identities,
        Collector(settings, settings.triggers_topic) as triggers,
    ):
        await produce(settings, to_records(settings, browse(anon)))
        await changes.wait_until(
            lambda rs: any(r.doc["to_stage"] == "evaluation" for r in chain(rs, anon)),
            90,
            "the anonymous visitor in evaluation",
        )
        login = sent(customer, "clickstream", "identify", 10, anon)
        await produce(settings, to_records(settings, [login]))
        [record] = await identities.wait_until(lambda rs: len(rs) >= 1, 60, "identity_merged")
        doc = record.doc
        IDENTITY_MERGED.validate(doc)
        assert (doc["anonymous_id"], doc["customer_id"]) == (anon, customer)
        assert record.key == anon.encode()
        assert record.headers["ce_type"] == b"io.journey-processor.identity_merged.v1"
        assert record.headers["ce_id"] == doc["id"].encode()

        merged = await changes.wait_until(
            lambda rs: any(MERGED_FROM_HEADER in r.headers for r in chain(rs, customer)),
            60,
            "the customer's merged change",
        )
        [change] = [r for r in chain(merged, customer) if MERGED_FROM_HEADER in r.headers]
        STAGE_CHANGE.validate(change.doc)
        assert change.headers[MERGED_FROM_HEADER] == anon.encode()
        assert (change.doc["from_stage"], change.doc["to_stage"]) == (None, "evaluation")
        assert change.doc["trigger"]["event_id"] == orjson.loads(login.value)["event_id"]

        for url in urls:  # either worker answers for either id
            status, body = await get(f"{url}/customers/{quote(anon)}")
            assert status == 200, body
            assert (body["customer_id"], body["resolved_from"]) == (customer, anon)
            assert body["aliases"] == [anon] and body["stage"] == "evaluation"

        buy = sent(customer, "clickstream", "order_completed", 20)
        later = sent(anon, "support", "chat_started", 30, anon)  # only the anonymous id
        await produce(settings, to_records(settings, [buy]))
        await changes.wait_until(
            lambda rs: any(r.doc["to_stage"] == "purchase" for r in chain(rs, customer)),
            60,
            "the purchase",
        )
        await produce(settings, to_records(settings, [later]))
        done = await changes.wait_until(
            lambda rs: any(r.doc["to_stage"] == "post_purchase" for r in chain(rs, customer)),
            60,
            "the later anonymous-only event applied to the customer",
        )
        assert [r.doc["sequence"] for r in chain(done, customer)] == [1, 2, 3]
        later_id = orjson.loads(later.value)["event_id"]
        assert not [r for r in chain(done, anon) if r.doc["trigger"]["event_id"] == later_id]

        async def one_customer() -> Any:
            status, body = await get(urls[-1] + "/funnel")
            ok = status == 200 and body["customers"] == 1 and not body["unreachable"]
            return body if ok else None

        funnel = await wait_for(one_customer, 30, "a funnel counting the merged customer once")
        assert funnel["stages"]["post_purchase"] == 1
        topics = list(settings.source_topics)
        await wait_for(lambda: counted_once(urls, topics), 30, "every input record counted once")

        fired = [(r.doc["customer_id"], r.doc["trigger"]) for r in triggers.records]
        return {"fired": fired, "triggers": triggers.records, "changes": done}


async def test_an_anonymous_visitor_identifies_buys_and_comes_back(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    anon, customer = "anon-visitor-1", "cust-identify-1"
    assert partition_for(anon, settings.partitions) != partition_for(customer, settings.partitions)
    worker = start_worker(workers, settings, tmp_path, "a")
    url = f"http://127.0.0.1:{worker.settings.web_port}"
    seen = await run_the_visit(settings, [url], anon, customer)
    # sales_assist fired for the visitor; the merge carried it, so it does not fire again.
    rules = [rule for _, rule in seen["fired"]]
    assert rules.count("sales_assist") == 1 and rules.count("purchase_completed") == 1
    for r in seen["triggers"]:
        TRIGGER.validate(r.doc)

    # Forgetting the customer forgets its alias too, on the alias's own partition.
    aliases_log = f"{settings.app_id}-customer-aliases-changelog"
    async with (
        Collector(settings, settings.erasures_topic) as erasures,
        Collector(settings, aliases_log) as aliases,
    ):
        await aliases.wait_until(lambda rs: any(r.key == anon.encode() for r in rs), 30, "alias")
        await run_forget(settings, customer)
        await erasures.wait_until(lambda rs: len(rs) >= 2, 60, "both ids confirmed")
        assert {r.doc["customer_id"] for r in erasures.records} == {customer, anon}
        assert len({r.doc["request_id"] for r in erasures.records}) == 1
        for asked in (anon, customer):
            status, body = await get(f"{url}/customers/{quote(asked)}")
            assert status == 404, body
        await aliases.wait_until(
            lambda rs: [r.value for r in rs if r.key == anon.encode()][-1:] == [None],
            30,
            "the alias tombstoned in its changelog",
        )
        tombstones = [r for r in aliases.records if r.key == anon.encode() and r.value is None]
        assert {r.partition for r in tombstones} == {partition_for(anon, settings.partitions)}


async def test_forgetting_the_anonymous_id_alone_leaves_it_in_no_live_changelog_key(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """The customer keeps the merged journey; its alias list and state no longer name the id."""
    anon, customer = "anon-forget-2", "cust-keep-2"
    assert partition_for(anon, settings.partitions) != partition_for(customer, settings.partitions)
    needle = anon.encode()
    tables = ("customer-state", "dedupe-chunks", "event-order", "customer-aliases")
    logs = [Collector(settings, f"{settings.app_id}-{t}-changelog") for t in tables]
    worker = start_worker(workers, settings, tmp_path, "a")
    url = f"http://127.0.0.1:{worker.settings.web_port}"
    async with (
        Collector(settings, settings.identities_topic) as identities,
        Collector(settings, settings.erasures_topic) as erasures,
        logs[0],
        logs[1],
        logs[2],
        logs[3],
    ):
        login = sent(customer, "clickstream", "identify", 10, anon)
        await produce(settings, to_records(settings, [*browse(anon), login]))
        await identities.wait_until(lambda rs: len(rs) >= 1, 90, "identity_merged")

        async def merged() -> Any:
            status, body = await get(f"{url}/customers/{quote(customer)}")
            return body if status == 200 and body.get("aliases") == [anon] else None

        await wait_for(merged, 60, "the customer with its alias")
        for log in (logs[0], logs[3]):  # her state (merged_from) and her alias list name it
            await log.wait_until(
                lambda rs: any(
                    k.startswith(customer.encode()) for k in live_keys_holding(rs, needle)
                ),
                30,
                f"the customer's keys holding {anon} in {log.topic}",
            )

        await run_forget(settings, anon)
        await erasures.wait_until(lambda rs: len(rs) >= 1, 60, "the confirmation")
        for log in logs:
            await log.wait_until(
                lambda rs: live_keys_holding(rs, needle) == [],
                30,
                f"no live key or value holding {anon} in {log.topic}",
            )
        status, body = await get(f"{url}/customers/{quote(customer)}")
        assert status == 200 and body["stage"] == "evaluation" and "aliases" not in body, body
        status, body = await get(f"{url}/customers/{quote(anon)}")
        assert status == 404, body
        assert [r.doc["customer_id"] for r in erasures.records] == [anon]


def live_keys_holding(records: list[Received], needle: bytes) -> list[bytes]:
    """Keys whose last changelog record is a value, where key or value holds ``needle``."""
    last: dict[bytes | None, bytes | None] = {}
    for r in records:
        last[r.key] = r.value
    return [k or b"" for k, v in last.items() if v is not None and needle in (k or b"") + v]


async def test_two_workers_merge_across_them(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    a = start_worker(workers, settings, tmp_path, "a")
    b = start_worker(workers, settings, tmp_path, "b")
    urls = [f"http://127.0.0.1:{w.settings.web_port}" for w in (a, b)]

    async def owned() -> Any:
        found = []
        for url in urls:
            status, body = await get(url + "/funnel/local")
            if status != 200 or not body["partitions"]:
                return None
            found.append({int(p) for p in body["partitions"]})
        return found if len(found[0] | found[1]) == settings.partitions else None

    mine_a, mine_b = await wait_for(owned, 120, "two workers sharing the partitions")
    anon = id_on(mine_a, mine_b, "anon-two", settings.partitions)
    customer = id_on(mine_b, mine_a, "cust-two", settings.partitions)
    await run_the_visit(settings, urls, anon, customer)
    status, body = await get(f"{urls[0]}/customers/{quote(customer)}")
    assert status == 200 and body["served_by"].endswith(str(b.settings.web_port)), body


async def test_a_sigkill_after_the_merge_re_emits_identically_and_fires_nothing_twice(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    anon, customer = "anon-kill-1", "cust-kill-1"
    others = [
        sent(f"bystander-{i}", "clickstream", kind, i % 50)
        for i in range(600)
        for kind in ("product_view", "add_to_cart")
    ]
    async with (
        Collector(settings, settings.stage_changes_topic) as changes,
        Collector(settings, settings.identities_topic) as identities,
        Collector(settings, settings.triggers_topic) as triggers,
    ):
        worker = start_worker(workers, settings, tmp_path, "a")
        await produce(settings, to_records(settings, browse(anon)))
        await changes.wait_until(
            lambda rs: any(r.doc["to_stage"] == "evaluation" for r in chain(rs, anon)),
            90,
            "the anonymous visitor in evaluation",
        )
        # The identify in the middle of a backlog: the kill lands before its commit.
        login = sent(customer, "clickstream", "identify", 60, anon)
        await produce(settings, to_records(settings, [*others[:600], login, *others[600:]]))
        await identities.wait_until(lambda rs: len(rs) >= 1, 90, "identity_merged")
        worker.kill()

        restarted = start_worker(workers, settings, tmp_path, "a")
        buy = sent(customer, "clickstream", "order_completed", 70)
        await produce(settings, to_records(settings, [buy]))
        try:
            await changes.wait_until(
                lambda rs: (
                    any(r.doc["to_stage"] == "purchase" for r in chain(rs, customer))
                    and len({r.doc["customer_id"] for r in rs}) >= 602
                ),
                120,
                "the purchase and every bystander after the restart",
            )
        except AssertionError:
            print(restarted.log_tail())
            raise

        await triggers.wait_until(
            lambda rs: any(
                (r.doc["customer_id"], r.doc["trigger"]) == (customer, "purchase_completed")
                for r in rs
            ),
            30,
            "the purchase's trigger",
        )
        again = f"http://127.0.0.1:{restarted.settings.web_port}"
        status, body = await get(f"{again}/customers/{quote(anon)}")
        assert status == 200 and body["customer_id"] == customer, body

    # Every copy of a record is byte-identical; no position holds two ids.
    for records in (changes.records, identities.records, triggers.records):
        by_id: dict[str, set[tuple[bytes, tuple[tuple[str, bytes], ...]]]] = defaultdict(set)
        for r in records:
            by_id[r.doc["id"]].add((r.value, tuple(sorted(r.headers.items()))))
        assert all(len(copies) == 1 for copies in by_id.values())
    positions: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in changes.records:
        positions[(r.doc["customer_id"], r.doc["sequence"])].add(r.doc["id"])
    assert all(len(ids) == 1 for ids in positions.values())
    fired: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    for r in triggers.records:
        fired[(r.doc["customer_id"], r.doc["trigger"], r.doc["occurrence"])].add(r.doc["id"])
    assert all(len(ids) == 1 for ids in fired.values()), "a trigger fired twice"
    rules = {rule for (c, rule, _) in fired if c in (anon, customer)}
    assert ("sales_assist" in rules) and ("purchase_completed" in rules)
    assert sum(1 for (c, rule, _) in fired if c in (anon, customer) and rule == "sales_assist") == 1
    print(
        f"identity_merged copies: {len(identities.records)}; stage-change records "
        f"{len(changes.records)} for {len({r.doc['id'] for r in changes.records})} ids"
    )


async def test_the_alias_survives_a_sigkill_of_the_worker_that_owns_it(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """The anonymous id's worker dies after the merge; the other recovers the alias."""
    a = start_worker(workers, settings, tmp_path, "a")
    b = start_worker(workers, settings, tmp_path, "b")
    urls = [f"http://127.0.0.1:{w.settings.web_port}" for w in (a, b)]

    async def owned() -> Any:
        found = []
        for url in urls:
            status, body = await get(url + "/funnel/local")
            if status != 200 or not body["partitions"]:
                return None
            found.append({int(p) for p in body["partitions"]})
        return found if len(found[0] | found[1]) == settings.partitions else None

    mine_a, mine_b = await wait_for(owned, 120, "two workers sharing the partitions")
    anon = id_on(mine_a, mine_b, "anon-moved", settings.partitions)
    customer = id_on(mine_b, mine_a, "cust-stays", settings.partitions)
    async with (
        Collector(settings, settings.stage_changes_topic) as changes,
        Collector(settings, settings.identities_topic) as identities,
        Collector(settings, settings.triggers_topic) as triggers,
    ):
        await produce(settings, to_records(settings, browse(anon)))
        await changes.wait_until(
            lambda rs: any(r.doc["to_stage"] == "evaluation" for r in chain(rs, anon)),
            90,
            "the anonymous visitor in evaluation",
        )
        login = sent(customer, "clickstream", "identify", 10, anon)
        await produce(settings, to_records(settings, [login]))
        await identities.wait_until(lambda rs: len(rs) >= 1, 60, "identity_merged")
        a.kill()  # the anonymous id's partition moves to b, recovered from its changelogs

        later = sent(anon, "clickstream", "order_completed", 20, anon)  # only the anonymous id
        await produce(settings, to_records(settings, [later]))
        try:
            done = await changes.wait_until(
                lambda rs: any(r.doc["to_stage"] == "purchase" for r in chain(rs, customer)),
                120,
                "the later anonymous-only event applied to the customer on the other worker",
            )
        except AssertionError:
            print(b.log_tail())
            raise
        assert not [r for r in chain(done, anon) if r.doc["to_stage"] == "purchase"]
        status, body = await get(f"{urls[1]}/customers/{quote(anon)}")
        assert status == 200 and body["customer_id"] == customer, body
        assert body["stage"] == "purchase" and body["resolved_from"] == anon
        await triggers.wait_until(
            lambda rs: any(
                (r.doc["customer_id"], r.doc["trigger"]) == (customer, "purchase_completed")
                for r in rs
            ),
            30,
            "the purchase's trigger",
        )

    for records in (changes.records, identities.records, triggers.records):
        by_id: dict[str, set[bytes]] = defaultdict(set)
        for r in records:
            by_id[r.doc["id"]].add(r.value)
        assert all(len(copies) == 1 for copies in by_id.values())
    fired = [(r.doc["customer_id"], r.doc["trigger"]) for r in triggers.records]
    distinct = {(r.doc["customer_id"], r.doc["trigger"], r.doc["id"]) for r in triggers.records}
    assert sum(1 for c, t, _ in distinct if t == "sales_assist" and c in (anon, customer)) == 1
    print(f"identity_merged copies: {len(identities.records)}; triggers {len(fired)}")
