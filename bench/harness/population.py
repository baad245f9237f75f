"""The benchmark population: generated once, produced once to the three input topics."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from bench.harness.config import EVENTS_PER_CUSTOMER, PARTITIONS, TOPIC_CONFIG
from processor.demo.population import DemoRecord, generate
from processor.engine import Source


def population(events: int, customers: int | None, seed: int, malformed: int) -> list[DemoRecord]:
    """About ``events`` demo records (exactly, unless ``customers`` yields fewer)."""
    start = datetime(2025, 3, 1, tzinfo=UTC)
    count = customers or max(1, math.ceil(events / EVENTS_PER_CUSTOMER * 1.05))
    records = generate(count, seed, start, malformed)
    while customers is None and len(records) < events:
        count = math.ceil(count * 1.2)
        records = generate(count, seed, start, malformed)
    return records[:events]


async def create_topics(bootstrap: str, topics: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(t, PARTITIONS, 1, topic_configs=TOPIC_CONFIG) for t in topics]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str, records: Sequence[DemoRecord], topics: Mapping[Source, str]
) -> tuple[float, dict[TopicPartition, int], list[tuple[int, int]]]:
    """Send every record (keys as generated, so null and wrong keys too).

    Returns the seconds taken, each input partition's end offset as the
    produce acknowledgements give it, and every record's (partition, offset) in
    ``records`` order: the event-time reference breaks ties on them as the
    processor does. Those ends are exact; the broker's own
    answer (ListOffsets) can be one batch short on Tansu, which would end a
    measurement early.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    ends = {TopicPartition(t, p): 0 for t in topics.values() for p in range(PARTITIONS)}
    positions: list[tuple[int, int]] = []

    def note(acks: Sequence[Any]) -> None:
        for ack in acks:
            tp = TopicPartition(ack.topic, ack.partition)
            ends[tp] = max(ends[tp], ack.offset + 1)
            positions.append((ack.partition, ack.offset))

    try:
        started = time.perf_counter()
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            pending.append(await producer.send(topics[record.source], record.value, record.key))
            if len(pending) >= 5000:
                note(await asyncio.gather(*pending))
                pending.clear()
        note(await asyncio.gather(*pending))
        return time.perf_counter() - started, ends, positions
    finally:
        await producer.stop()
