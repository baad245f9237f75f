"""Small aiokafka helpers for the integration tests: produce, create topics, collect output."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.cli.io import produce
from processor.kafka_security import client_kwargs
from processor.settings import Settings

__all__ = ["Collector", "Received", "create_topics", "produce"]


async def create_topics(settings: Settings, partitions: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in partitions.items()])
    finally:
        await admin.close()


@dataclass
class Received:
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    received_at: float = 0.0
    """Wall-clock time (time.time()) when the collector read it."""

    @property
    def doc(self) -> Any:
        return orjson.loads(self.value)


@dataclass
class Collector:
    """Reads every partition of a topic from the beginning, without a consumer group."""

    settings: Settings
    topic: str
    records: list[Received] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        # No group: nothing is committed; the subscription picks the topic up once it exists.
        self._consumer = AIOKafkaConsumer(
            self.topic,
            **client_kwargs(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=1000,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._consumer is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, messages in batch.items():
                for m in messages:
                    self.records.append(
                        Received(
                            tp.partition, m.offset, m.key, m.value, dict(m.headers), time.time()
                        )
                    )

    async def wait_until(
        self, predicate: Callable[[list[Received]], bool], seconds: float, what: str = ""
    ) -> list[Received]:
        """Wait for a condition on everything received so far; fail with a clear message."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not predicate(self.records):
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out after {seconds}s waiting for {what or 'condition'} on "
                    f"{self.topic}; have {len(self.records)} records"
                )
            await asyncio.sleep(0.1)
        return self.records
