"""``journey demo``: a broker, a worker, a synthetic population, and the live funnel.

Everything it starts is a child process in its own session, stopped in a
``finally``: Ctrl-C (or any error) leaves no broker or worker behind.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from processor.app.intake import records_behind
from processor.app.preflight import preflight
from processor.broker import EmbeddedBroker, free_port
from processor.demo.funnel import FunnelTracker, render, render_summary
from processor.demo.population import DemoRecord, generate
from processor.engine import load_model
from processor.kafka_security import client_kwargs
from processor.processes import Child, start_worker
from processor.settings import Settings

MALFORMED = 12
"""Malformed records mixed into the population: the dead-letter topic has work to show."""


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="journey-demo-"))
    broker = EmbeddedBroker(log_path=workdir / "broker.log")
    worker: Child | None = None
    try:
        print("starting the embedded broker ...", file=sys.stderr)
        broker.start()
        settings = replace(
            settings,
            broker_url=broker.url,
            kafka_security_protocol="PLAINTEXT",  # the embedded broker has neither TLS nor SASL
            data_dir=workdir / "data",
            web_port=free_port(),
            session_timeout=6.0,
        )
        model = load_model(settings.definition)
        asyncio.run(preflight(settings))
        worker = start_worker(settings, workdir / "worker.log")
        print(
            f"broker {broker.bootstrap}, worker pid {worker.pid}, logs in {workdir}",
            file=sys.stderr,
        )
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=120)
        records = generate(args.customers, args.seed, start, MALFORMED)
        tracker = FunnelTracker(model.stages, model.purchase_stage)
        live = not args.no_live and sys.stdout.isatty()
        asyncio.run(_play(settings, records, tracker, args.rate, live, worker))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the worker and the broker", file=sys.stderr)
        return 130
    finally:
        if worker is not None:
            worker.stop(grace=15.0)
        broker.stop()
        shutil.rmtree(workdir / "data", ignore_errors=True)


async def _play(
    settings: Settings,
    records: list[DemoRecord],
    tracker: FunnelTracker,
    rate: float,
    live: bool,
    worker: Child,
) -> None:
    produced = 0
    started = time.monotonic()
    triggers: dict[str, set[str]] = {}  # rule -> distinct trigger ids (deliveries may repeat)
    sent_at: dict[str, float] = {}  # event id -> when it was produced (wall clock)
    latencies: list[float] = []  # produce-to-stage-change seconds, per first delivery
    topic_of = {source: topic for topic, source in settings.source_topics.items()}

    async def produce() -> None:
        nonlocal produced
        producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=5)
        await producer.start()
        try:
            for record in records:
                await producer.send(topic_of[record.source], record.value, key=record.key)
                sent_at[_event_id(record.value)] = time.time()
                produced += 1
                ahead = produced / rate - (time.monotonic() - started)
                if ahead > 0.01:
                    await asyncio.sleep(ahead)
            await producer.flush()
        finally:
            await producer.stop()

    async def consume() -> None:
        consumer = AIOKafkaConsumer(
            settings.stage_changes_topic,
            settings.dead_letter_topic,
            settings.triggers_topic,
            **client_kwargs(settings),
            group_id=None,
            auto_offset_reset="earliest",
            metadata_max_age_ms=2000,
        )
        await consumer.start()
        try:
            async for message in consumer:
                doc = orjson.loads(message.value)
                if message.topic == settings.dead_letter_topic:
                    tracker.observe_dead_letter(doc)
                elif message.topic == settings.triggers_topic:
                    triggers[doc["trigger"]] = triggers.get(doc["trigger"], set()) | {doc["id"]}
                else:
                    tracker.observe(doc)
                    produced_at = sent_at.pop(doc["trigger"]["event_id"], None)
                    if produced_at is not None:
                        latencies.append(time.time() - produced_at)
        finally:
            await consumer.stop()

    def draw() -> None:
        snapshot = tracker.snapshot(produced, len(records), time.monotonic() - started)
        width = min(shutil.get_terminal_size((100, 30)).columns, 100)
        view = render(snapshot, width=width)
        if live:
            sys.stdout.write("\x1b[H\x1b[2J" + view + "\n")
        else:
            print(view.splitlines()[0])
        sys.stdout.flush()

    producing = asyncio.create_task(produce())
    consuming = asyncio.create_task(consume())
    try:
        while not producing.done() or not await _caught_up(settings):
            if (code := worker.poll()) is not None:
                raise RuntimeError(f"the worker exited with {code}; see its log")
            if producing.done() and producing.exception() is not None:
                raise RuntimeError("producing failed") from producing.exception()
            draw()
            await asyncio.sleep(0.5 if live else 2.0)
        await asyncio.sleep(0.5)  # let the tail read the last outputs the worker just sent
        draw()
    finally:
        for task in (producing, consuming):
            task.cancel()
        await asyncio.gather(producing, consuming, return_exceptions=True)
    snapshot = tracker.snapshot(produced, len(records), time.monotonic() - started)
    print()
    print(render_summary(snapshot, tracker.dead_letters_by_reason))
    fired = ", ".join(f"{name} {len(ids):,}" for name, ids in sorted(triggers.items()))
    print(f"Triggers for marketing automation: {fired or 'none'}")
    print(f"Event-to-output latency: {latency_summary(latencies)}")


def latency_summary(latencies: list[float]) -> str:
    """Produce-to-stage-change seconds: median, 95th percentile and maximum."""
    if not latencies:
        return "no stage changes seen"
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (
        f"p50 {at(0.5):.2f} s, p95 {at(0.95):.2f} s, max {ordered[-1]:.2f} s over "
        f"{len(ordered):,} stage changes (allowed lateness plus idleness and batching)"
    )


def _event_id(value: bytes) -> str:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return ""
    return str(doc.get("event_id", "")) if isinstance(doc, dict) else ""


async def _caught_up(settings: Settings) -> bool:
    """Whether the worker committed every input and internal record."""
    return await records_behind(settings) == 0
