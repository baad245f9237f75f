"""Fail-stop and full accounting on real workers: restarts, hostile input, a bad store."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from processor import processes
from processor.app.failstop import EXIT_CODE
from processor.app.partitioning import partition_for
from processor.broker import free_port
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.http import get, samples, total, wait_for
from tests.integration.journeys import event, to_records
from tests.integration.kafka import Collector, produce
from tests.integration.test_recovery import produce_to_partition

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


async def produce_large(
    settings: Settings, records: list[tuple[str, bytes | None, bytes | None]]
) -> None:
    """Like a producer we do not control: records up to 4 MB, tombstones included."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def ready(worker: WorkerProcess, seconds: float = 90) -> None:
    url = f"http://127.0.0.1:{worker.settings.web_port}/readyz"

    async def check() -> bool:
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        status, _ = await get(url)
        return status == 200

    await wait_for(check, seconds, "the worker to be ready")


async def test_default_settings_survive_sigterm_and_sigkill_restarts(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """No JOURNEY_RECOVERY_CONSISTENCY_CHECK override: auto recognises the embedded broker."""
    assert settings.recovery_consistency_check == "auto"
    async with Collector(settings, settings.stage_changes_topic) as changes:
        worker = start_worker(workers, settings, tmp_path, "a")
        for round_, stop in enumerate(["sigterm", "sigkill", "none"]):
            customers = [f"r{round_}-{i}" for i in range(50)]
            await produce(
                settings,
                to_records(settings, [event(c, "clickstream", "page_view", 0) for c in customers]),
            )
            await changes.wait_until(
                lambda r, cs=set(customers): cs <= {x.doc["customer_id"] for x in r},
                120,
                f"round {round_}",
            )
            await ready(worker)
            if stop == "sigterm":
                worker.stop()
                assert worker.process is not None and worker.process.returncode == 0
            elif stop == "sigkill":
                worker.kill()
            else:
                break
            worker = processes.start_worker(worker.settings, worker.log_path)
            workers.append(worker)
        log = worker.log_path.read_text(errors="replace")
        assert "ConsistencyError" not in log


async def test_hostile_records_are_all_accounted_and_good_customers_all_served(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """A backlog with records far over every limit: each gets one outcome, nobody is skipped."""
    good = [event(f"g-{i}", "clickstream", "page_view", i) for i in range(300)]
    records = to_records(settings, good)
    topic = settings.clickstream_topic
    doc = orjson.loads(good[0].value)
    hostile: list[tuple[bytes | None, bytes | None]] = [
        (b"big", b"x" * 1_100_000),  # larger than a dead letter may be
        (None, b"\x00" * 300_000),  # a NUL blob
        (b"k", orjson.dumps({**doc, "customer_id": "c" * 340_000})),
        (b"k", orjson.dumps({**doc, "event_id": "e" * 33_000})),
        (b"k", b"[" * 100_000 + b"]" * 100_000),  # deep nesting
        (b"tombstone", None),
        (b"k", orjson.dumps({**doc, "customer_id": "c" * 300})),  # just over the id limit
    ]
    mixed: list[tuple[str, bytes | None, bytes | None]] = []
    for i, record in enumerate(records):
        mixed.append(record)
        if i % 40 == 0:
            key, value = hostile[(i // 40) % len(hostile)]
            mixed.append((topic, key, value))
    bad = len(mixed) - len(records)

    async with (
        Collector(settings, settings.stage_changes_topic) as changes,
        Collector(settings, settings.dead_letter_topic) as letters,
    ):
        worker = start_worker(workers, settings, tmp_path, "a")
        await produce_large(settings, mixed)
        await changes.wait_until(
            lambda r: len({x.doc["customer_id"] for x in r}) >= len(good), 120, "every good one"
        )
        await letters.wait_until(lambda r: len(r) >= bad, 60, "a dead letter per hostile record")
        await ready(worker)
        url = f"http://127.0.0.1:{worker.settings.web_port}/metrics"

        async def accounted() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            _, text = await get(url)
            found = samples(text)
            counted = total(found, "journey_records_total", topic=topic)
            return found if counted == len(mixed) else None

        metrics = await wait_for(accounted, 30, "every record counted")

    assert len(letters.records) == bad
    reasons = sorted(r.doc["reason"] for r in letters.records)
    assert set(reasons) == {"too_large", "not_json", "invalid_field"}
    for letter in letters.records:
        assert len(letter.value) < 200_000
        doc = letter.doc
        if doc["reason"] == "too_large":
            assert doc["payload"] is None and len(doc["original"]["sha256"]) == 64
    consumed = total(metrics, "journey_records_consumed_total", topic=topic)
    assert consumed == len(mixed)
    applied = total(metrics, "journey_records_total", topic=topic, outcome="applied")
    dead = total(metrics, "journey_records_total", topic=topic, outcome="dead_lettered")
    assert (applied, dead) == (len(good), bad)
    big = next(r for r in letters.records if r.doc["original"]["length"] == 1_100_000)
    assert big.doc["original"]["sha256"] == hashlib.sha256(b"x" * 1_100_000).hexdigest()


async def test_an_unreadable_store_stops_the_worker_loudly_without_committing(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """A corrupt state in the changelog: 503 with the reason, exit 70, no dead letter."""
    customer = "broken"
    async with (
        Collector(settings, settings.stage_changes_topic) as changes,
        Collector(settings, settings.dead_letter_topic) as letters,
    ):
        worker = start_worker(workers, settings, tmp_path, "a")
        await produce(
            settings, to_records(settings, [event(customer, "clickstream", "page_view", 0)])
        )
        await changes.wait_until(lambda r: len(r) >= 1, 90, "the first change")
        worker.stop()

        # A state value that wins recovery (a higher applied_count) but cannot be decoded.
        changelog = f"{settings.app_id}-customer-state-changelog"
        partition = partition_for(customer, settings.partitions)
        corrupt = orjson.dumps({"v": 999, "applied_count": 10**9})
        await produce_to_partition(settings, changelog, partition, customer.encode(), corrupt)

        worker = processes.start_worker(worker.settings, worker.log_path)
        workers.append(worker)
        url = f"http://127.0.0.1:{worker.settings.web_port}/readyz"
        reasons: list[str] = []

        async def stopped() -> bool:
            assert worker.process is not None
            if worker.process.poll() is not None:
                return True
            try:
                status, body = await get(url)
            except OSError:
                return False
            if status == 503 and "failed" in str(body):
                reasons.append(str(body))
            return False

        await wait_for(stopped, 120, "the worker to stop itself")
        assert worker.process is not None
        assert worker.process.returncode == EXIT_CODE, worker.log_tail()
        assert reasons, "readyz answered 503 with the reason before the exit"
        assert "unknown customer state version 999" in reasons[-1]
        assert "journey worker: stopping:" in worker.log_path.read_text(errors="replace")
        assert letters.records == [], "a failure of ours is never a dead letter"


async def test_a_table_recovery_that_reads_nothing_stops_the_worker(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    """Faust's recovery waiting forever on one changelog partition: exit 70, not fail-silent.

    A worker on an empty data directory recovers the customers' states from the
    changelog; one partition's records never reach its recovery (the launcher
    drops them, as the hang seen in a chaos run did). The worker must stop with
    the partition named, and a fresh start must recover the customer.
    """
    customer = "recovered-later"
    async with Collector(settings, settings.stage_changes_topic) as changes:
        first = start_worker(workers, settings, tmp_path, "a")
        await produce(
            settings, to_records(settings, [event(customer, "clickstream", "page_view", 0)])
        )
        await changes.wait_until(lambda r: len(r) >= 1, 90, "the first change")
        await ready(first)
        first.stop()

    changelog = f"{settings.app_id}-customer-state-changelog"
    partition = partition_for(customer, settings.partitions)
    own = replace(
        settings, web_port=free_port(), data_dir=tmp_path / "data-deaf", stall_timeout=10.0
    )
    env = {**own.environment(), "DEAF_TOPIC": changelog, "DEAF_PARTITION": str(partition)}
    argv = (sys.executable, "-m", "tests.integration.deaf_recovery")
    child = processes.Child.spawn("deaf", argv, env, tmp_path / "worker-deaf.log", REPO)
    deaf = processes.Worker(child.name, child.process, child.log_path, settings=own)
    workers.append(deaf)
    url = f"http://127.0.0.1:{own.web_port}/readyz"
    reasons: list[str] = []

    async def stopped() -> bool:
        if deaf.poll() is not None:
            return True
        try:
            status, body = await get(url)
        except OSError:
            return False
        if status == 503:
            reasons.append(str(body))
        return False

    await wait_for(stopped, 120, "the worker whose recovery reads nothing to stop itself")
    assert deaf.poll() == EXIT_CODE, deaf.log_tail()
    log = deaf.log_path.read_text(errors="replace")
    assert f"table recovery read nothing from {changelog}[{partition}]" in log, deaf.log_tail()
    # What it logs for the post-mortem: here the client read the records (its position
    # moved past them) and they never reached the recovery (the launcher dropped them).
    described = next(line for line in log.splitlines() if "recovery stalled:" in line)
    assert f"{changelog}[{partition}] restored_offset=-1" in described, described
    assert "assigned=True" in described and "faust_fetches=True" in described, described
    assert "client_position=" in described and "changelog_queue=0" in described, described
    assert any("recovering tables:" in r and "records left" in r for r in reasons), reasons

    # What the orchestrator does next: a fresh start, which recovers the partition.
    again = start_worker(workers, settings, tmp_path, "b")
    await ready(again)
    status, body = await get(f"http://127.0.0.1:{again.settings.web_port}/customers/{customer}")
    assert status == 200 and body["customer_id"] == customer, body
