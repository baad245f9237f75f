"""Event time decides, end to end: cross-topic order, idle topics, skew, held events, timers."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.app.partitioning import partition_for
from processor.contracts.inputs import decode_event
from processor.engine import CustomerState, Event, StageChange, apply, load_model
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.journeys import Sent
from tests.integration.kafka import Collector, Received, create_topics, produce
from tests.integration.test_operations import get, samples, total, wait_for
from tests.integration.test_triggers import fired, records, sent, short_definition

pytestmark = pytest.mark.integration

MODEL = load_model()
Chain = list[tuple[Any, ...]]


def expected_chains(settings: Settings, items: list[Sent]) -> dict[str, Chain]:
    """The engine applying every event one by one in event-time order."""
    topic_of = {source: topic for topic, source in settings.source_topics.items()}
    events = []
    for s in items:
        decoded = decode_event(s.value, s.source, topic_of[s.source])
        assert isinstance(decoded, Event)
        events.append(decoded)
    return chains_of(sorted(events, key=lambda e: e.occurred_at))


def chains_of(events: list[Event]) -> dict[str, Chain]:
    states: dict[str, CustomerState | None] = defaultdict(lambda: None)
    chains: dict[str, Chain] = defaultdict(list)
    for e in events:
        step = apply(states[e.customer_id], e, MODEL)
        states[e.customer_id] = step.state
        for out in step.outputs:
            if isinstance(out, StageChange):
                chains[e.customer_id].append(
                    (
                        out.from_stage,
                        out.to_stage,
                        out.cycle,
                        out.sequence,
                        out.changed_at.isoformat().replace("+00:00", "Z"),
                        out.evidence.event_id,
                    )
                )
    return dict(chains)


def received_chains(received: list[Received]) -> dict[str, Chain]:
    by_id = {r.doc["id"]: r.doc for r in received}
    chains: dict[str, Chain] = defaultdict(list)
    for doc in sorted(by_id.values(), key=lambda d: (d["customer_id"], d["sequence"])):
        chains[doc["customer_id"]].append(
            (
                doc["from_stage"],
                doc["to_stage"],
                doc["cycle"],
                doc["sequence"],
                doc["changed_at"],
                doc["trigger"]["event_id"],
            )
        )
    return dict(chains)


def two_cycles(customer: str, t0: datetime) -> dict[str, list[Sent]]:
    """Two buying cycles 40 days apart over all three topics; the small topics' evidence of
    the second cycle is wrong in the first (arrival order) and right in event time."""
    h = timedelta(hours=1)
    d40 = timedelta(days=40)
    return {
        "clickstream": [
            sent(customer, "clickstream", "page_view", t0),
            sent(customer, "clickstream", "product_view", t0 + h),
            sent(customer, "clickstream", "add_to_cart", t0 + 2 * h),
            sent(customer, "clickstream", "order_completed", t0 + 3 * h),
            sent(customer, "clickstream", "page_view", t0 + d40),
            sent(customer, "clickstream", "add_to_cart", t0 + d40 + 2 * h),
            sent(customer, "clickstream", "order_completed", t0 + d40 + 3 * h),
        ],
        "research": [
            sent(customer, "research", "review_read", t0 + h / 2),
            sent(customer, "research", "pricing_view", t0 + d40 + h),
        ],
        "support": [
            sent(customer, "support", "ticket_opened", t0 + 4 * h),
            sent(customer, "support", "complaint", t0 + d40 + 4 * h),
        ],
    }


async def test_a_backlog_is_applied_in_event_time_order_across_topics_and_two_workers(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Research and support (small, their own partition counts) are read long before the
    clickstream; every customer's chain is still the event-time chain."""
    await create_topics(
        settings,
        {settings.clickstream_topic: 3, settings.research_topic: 2, settings.support_topic: 1},
    )
    t0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
    by_topic: dict[str, list[Sent]] = defaultdict(list)
    for i in range(400):
        for source, items in two_cycles(f"bk-{i}", t0 + timedelta(minutes=i)).items():
            by_topic[source] += items
    for items in by_topic.values():  # each topic in event-time order, as a real topic is
        items.sort(key=lambda s: orjson.loads(s.value)["occurred_at"])
    small_first = by_topic["research"] + by_topic["support"] + by_topic["clickstream"]
    expected = expected_chains(settings, small_first)
    topic_of = {source: topic for topic, source in settings.source_topics.items()}
    arrival = chains_of(
        [
            e
            for s in small_first
            if isinstance(e := decode_event(s.value, s.source, topic_of[s.source]), Event)
        ]
    )
    assert arrival != expected, "the scenario is one where arrival order would be wrong"
    await produce(settings, records(settings, small_first))

    async with Collector(settings, settings.stage_changes_topic) as changes:
        a = start_worker(workers, settings, tmp_path, "a")
        start_worker(workers, settings, tmp_path, "b")
        want = sum(len(c) for c in expected.values())
        try:
            await changes.wait_until(
                lambda r: len({x.doc["id"] for x in r}) >= want, 180, "every stage change"
            )
        except AssertionError:
            print(a.log_tail())
            raise
    got = received_chains(changes.records)
    wrong = [c for c in expected if got.get(c) != expected[c]]
    assert not wrong, (len(wrong), wrong[:3], got.get(wrong[0]), expected[wrong[0]])
    assert not any(r.doc["late"] for r in changes.records)


