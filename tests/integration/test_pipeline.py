"""End to end on the embedded broker: input topics in, stage changes and dead letters out."""

from __future__ import annotations

import base64
import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from processor.contracts.outputs import restore_payload
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.journeys import Sent, event, expected_final, to_records
from tests.integration.kafka import Collector, Received, create_topics, produce
from tests.schemas import validator

pytestmark = pytest.mark.integration


def by_customer(records: list[Received]) -> dict[str, list[Received]]:
    grouped: dict[str, list[Received]] = defaultdict(list)
    for r in records:
        grouped[r.doc["customer_id"]].append(r)
    return grouped


def population() -> tuple[list[Sent], list[tuple[Sent, str]]]:
    """Good journeys of every shape, plus malformed records and the reason each must get."""
    good: list[Sent] = []
    for i in range(40):
        c = f"buyer-{i}"  # one cycle per customer across all three sources
        good += [
            event(c, "clickstream", "page_view", i),
            event(c, "research", "review_read", i + 5),
            event(c, "support", "product_question", i + 6),
            event(c, "clickstream", "add_to_cart", i + 10),
            event(c, "clickstream", "order_completed", i + 20),
            event(c, "support", "complaint", i + 60 * 24),
        ]
    for i in range(10):
        c = f"repeat-{i}"  # two cycles, one topic, so arrival order is production order
        good += [
            event(c, "clickstream", "product_view", i),
            event(c, "clickstream", "order_completed", i + 30),
            event(c, "clickstream", "page_view", 60 * 24 * 45 + i),
            event(c, "clickstream", "order_completed", 60 * 24 * 46 + i),
        ]
    for i in range(10):
        c = f"badkey-{i}"  # producers got the key wrong: null or another id
        good += [
            event(c, "research", "search_query", i, key=None),
            event(c, "clickstream", "checkout_started", i + 3, key=b"session-xyz"),
            event(c, "research", "pricing_view", i + 4, key=None),
        ]
    good += [event("ignored-only", "clickstream", "heartbeat", 1)]

    bad = [
        (Sent("clickstream", b"k1", b"{not json"), "not_json"),
        (Sent("research", b"k2", b"\xff\xfe\x00binary"), "not_utf8"),
        (Sent("support", None, b"[1, 2, 3]"), "not_an_object"),
        (
            Sent(
                "clickstream",
                b"k4",
                b'{"event_id": "x", "type": "page_view", "occurred_at": "2026-03-01T09:00:00Z"}',
            ),
            "missing_field",
        ),
        (
            Sent(
                "research",
                b"k5",
                b'{"event_id": "", "customer_id": "c", "type": "review_read", '
                b'"occurred_at": "2026-03-01T09:00:00Z"}',
            ),
            "invalid_field",
        ),
        (
            Sent(
                "support",
                b"k6",
                b'{"event_id": "y", "customer_id": "c", "type": "complaint", '
                b'"occurred_at": "yesterday"}',
            ),
            "invalid_timestamp",
        ),
    ]
    mixed: list[Sent] = []
    for i, sent in enumerate(good):
        mixed.append(sent)
        if i % 40 == 7 and bad:
            mixed.append(bad[(i // 40) % len(bad)][0])
    mixed += [b for b, _ in bad if b not in mixed]
    return mixed, bad


async def test_stage_changes_and_dead_letters_end_to_end(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    # Input topics that someone else created, with partition counts of their own.
    await create_topics(
        settings,
        {settings.clickstream_topic: 3, settings.research_topic: 2, settings.support_topic: 5},
    )
    mixed, bad = population()
    await produce(settings, to_records(settings, mixed))
    expected = expected_final(settings, [s for s in mixed if s not in {b for b, _ in bad}])
    worker = start_worker(workers, settings, tmp_path, "a")

    changes_topic = Collector(settings, settings.stage_changes_topic)
    letters_topic = Collector(settings, settings.dead_letter_topic)
    async with changes_topic as changes, letters_topic as letters:

        def complete(records: list[Received]) -> bool:
            """Arrival order across topics decides how many changes, not where they end."""
            latest = {}
            for r in records:
                doc = r.doc
                if doc["sequence"] > latest.get(doc["customer_id"], {"sequence": 0})["sequence"]:
                    latest[doc["customer_id"]] = doc
            return all(
                (latest[c]["to_stage"], latest[c]["cycle"]) == (s.stage, s.cycle)
                for c, s in expected.items()
                if c in latest
            ) and set(latest) == set(expected)

        try:
            await changes.wait_until(complete, 90, what="every expected stage change")
            await letters.wait_until(lambda r: len(r) >= len(bad), 30, "dead letters")
        except AssertionError:
            latest = {r.doc["customer_id"]: r.doc for r in changes.records}
            for customer, state in expected.items():
                got = latest.get(customer)
                if got is None or (got["to_stage"], got["cycle"]) != (state.stage, state.cycle):
                    print("mismatch", customer, state.stage, state.cycle, got)
            print(worker.log_tail())
            raise

    stage_schema = validator("stage-change.v2.json")
    grouped = by_customer(changes.records)
    assert set(grouped) == set(expected), "ignored-only customers get no state"
    for customer, records in grouped.items():
        docs = [r.doc for r in records]
        for doc in docs:
            stage_schema.validate(doc)
        sequences = [d["sequence"] for d in docs]
        assert sequences == list(range(1, len(sequences) + 1)), (customer, sequences)
        final = docs[-1]
        assert (final["to_stage"], final["cycle"]) == (
            expected[customer].stage,
            expected[customer].cycle,
        ), customer
        assert docs[0]["from_stage"] is None
        for before, after in itertools.pairwise(docs):
            assert after["from_stage"] == before["to_stage"]
            assert after["previous_stage_entered_at"] == before["changed_at"]
        assert len({r.partition for r in records}) == 1, "keyed by customer_id"
        for r in records:
            assert r.key == customer.encode()
            headers = r.headers
            assert headers["ce_specversion"] == b"1.0"
            assert headers["ce_id"].decode() == r.doc["id"]
            assert headers["ce_type"].decode().endswith("stage_changed.v2")
            assert headers["ce_time"].decode() == r.doc["changed_at"]
            assert headers["ce_subject"] == customer.encode()
            assert headers["ce_source"]
            assert headers["content-type"] == b"application/json"

    # Every buyer ends in post_purchase: the complaint came after the order.
    assert {grouped[f"buyer-{i}"][-1].doc["to_stage"] for i in range(40)} == {"post_purchase"}
    # Repeat customers went round twice; one topic and one key keep their order, so the
    # changes are exactly the engine's.
    for i in range(10):
        c = f"repeat-{i}"
        assert [r.doc["sequence"] for r in grouped[c]] == list(range(1, expected[c].sequence + 1))
        assert [r.doc["to_stage"] for r in grouped[c]] == [
            "information_search",
            "purchase",
            "need_recognition",
            "purchase",
        ]
        assert grouped[c][-1].doc["cycle"] == 2
    # Wrongly keyed records still reached their customer.
    assert {grouped[f"badkey-{i}"][-1].doc["to_stage"] for i in range(10)} == {"evaluation"}

    letter_schema = validator("dead-letter.v2.json")
    reasons = {}
    for r in letters.records:
        letter_schema.validate(r.doc)
        original = next(b for b, _ in bad if restore_payload(r.doc) == b.value)
        reasons[original.value] = r.doc["reason"]
        assert r.key == original.key
        assert r.doc["source"]["topic"] in settings.source_topics
        if r.doc["payload_encoding"] == "base64":
            assert base64.b64decode(r.doc["payload"]) == original.value
    assert reasons == {b.value: reason for b, reason in bad}
