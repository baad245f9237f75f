"""Row A: a plain aiokafka consumer with orjson, what the client and broker deliver."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from bench.harness.config import SESSION_TIMEOUT
from bench.harness.results import Row


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Stamps the first assignment: fetching starts there, so timing starts there too.

    Timing from the first record returned would leave out the fetches that
    aiokafka's background fetcher makes before ``getmany`` first returns.
    """

    def __init__(self) -> None:
        self.at: float | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self.at is None and assigned:
            self.at = time.time()


async def baseline_aiokafka(
    bootstrap: str, topics: Sequence[str], group: str, expect: int, limit: float
) -> Row:
    """A plain consumer group member with auto-commit; orjson-decodes every value."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=True,
        auto_offset_reset="earliest",
        session_timeout_ms=int(SESSION_TIMEOUT * 1000),
        heartbeat_interval_ms=int(SESSION_TIMEOUT * 200),
    )
    assigned = _Assigned()
    consumer.subscribe(list(topics), listener=assigned)
    launched = time.time()
    await consumer.start()
    try:
        seen = bad = 0
        deadline = time.monotonic() + limit
        while seen < expect:
            if time.monotonic() > deadline:
                return Row("A aiokafka consumer + orjson", expect, None, note=f"DNF: {seen} read")
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    try:
                        orjson.loads(message.value)
                    except orjson.JSONDecodeError:
                        bad += 1
                seen += len(messages)
        finished = time.time()
        start = assigned.at if assigned.at is not None else launched
        return Row(
            "A aiokafka consumer + orjson",
            seen,
            finished - start,
            startup=start - launched,
            note=f"{bad} undecodable",
        )
    finally:
        await consumer.stop()