async def test_an_idle_topic_does_not_stall_output_and_latency_is_the_lateness(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Support never gets a record; live clickstream events still come out within the
    allowed lateness plus about a second."""
    worker = start_worker(workers, settings, tmp_path, "a")
    url = f"http://127.0.0.1:{worker.settings.web_port}/readyz"
    await wait_for(lambda: _ready(url), 90, "the worker ready")
    async with Collector(settings, settings.stage_changes_topic) as changes:
        latencies = []
        for i in range(5):
            at = datetime.now(UTC)
            await produce(
                settings, records(settings, [sent(f"live-{i}", "clickstream", "page_view", at)])
            )
            got = await changes.wait_until(
                lambda r, i=i: any(x.doc["customer_id"] == f"live-{i}" for x in r),
                30,
                f"live-{i}'s stage change",
            )
            first = next(x for x in got if x.doc["customer_id"] == f"live-{i}")
            latencies.append(first.received_at - at.timestamp())
    print("event-to-output latency (s):", [round(x, 2) for x in latencies])
    assert max(latencies) < settings.allowed_lateness + 2.0, latencies
    assert not any(r.doc["late"] for r in changes.records)


async def _ready(url: str) -> bool:
    status, _ = await get(url)
    return status == 200


async def test_a_far_future_event_in_a_backlog_fires_no_other_customers_timer(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """One event dated 9998 on the partition of a customer who ordered ten minutes after
    the checkout, further down the backlog: no cart_abandoned."""
    settings = replace(settings, timer_interval=0.2)
    past = datetime.now(UTC) - timedelta(days=3)
    buyer = "future-buyer"
    liar = next(
        f"liar-{n}"
        for n in range(1000)
        if partition_for(f"liar-{n}", settings.partitions)
        == partition_for(buyer, settings.partitions)
    )
    one_key = b"same-input-partition"
    backlog = [replace(sent(buyer, "clickstream", "checkout_started", past), key=one_key)]
    backlog.append(
        replace(
            sent(liar, "clickstream", "page_view", datetime(9998, 1, 1, tzinfo=UTC)), key=one_key
        )
    )
    for n in range(3000):  # others, in between, on the same input partition
        at = past + timedelta(seconds=n / 10)
        backlog.append(
            replace(sent(f"filler-{n % 300}", "clickstream", "page_view", at), key=one_key)
        )
    backlog.append(
        replace(
            sent(buyer, "clickstream", "order_completed", past + timedelta(minutes=10)),
            key=one_key,
        )
    )
    await produce(settings, records(settings, backlog))
    async with (
        Collector(settings, settings.triggers_topic) as triggers,
        Collector(settings, settings.stage_changes_topic) as changes,
    ):
        worker = start_worker(workers, settings, tmp_path, "a")
        await triggers.wait_until(
            lambda r: (buyer, "purchase_completed") in fired(r), 120, "the buyer's order"
        )
        await changes.wait_until(
            lambda r: any(x.doc["customer_id"] == liar for x in r), 60, "the liar applied"
        )
        _, text = await get(f"http://127.0.0.1:{worker.settings.web_port}/metrics")
    assert (buyer, "cart_abandoned") not in fired(triggers.records)
    assert total(samples(text), "journey_clock_skew_events_total") >= 1


async def test_events_held_at_a_sigkill_are_applied_in_order_after_the_restart(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """An hour of allowed lateness holds live events; the worker is killed once their offsets
    are committed; restarted with no lateness it releases them from its table, in order."""
    holding = replace(settings, allowed_lateness=3600.0)
    now = datetime.now(UTC)
    items = []
    for i in range(20):
        c = f"held-{i}"
        items += [
            sent(c, "research", "review_read", now - timedelta(minutes=30)),
            sent(c, "clickstream", "order_completed", now - timedelta(minutes=20)),
            sent(c, "support", "ticket_opened", now - timedelta(minutes=10)),
        ]
    worker = start_worker(workers, holding, tmp_path, "a")
    metrics = f"http://127.0.0.1:{worker.settings.web_port}/metrics"
    await wait_for(
        lambda: _ready(f"http://127.0.0.1:{worker.settings.web_port}/readyz"), 90, "ready"
    )
    async with Collector(settings, settings.stage_changes_topic) as changes:
        # Research first, then the rest: arrival order would make a different chain.
        await produce(holding, records(holding, items[0::3]))
        await produce(holding, records(holding, items[2::3] + items[1::3]))

        async def held_and_committed() -> bool:
            _, text = await get(metrics)
            found = samples(text)
            held = total(found, "journey_events_held")
            lag = total(found, "journey_consumer_lag")
            return held == len(items) and lag == 0 and "journey_consumer_lag" in found

        await wait_for(held_and_committed, 60, "every event held, every offset committed")
        assert changes.records == [], "nothing applied while held"
        worker.kill()
        start_worker(workers, replace(settings, allowed_lateness=0.0), tmp_path, "a")
        expected = expected_chains(settings, items)
        want = sum(len(c) for c in expected.values())
        await changes.wait_until(
            lambda r: len({x.doc["id"] for x in r}) >= want, 120, "the held events applied"
        )
    assert received_chains(changes.records) == expected


async def test_several_timers_on_one_partition_each_fire_near_their_deadline(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Every tick is acknowledged, so a partition's second and third timers do not wait for
    the first tick's retry (30 s)."""
    settings = replace(settings, definition=short_definition(tmp_path), timer_interval=0.5)
    first = "tick-0"
    target = partition_for(first, settings.partitions)
    others = [f"tick-{n}" for n in range(1, 2000)]
    same = [first, *[c for c in others if partition_for(c, settings.partitions) == target][:2]]
    worker = start_worker(workers, settings, tmp_path, "a")
    url = f"http://127.0.0.1:{worker.settings.web_port}/readyz"
    await wait_for(lambda: _ready(url), 90, "the worker ready")
    deadlines: dict[str, datetime] = {}
    async with Collector(settings, settings.triggers_topic) as triggers:
        for customer in same:
            at = datetime.now(UTC)
            deadlines[customer] = at + timedelta(seconds=4)
            await produce(
                settings,
                records(settings, [sent(customer, "clickstream", "checkout_started", at)]),
            )
            await triggers.wait_until(
                lambda r, c=customer: (c, "sales_assist") in fired(r), 60, f"{customer} armed"
            )
        await triggers.wait_until(
            lambda r: all((c, "cart_abandoned") in fired(r) for c in same), 60, "all three fired"
        )
    for customer in same:
        doc = fired(triggers.records)[(customer, "cart_abandoned")][0]
        arrived = min(r.received_at for r in triggers.records if r.doc["id"] == doc["id"])
        late = arrived - deadlines[customer].timestamp()
        assert 0 <= late < 3.5, (customer, late)
