"""Triggers end to end: rules fire on real workers, timers fire with no further input."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from processor.engine.model import default_definition_text
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.journeys import Sent
from tests.integration.kafka import Collector, Received, produce
from tests.integration.test_operations import get, samples, total, wait_for

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SHORT = {
    'within = "1h"': 'within = "4s"',
    'within = "72h"': 'within = "5s"',
    'within = "60d"': 'within = "6s"',
}
_n = iter(range(1, 10**6))


def short_definition(tmp_path: Path) -> Path:
    """The default definition with its absences shortened to seconds."""
    text = default_definition_text()
    for old, new in SHORT.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "journey.toml"
    path.write_text(text)
    return path


def sent(customer: str, source: str, event_type: str, at: datetime, **props: Any) -> Sent:
    doc = {
        "event_id": f"tr-{next(_n)}",
        "customer_id": customer,
        "type": event_type,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "properties": props,
    }
    return Sent(source, customer.encode(), orjson.dumps(doc))  # type: ignore[arg-type]


async def _ready(url: str) -> bool:
    status, _ = await get(url)
    return status == 200


def records(settings: Settings, items: list[Sent]) -> list[tuple[str, bytes | None, bytes]]:
    topic_of = {source: topic for topic, source in settings.source_topics.items()}
    return [(topic_of[s.source], s.key, s.value) for s in items]


def fired(received: list[Received]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in received:
        doc = r.doc
        by.setdefault((doc["customer_id"], doc["trigger"]), []).append(doc)
    return by


def at_most_once_by_id(received: list[Received]) -> None:
    """Repeats are allowed (at least once), but only as identical copies of one id."""
    by_id: dict[str, set[bytes]] = {}
    for r in received:
        by_id.setdefault(r.doc["id"], set()).add(r.value)
    assert all(len(v) == 1 for v in by_id.values())
    per_rule = Counter((r.doc["customer_id"], r.doc["trigger"], r.doc["cycle"]) for r in received)
    ids_per_rule = Counter(
        (d["customer_id"], d["trigger"], d["cycle"])
        for d in {r.doc["id"]: r.doc for r in received}.values()
    )
    assert all(n == 1 for n in ids_per_rule.values()), ids_per_rule
    assert per_rule  # something fired at all


async def test_every_default_rule_fires_when_it_should_and_not_otherwise(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = replace(settings, definition=short_definition(tmp_path), timer_interval=0.5)
    schema = Draft202012Validator(
        json.loads((SCHEMAS / "trigger.v2.json").read_text()),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    worker = start_worker(workers, settings, tmp_path, "a")
    async with Collector(settings, settings.triggers_topic) as triggers:
        # Deadlines count from now: the worker must be running (and its inputs idle) first.
        await wait_for(
            lambda: _ready(f"http://127.0.0.1:{worker.settings.web_port}/readyz"), 90, "ready"
        )
        now = datetime.now(UTC)
        late = now - timedelta(days=1)
        await produce(
            settings,
            records(
                settings,
                [
                    # cart left behind: cart_abandoned 4 s after the checkout, no further input
                    sent("abandoner", "clickstream", "checkout_started", now),
                    # ordered within the window: no cart_abandoned
                    sent("buyer", "clickstream", "checkout_started", now),
                    sent("buyer", "clickstream", "order_completed", now + timedelta(seconds=1)),
                    # stays in evaluation: stalled_in_evaluation after 5 s
                    sent("staller", "research", "comparison_view", now),
                    # bought before, unhappy now (rating <= 2), came back to buy again
                    sent("returner", "clickstream", "order_completed", late),
                    sent(
                        "returner",
                        "support",
                        "satisfaction_rating",
                        late + timedelta(hours=1),
                        score=1,
                    ),
                    sent("returner", "clickstream", "order_completed", now),
                    # a happy rating in post-purchase: no churn_risk
                    sent("happy", "clickstream", "order_completed", now),
                    sent("happy", "support", "satisfaction_rating", now, score=5),
                ],
            ),
        )
        try:
            await triggers.wait_until(
                lambda r: (
                    {
                        ("abandoner", "cart_abandoned"),
                        ("staller", "stalled_in_evaluation"),
                        ("happy", "winback"),
                    }
                    <= set(fired(r))
                ),
                60,
                "the absence timers",
            )
        except AssertionError:
            print(worker.log_tail())
            raise
        # Past every deadline of the customers that must not fire, by a margin.
        await triggers.wait_until(
            lambda r: datetime.now(UTC) > now + timedelta(seconds=12), 30, "a quiet margin"
        )

    got = fired(triggers.records)
    for r in triggers.records:
        schema.validate(r.doc)
        assert r.key == r.doc["customer_id"].encode()
        assert r.headers["ce_type"] == b"io.journey-processor.trigger.v2"
        assert r.headers["ce_id"].decode() == r.doc["id"]
    at_most_once_by_id(triggers.records)

    abandoned = got[("abandoner", "cart_abandoned")][0]
    deadline = now + timedelta(seconds=4)
    assert abandoned["fired_at"] == deadline.isoformat().replace("+00:00", "Z")
    arrived = min(r.received_at for r in triggers.records if r.doc["id"] == abandoned["id"])
    assert 0 <= arrived - deadline.timestamp() < 5, "fires within a few seconds of its deadline"
    assert ("buyer", "cart_abandoned") not in got
    assert ("buyer", "purchase_completed") in got and ("buyer", "sales_assist") in got
    assert ("staller", "sales_assist") in got
    assert ("returner", "churn_risk") in got
    assert [d["cycle"] for d in got[("returner", "repeat_purchase")]] == [2]
    assert ("happy", "churn_risk") not in got
    assert ("abandoner", "stalled_in_evaluation") in got  # checkout is evaluation too
    assert ("buyer", "stalled_in_evaluation") not in got  # progress cancelled it


async def test_a_timer_armed_before_a_sigkill_fires_once_after_the_restart(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    settings = replace(settings, definition=short_definition(tmp_path), timer_interval=0.5)
    async with Collector(settings, settings.triggers_topic) as triggers:
        worker = start_worker(workers, settings, tmp_path, "a")
        now = datetime.now(UTC) + timedelta(seconds=8)  # a deadline well after the kill
        await produce(
            settings, records(settings, [sent("kill", "clickstream", "checkout_started", now)])
        )
        await triggers.wait_until(
            lambda r: ("kill", "sales_assist") in fired(r), 60, "the timer armed"
        )
        worker.kill()
        start_worker(workers, settings, tmp_path, "a")  # same data directory
        await triggers.wait_until(
            lambda r: ("kill", "cart_abandoned") in fired(r), 90, "cart_abandoned after restart"
        )
        await triggers.wait_until(
            lambda r: datetime.now(UTC) > now + timedelta(seconds=10), 30, "a quiet margin"
        )
    at_most_once_by_id(triggers.records)
    assert len({d["id"] for d in fired(triggers.records)[("kill", "cart_abandoned")]}) == 1


async def test_a_replayed_backlog_decides_by_event_time(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """History with the default durations: an order 10 minutes after checkout is no abandon."""
    past = datetime.now(UTC) - timedelta(days=30)
    backlog = []
    for i in range(50):
        t = past + timedelta(minutes=5 * i)
        backlog.append(sent(f"hist-{i}", "clickstream", "checkout_started", t))
        if i % 2 == 0:  # ordered ten minutes later: no cart_abandoned
            backlog.append(
                sent(f"hist-{i}", "clickstream", "order_completed", t + timedelta(minutes=10))
            )
    await produce(settings, records(settings, backlog))  # all of it before the worker starts
    async with Collector(settings, settings.triggers_topic) as triggers:
        start_worker(workers, settings, tmp_path, "a")
        await triggers.wait_until(
            lambda r: sum(1 for k in fired(r) if k[1] == "cart_abandoned") >= 25,
            90,
            "cart_abandoned for the 25 who did not order",
        )
        await triggers.wait_until(
            lambda r: sum(1 for k in fired(r) if k[1] == "purchase_completed") >= 25,
            60,
            "the purchases",
        )
    abandoned = {c for (c, rule) in fired(triggers.records) if rule == "cart_abandoned"}
    assert abandoned == {f"hist-{i}" for i in range(50) if i % 2}


async def test_timers_move_with_their_partition_in_a_rebalance(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Timers armed on one worker fire once each after half the partitions moved away."""
    definition = short_definition(tmp_path)
    # cart_abandoned 30 s after the checkout: armed well before the rebalance, due after it.
    # (A checkout dated in the future would be held until its time: see README, Event time.)
    definition.write_text(definition.read_text().replace('within = "4s"', 'within = "30s"'))
    settings = replace(settings, definition=definition, timer_interval=0.5)
    customers = [f"move-{i}" for i in range(24)]
    async with Collector(settings, settings.triggers_topic) as triggers:
        a = start_worker(workers, settings, tmp_path, "a")
        checkout = datetime.now(UTC)
        deadline_base = checkout + timedelta(seconds=30)  # after the rebalance
        await produce(
            settings,
            records(
                settings,
                [sent(c, "clickstream", "checkout_started", checkout) for c in customers],
            ),
        )
        await triggers.wait_until(
            lambda r: {c for (c, rule) in fired(r) if rule == "sales_assist"} == set(customers),
            60,
            "the timers armed on worker a",
        )
        b = start_worker(workers, settings, tmp_path, "b")  # takes over half the partitions
        await triggers.wait_until(
            lambda r: {c for (c, rule) in fired(r) if rule == "cart_abandoned"} == set(customers),
            120,
            "every timer fired, on whichever worker now owns it",
        )
        await triggers.wait_until(
            lambda r: datetime.now(UTC) > deadline_base + timedelta(seconds=10), 30, "a margin"
        )
    at_most_once_by_id(triggers.records)
    for worker in (a, b):  # the timers really were spread over both workers
        _, text = await get(f"http://127.0.0.1:{worker.settings.web_port}/metrics")
        assert total(samples(text), "journey_triggers_total", trigger="cart_abandoned") > 0
