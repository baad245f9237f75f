"""Talking to the topics from a terminal: ``journey produce``, ``forget`` and ``tail``."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from processor.contracts.erasure import encode_erasure_request
from processor.engine import SOURCES, JourneyModel, Source
from processor.engine.erasure import ForgetRequest
from processor.kafka_security import client_kwargs
from processor.settings import Settings


def source_of(doc: dict[str, Any], model: JourneyModel) -> Source | None:
    """The input source of an event line: its ``source`` field, else inferred from its type."""
    declared = doc.get("source")
    for source in SOURCES:
        if declared == source:
            return source
    matches = [s for s in SOURCES if model.evidence_for(s, str(doc.get("type"))) is not None]
    return matches[0] if len(matches) == 1 else None


def plan_lines(
    lines: Iterable[str], settings: Settings, model: JourneyModel
) -> tuple[list[tuple[str, bytes | None, bytes]], list[str]]:
    """Records to send (topic, key, value) and problems (with line numbers) of a JSON-lines file.

    Lines are sent as they are, byte for byte: the processor decides what is valid.
    """
    topic_of = {source: topic for topic, source in settings.source_topics.items()}
    records: list[tuple[str, bytes | None, bytes]] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc})")
            continue
        if not isinstance(doc, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        source = source_of(doc, model)
        if source is None:
            problems.append(
                f"line {number}: cannot tell the source of type {doc.get('type')!r}; "
                f'add "source": one of {list(SOURCES)}'
            )
            continue
        customer = doc.get("customer_id")
        key = customer.encode() if isinstance(customer, str) and customer else None
        records.append((topic_of[source], key, line.rstrip("\n").encode()))
    return records, problems


async def produce(settings: Settings, records: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await producer.start()
    try:
        sent = 0
        for topic, key, value in records:
            await producer.send(topic, value, key=key)
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def produce_file(path: Path, settings: Settings, model: JourneyModel, out: TextIO) -> int:
    with path.open(encoding="utf-8") as handle:
        records, problems = plan_lines(handle, settings, model)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return 2
    sent = asyncio.run(produce(settings, records))
    print(f"sent {sent} events from {path}", file=out)
    return 0


def forget_customers(
    customer_ids: Sequence[str], request_id: str | None, settings: Settings, out: TextIO
) -> int:
    """Send one erasure request per id (key = the id); print each id with its request id.

    The request id is what the confirmation on the erasures topic echoes; a new
    UUID per id unless one is given. The workers do the deleting.
    """
    now = datetime.now(UTC)
    requests = [ForgetRequest(c, request_id or str(uuid.uuid4()), now) for c in customer_ids]
    for r in requests:
        length = len(r.customer_id.encode("utf-8", "surrogatepass"))
        if not 1 <= length <= settings.max_id_length:
            print(
                f"journey forget: {r.customer_id[:64]!r}: a customer id has 1 to "
                f"{settings.max_id_length} UTF-8 bytes (JOURNEY_MAX_ID_LENGTH)",
                file=sys.stderr,
            )
            return 2
    topic = settings.erasure_requests_topic
    records = [(topic, r.customer_id.encode(), encode_erasure_request(r)) for r in requests]
    asyncio.run(produce(settings, records))
    for r in requests:
        print(f"{r.customer_id}\t{r.request_id}", file=out)
    print(f"sent {len(requests)} erasure requests to {topic}", file=sys.stderr)
    return 0


async def tail(
    topic: str,
    settings: Settings,
    out: TextIO,
    from_beginning: bool = False,
    limit: int | None = None,
) -> int:
    """Print each record's value as a JSON line.

    No consumer group, so it never moves anyone's offsets; the subscription picks
    the topic up even if the worker has not created it yet.
    """
    consumer = AIOKafkaConsumer(
        topic,
        **client_kwargs(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        metadata_max_age_ms=2000,
    )
    await consumer.start()
    seen = 0
    try:
        async for message in consumer:
            out.write(message.value.decode("utf-8", "replace") + "\n")
            out.flush()
            seen += 1
            if limit is not None and seen >= limit:
                break
    finally:
        await consumer.stop()
    return seen
