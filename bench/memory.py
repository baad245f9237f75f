"""Memory per worker and restart-to-ready with RocksDB, for a million customers (not a test).

``python -m bench.memory [--customers 1000000] [--events-per-customer 1] [--load changelog]``
(``make bench-memory``; ``BENCH_ARGS="--customers 100000"`` to scale down).

One embedded broker, one ``python -m processor worker`` (rocksdb store, its own
data dir), synthetic minimal events: a ``page_view`` per customer and, with two
per customer, a ``pricing_view`` on research as the second. Two ways to load
them into the worker (``--load``):

* ``events``: the events are produced to the input topics, in hand-built
  batches round-robin over the partitions (the router re-keys them anyway), and
  the worker processes them like any backlog. This is the real path, but every
  event is a new customer (a state write and a stage change each), and today
  that runs at a few hundred events/s: 1M customers would take over an hour.
* ``changelog`` (the default): the in-process engine applies the same events,
  and each customer's encoded state is produced straight to the worker's
  customer-state changelog, on the partition the worker would write it to
  (``partition_for``). The worker then recovers them into RocksDB on its first
  start: the same final table as ``events``, in a few minutes.

Then:

1. **load**: the worker starts on an empty data dir and is timed until it holds
   every customer (``events``: the group committed every input record and every
   bundle on its internal topic; ``changelog``: ``/readyz`` answers 200, i.e.
   recovery is over); its resident memory (``VmRSS``) and peak (``VmHWM``) from
   ``/proc/<pid>/status`` then, and the data dir's size on disk;
2. **restart**: SIGTERM (timed until the process exits), then a new worker on
   the same data dir and app id, timed from its launch until ``/readyz``
   answers 200 (partitions assigned, tables recovered); its resident memory
   once ready, and a few customers asked for over ``/customers/{id}`` to show
   the state came back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.harness.config import PARTITIONS, SESSION_TIMEOUT
from bench.harness.logs import log_summary
from bench.harness.offsets import Offsets
from bench.harness.population import create_topics
from bench.harness.processes import (
    indented_tail,
    interrupt_on_sigterm,
    spawn_worker,
    stop_children,
    stop_one,
)
from bench.harness.watch import Sample, watch_group, worker_ready
from processor.app.partitioning import partition_for
from processor.app.tables import MARKER_KEY
from processor.broker import EmbeddedBroker, free_port
from processor.contracts.inputs import decode_event
from processor.contracts.state import encode_state
from processor.engine import CustomerState, Event, apply, load_model
from processor.processes import Child
from processor.settings import Secret, Settings

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def synthetic(customers: int, per_customer: int, first: int = 0) -> dict[str, list[bytes]]:
    """Minimal valid events per source: one page view each, a pricing view as the second."""
    by_source: dict[str, list[bytes]] = {"clickstream": [], "research": []}
    for i in range(first, first + customers):
        at = (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        customer = f"cust-{i:07d}"
        by_source["clickstream"].append(
            b'{"event_id":"e%d-1","customer_id":"%s","type":"page_view","occurred_at":"%s",'
            b'"properties":{}}' % (i, customer.encode(), at.encode())
        )
        if per_customer > 1:
            later = (T0 + timedelta(seconds=i, minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
            by_source["research"].append(
                b'{"event_id":"e%d-2","customer_id":"%s","type":"pricing_view",'
                b'"occurred_at":"%s","properties":{}}' % (i, customer.encode(), later.encode())
            )
    return by_source


async def produce_fast(
    bootstrap: str, values: dict[str, list[bytes]]
) -> tuple[float, dict[TopicPartition, int]]:
    """Hand-built batches per partition (no per-record future): about 10x aiokafka's send."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20)
    await producer.start()
    ends: dict[TopicPartition, int] = {}
    try:
        started = time.perf_counter()
        pending = []
        for topic, records in values.items():
            for p in range(PARTITIONS):
                ends[TopicPartition(topic, p)] = 0
            for offset in range(0, len(records), 4000):
                partition = (offset // 4000) % PARTITIONS
                batch = producer.create_batch()
                count = 0
                for value in records[offset : offset + 4000]:
                    if batch.append(key=None, value=value, timestamp=None) is None:
                        raise RuntimeError("batch full: raise max_batch_size")
                    count += 1
                batch.close()
                pending.append(
                    (
                        topic,
                        partition,
                        count,
                        await producer.send_batch(batch, topic, partition=partition),
                    )
                )
                if len(pending) >= 64:
                    await _settle(pending, ends)
        await _settle(pending, ends)
        return time.perf_counter() - started, ends
    finally:
        await producer.stop()


async def _settle(
    pending: list[tuple[str, int, int, asyncio.Future[object]]], ends: dict[TopicPartition, int]
) -> None:
    for topic, partition, count, future in pending:
        meta = await future
        tp = TopicPartition(topic, partition)
        ends[tp] = max(ends[tp], int(meta.offset) + count)  # type: ignore[attr-defined]
    pending.clear()


async def seed_changelog(
    bootstrap: str, topic: str, customers: int, per_customer: int, partitions: int
) -> tuple[float, int, int]:
    """Each customer's state after its synthetic events, straight to the state changelog.

    Returns seconds taken, records and bytes of state written.
    """
    model = load_model()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    written = size = 0
    try:
        batches = {p: producer.create_batch() for p in range(partitions)}
        pending: list[asyncio.Future[object]] = []

        async def flush(partition: int) -> None:
            batch = batches[partition]
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            batches[partition] = producer.create_batch()
            if len(pending) >= 64:
                await asyncio.gather(*pending)
                pending.clear()

        for i in range(0, customers, 1000):
            sources = synthetic(min(1000, customers - i), per_customer, first=i)
            by_customer: dict[str, CustomerState] = {}
            for source, values in sources.items():
                for raw in values:
                    event = decode_event(raw, source, source)  # type: ignore[arg-type]
                    if not isinstance(event, Event):
                        raise ValueError(f"synthetic event rejected: {event}")
                    step = apply(by_customer.get(event.customer_id), event, model)
                    if step.state is not None:
                        by_customer[event.customer_id] = step.state
            for customer_id, state in by_customer.items():
                partition = partition_for(customer_id, partitions)
                value = encode_state(state)
                key = customer_id.encode()
                if batches[partition].append(key=key, value=value, timestamp=None) is None:
                    await flush(partition)
                    batches[partition].append(key=key, value=value, timestamp=None)
                written += 1
                size += len(value)
        for partition in range(partitions):
            if batches[partition].record_count():
                await flush(partition)
        await asyncio.gather(*pending)
        # The embedded broker reports a partition's end offset as the first record of its
        # last batch, so Faust's recovery would stop there and leave out the rest of that
        # batch: every customer of a one-batch partition but its first. A lone marker (the
        # worker's own handover record, which recovery skips) is that last batch instead.
        for partition in range(partitions):
            await producer.send_and_wait(topic, b"{}", key=MARKER_KEY, partition=partition)
        return time.perf_counter() - started, written, size
    finally:
        await producer.stop()


def memory_of(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB (empty once it is gone)."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


def disk_usage(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def http_status(url: str, token: str = "") -> tuple[int | None, bytes]:
    """GET ``url`` (with the API token, which /customers requires); status and body."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return None, b""


async def until_ready(child: Child, port: int, limit: float) -> float | None:
    """Seconds from now until ``/readyz`` answers 200 (None if the worker died or timed out)."""
    started = time.time()
    while time.time() - started < limit:
        if not child.alive():
            return None
        status, _ = await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}/readyz")
        if status == 200:
            return time.time() - started
        await asyncio.sleep(0.1)
    return None


def mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:,.0f} MB"


async def run(args: argparse.Namespace, broker: EmbeddedBroker, work: Path) -> int:
    tag = f"m{os.getpid()}"
    settings = Settings(
        broker_url=broker.url,
        app_id=f"{tag}-memory",
        partitions=PARTITIONS,
        data_dir=work / "data-memory",
        clickstream_topic=f"{tag}.clickstream",
        research_topic=f"{tag}.research",
        support_topic=f"{tag}.support",
        stage_changes_topic=f"{tag}.stage-changes",
        dead_letter_topic=f"{tag}.dead-letter",
        session_timeout=SESSION_TIMEOUT,
        web_bind="127.0.0.1",
        web_port=free_port(),
        store_url="rocksdb://",
        log_level="info",
        api_token=Secret(secrets.token_urlsafe(16)),  # /customers answers 401 without one
    )
    state_log = f"{settings.app_id}-customer-state-changelog"
    await create_topics(
        broker.bootstrap,
        [*settings.source_topics, settings.stage_changes_topic, settings.dead_letter_topic],
    )
    print(
        f"{args.customers:,} customers, {args.events_per_customer} event(s) each, loaded by "
        f"{args.load}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
        f"work dir {work}",
        flush=True,
    )
    ends: dict[TopicPartition, int] = {}
    n = args.customers * args.events_per_customer
    if args.load == "events":
        sources = synthetic(args.customers, args.events_per_customer)
        values = {t: sources.get(source, []) for t, source in settings.source_topics.items()}
        produce_s, ends = await produce_fast(broker.bootstrap, values)
        print(f"produced {n:,} events in {produce_s:.1f} s ({n / produce_s:,.0f}/s)", flush=True)
    else:
        await create_topics(broker.bootstrap, [state_log])
        seed_s, written, size = await seed_changelog(
            broker.bootstrap, state_log, args.customers, args.events_per_customer, PARTITIONS
        )
        print(
            f"engine applied {n:,} events in-process and wrote {written:,} states "
            f"({size / max(written, 1):,.0f} B each) to {state_log} in {seed_s:.1f} s",
            flush=True,
        )

    log = work / "memory-worker.log"
    launched = time.time()
    worker = spawn_worker("memory worker", settings, log)
    shown = [launched]

    def progress(sample: Sample) -> None:
        if sample.at - shown[0] >= 15:
            shown[0] = sample.at
            inputs = sum(sample.committed.get(t, 0) for t in settings.source_topics)
            rss = memory_of(worker.process.pid).get("VmRSS")
            print(
                f"    {sample.at - launched:6.0f} s: {inputs:,}/{n:,} inputs committed, "
                f"RSS {mb(rss)}",
                flush=True,
            )

    async def ready() -> float | None:
        return worker_ready(log)

    async with Offsets(broker.bootstrap, ends) as offsets:
        if args.load == "events":
            seen = await watch_group(
                offsets,
                [worker],
                settings.app_id,
                list(settings.source_topics),
                [settings.events_topic],
                [state_log],
                ready,
                args.timeout,
                on_sample=progress,
            )
            if seen.done is None or seen.start is None:
                print(f"load did not finish: {seen.progress}; log {log}")
                print(indented_tail(worker))
                return 1
            load_s = seen.done - seen.start
            how = (
                f"Ready {seen.start - launched:.1f} s after launch, then {load_s:.1f} s to "
                f"commit every input and bundle ({n / load_s:,.0f} events/s)"
            )
        else:
            recovered = await until_ready(worker, settings.web_port, args.timeout)
            if recovered is None:
                print(f"recovery did not finish; log {log}")
                print(indented_tail(worker))
                return 1
            how = (
                f"/readyz 200 {recovered:.1f} s after launch on an empty data dir "
                f"(recovery of {args.customers:,} states from the changelog, "
                f"{args.customers / recovered:,.0f} customers/s including startup)"
            )
        loaded = memory_of(worker.process.pid)
        on_disk = disk_usage(settings.data_dir)
        print(
            f"load: {how}; RSS {mb(loaded.get('VmRSS'))} (peak {mb(loaded.get('VmHWM'))}), "
            f"{(loaded.get('VmRSS', 0) * 1024) / args.customers:,.0f} B of RSS per customer; "
            f"data dir {on_disk / 1e6:,.0f} MB on disk",
            flush=True,
        )

        sigterm = time.time()
        worker.terminate()
        await asyncio.to_thread(worker.process.wait)
        stopped = time.time() - sigterm
        stop_one(worker)
        print(f"SIGTERM: exited with {worker.process.returncode} after {stopped:.1f} s", flush=True)

        log2 = work / "memory-worker-restart.log"
        relaunched = time.time()
        again = spawn_worker("memory worker (restart)", settings, log2)
        try:
            ready_s = await until_ready(again, settings.web_port, args.timeout)
            if ready_s is None:
                print(f"restart: never ready; log {log2}")
                print(indented_tail(again))
                return 1
            after = memory_of(again.process.pid)
            ready_line = worker_ready(log2)
            step = max(1, args.customers // 50)
            spread = (*range(0, args.customers, step), args.customers - 1)
            sample = [f"cust-{i:07d}" for i in spread]
            found = 0
            for customer in sample:
                status, body = await asyncio.to_thread(
                    http_status,
                    f"http://127.0.0.1:{settings.web_port}/customers/{customer}",
                    settings.api_token_value(),
                )
                found += status == 200 and json.loads(body or b"{}").get("customer_id") == customer
            print(
                f"restart on the same data dir: /readyz 200 {ready_s:.1f} s after launch "
                f"(Faust Ready line at "
                f"{'-' if ready_line is None else f'{ready_line - relaunched:.1f} s'}); "
                f"SIGTERM to ready {stopped + ready_s:.1f} s; RSS once ready "
                f"{mb(after.get('VmRSS'))}; {found}/{len(sample)} sampled customers served",
                flush=True,
            )
            if found < len(sample):
                print(f"restart: {len(sample) - found} sampled customers not served; log {log2}")
                return 1
            grown = loaded.get("VmRSS", 0) - after.get("VmRSS", 0)
            print(
                f"memory: the loaded worker's RSS less the restarted one's (same table, not yet "
                f"read back) is {mb(grown)}, {grown * 1024 / args.customers:,.0f} B per customer",
                flush=True,
            )
        finally:
            stop_one(again)
    print(f"load log: {log_summary(log)}")
    print(f"restart log: {log_summary(log2)}")
    print(
        f"load average now {os.getloadavg()[0]:.2f}: the machine is shared, so times are "
        "noisy; memory is not"
    )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers [1000000]")
    parser.add_argument(
        "--events-per-customer", type=int, choices=(1, 2), default=1, help="1 or 2 [1]"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds the load may take [1800]"
    )
    parser.add_argument(
        "--load",
        choices=("changelog", "events"),
        default="changelog",
        help="states straight to the changelog, or events through the worker [changelog]",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (data)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="journey-bench-memory-"))
    try:
        with EmbeddedBroker(log_path=work / "tansu.log") as broker:
            try:
                return asyncio.run(run(args, broker, work))
            finally:
                stop_children()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_children()
        if not args.keep:
            shutil.rmtree(work / "data-memory", ignore_errors=True)
        print(f"logs: {work}")


if __name__ == "__main__":
    sys.exit(main())
