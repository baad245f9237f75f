"""Reading what the processor left behind: whole topics without a group, and the HTTP API.

A topic is read the way Kafka Streams' EOS system tests verify output: assign
every partition, seek to the beginning, read to the end. The embedded broker
can report an end offset one batch short, so reading also continues until
polls come back empty twice in a row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from processor.app.intake import router_group
from processor.settings import Settings
from tests.integration.conftest import AUTH


@dataclass(frozen=True, slots=True)
class Out:
    """One record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int = -1
    """The record's timestamp (ms), to line it up with the workers' logs."""

    @property
    def doc(self) -> Any:
        return orjson.loads(self.value) if self.value is not None else None


async def read_topic(settings: Settings, topic: str, idle_polls: int = 2) -> list[Out]:
    """Every record of ``topic``, per partition in offset order; [] if it does not exist."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    records: list[Out] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        empty = 0
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, messages in batch.items():
                records += [
                    Out(
                        topic, tp.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp
                    )
                    for m in messages
                ]
            positions = {tp: await consumer.position(tp) for tp in tps}
            at_end = all(positions[tp] >= ends[tp] for tp in tps)
            empty = empty + 1 if not batch else 0
            if at_end and empty >= idle_polls:
                break
    finally:
        await consumer.stop()
    records.sort(key=lambda r: (r.partition, r.offset))
    return records


async def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """End offset of every partition of ``topics`` (missing topics are left out)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): n for tp, n in ends.items()}
    finally:
        await consumer.stop()


async def group_caught_up(
    settings: Settings, floor: dict[tuple[str, int], int] | None = None
) -> tuple[bool, int, dict[tuple[str, int], int]]:
    """Whether the workers committed every input and internal record; the records behind; the ends.

    The inputs are committed by the intake's group, the internal topic by Faust's
    (processor.app.intake). The internal events topic never stands still: every
    worker's router sends a watermark heartbeat to each of its partitions every few
    seconds (app/ordering.py), so at any instant one of them is likely just written
    and not yet committed (commits come every few seconds too). For that topic the
    target is ``floor``, the end offsets of a previous call: everything that was
    there then must be committed now. Without a floor it is the end, as for the
    input topics, which stand still once the workload is produced.

    Each probe has one group's id but never subscribes (see processor.demo.run):
    the admin client's OffsetFetch does not work with the embedded broker.
    """
    behind = 0
    ends: dict[tuple[str, int], int] = {}
    for group, topics in (
        (router_group(settings), list(settings.source_topics)),
        (settings.app_id, [settings.events_topic]),
    ):
        probe = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await probe.start()
        try:
            tps = []
            for topic in topics:
                found = probe.partitions_for_topic(topic)
                if not found:
                    return False, -1, {}
                tps += [TopicPartition(topic, p) for p in found]
            for tp, n in (await probe.end_offsets(tps)).items():
                ends[(tp.topic, tp.partition)] = n
            for tp in tps:
                where = (tp.topic, tp.partition)
                target = ends[where]
                if floor is not None and tp.topic == settings.events_topic and where in floor:
                    target = min(target, floor[where])
                behind += max(0, target - (await probe.committed(tp) or 0))
        finally:
            await probe.stop()
    return behind == 0, behind, ends


async def customers(
    urls: list[str], ids: Iterable[str], seconds: float = 60.0, concurrency: int = 16
) -> dict[str, dict[str, Any] | None]:
    """``GET /customers/{id}`` for each id from any worker (they forward); None for a 404.

    A 503 (ownership moving, owner unreachable) is retried on the next worker
    until ``seconds`` pass; what still fails is left out of the answer.
    """
    found: dict[str, dict[str, Any] | None] = {}
    gate = asyncio.Semaphore(concurrency)
    deadline = asyncio.get_running_loop().time() + seconds

    async def one(http: aiohttp.ClientSession, n: int, customer: str) -> None:
        attempt = 0
        async with gate:
            while asyncio.get_running_loop().time() < deadline:
                url = urls[(n + attempt) % len(urls)] + "/customers/" + quote(customer, safe="")
                attempt += 1
                try:
                    async with http.get(url, headers=AUTH) as response:
                        if response.status == 200:
                            found[customer] = await response.json()
                            return
                        if response.status == 404:
                            found[customer] = None
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.2)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=6.0)) as http:
        await asyncio.gather(*(one(http, n, c) for n, c in enumerate(ids)))
    return found


async def metrics_text(urls: list[str]) -> dict[str, str]:
    """Each worker's ``/metrics`` page (workers that do not answer are left out)."""
    pages: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http:
        for url in urls:
            try:
                async with http.get(url + "/metrics", headers=AUTH) as response:
                    pages[url] = await response.text()
            except (aiohttp.ClientError, TimeoutError):
                continue
    return pages


def events_total(pages: dict[str, str]) -> dict[str, float]:
    """``journey_events_total`` summed over workers, by outcome."""
    totals: dict[str, float] = {}
    for text in pages.values():
        for line in text.splitlines():
            if not line.startswith("journey_events_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            totals[outcome] = totals.get(outcome, 0.0) + float(value)
    return totals
