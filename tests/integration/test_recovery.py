"""Table recovery never moves a customer's state backwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from processor.app.partitioning import partition_for
from processor.kafka_security import client_kwargs
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.journeys import event, to_records
from tests.integration.kafka import Collector, produce

pytestmark = pytest.mark.integration


async def changelog_values(settings: Settings, key: bytes) -> list[tuple[int, bytes]]:
    """Every (partition, value) written for ``key`` to the customer-state changelog, in order."""
    topic = f"{settings.app_id}-customer-state-changelog"
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[tuple[int, bytes]] = []
    try:
        while batch := await consumer.getmany(timeout_ms=1500):
            for tp, messages in batch.items():
                found += [(tp.partition, m.value) for m in messages if m.key == key]
    finally:
        await consumer.stop()
    return found


async def test_a_replayed_older_changelog_record_does_not_regress_state(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """A stale record in the replayed part of the changelog, as a short end offset leaves it.

    Without protection the restarted worker would take the customer back to
    need_recognition and re-issue sequence 2 under its old id with a new payload.
    """
    customer = "rewind"
    async with Collector(settings, settings.stage_changes_topic) as changes:
        worker = start_worker(workers, settings, tmp_path, "a")
        await produce(
            settings, to_records(settings, [event(customer, "clickstream", "page_view", 0)])
        )
        await changes.wait_until(lambda r: len(r) >= 1, 60, "first change")
        await produce(
            settings, to_records(settings, [event(customer, "clickstream", "add_to_cart", 5)])
        )
        await changes.wait_until(lambda r: len(r) >= 2, 60, "second change")
        worker.stop()

        written = await changelog_values(settings, customer.encode())
        assert len(written) >= 2, "one state write per change"
        partition, stale = written[0]
        assert partition == partition_for(customer, settings.partitions)
        changelog = f"{settings.app_id}-customer-state-changelog"
        await produce_to_partition(settings, changelog, partition, customer.encode(), stale)

        start_worker(workers, settings, tmp_path, "a")  # same data dir: replays the stale record
        await produce(
            settings, to_records(settings, [event(customer, "clickstream", "order_completed", 9)])
        )
        await changes.wait_until(
            lambda r: any(x.doc["to_stage"] == "purchase" for x in r), 90, "the purchase"
        )

    docs = [r.doc for r in changes.records]
    purchase = next(d for d in docs if d["to_stage"] == "purchase")
    assert (purchase["sequence"], purchase["from_stage"]) == (3, "evaluation")
    assert len({d["id"] for d in docs}) == len({(d["sequence"], d["changed_at"]) for d in docs})


async def produce_to_partition(
    settings: Settings, topic: str, partition: int, key: bytes, value: bytes
) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()
