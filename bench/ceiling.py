"""The shell on plain aiokafka and RocksDB, without Faust and without the second hop.

``python -m bench.ceiling [--events N]``: an experiment, not a row of ``make
bench``. It answers one question of the throughput issue: what would the
worker cost per event if the engine side left Faust? Its process reads the
input topics with a plain aiokafka consumer (as the intake does), routes each
batch, applies the bundles in process (no internal topic: the second hop is
skipped, which a real design could not do for wrongly keyed records), keeps
the four tables in RocksDB (rocksdict) with a changelog record per write, and
sends every output and changelog record through the worker's own outbox
(``processor.app.outbox``: a record batch per topic partition, ``send_batch``)
on a plain aiokafka producer. Nothing is committed and nothing is recovered:
the guarantees are not what is measured, the CPU is.

It prints, from one run on one embedded broker: row A (the plain consumer, as
in ``make bench``), the shell in process on dict tables (no I/O), and this
process, each with its CPU per event. The processor row of ``make bench`` gives
the Faust worker's CPU per event to compare with.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rocksdict import Rdict

from bench.harness.config import PARTITIONS, SESSION_TIMEOUT
from bench.harness.population import create_topics, population, produce
from bench.rows.plain_consumer import baseline_aiokafka
from bench.rows.shell import shell_in_process
from processor.app.outbox import Outbox
from processor.app.pipeline import InputRecord
from processor.broker import EmbeddedBroker
from processor.contracts.outputs import Record
from processor.engine import Source
from tests.app.shell import DictTable, Sink, make_shell

BATCH = 1000
"""Records per routed batch: the intake's ``JOURNEY_BATCH_MAX`` default."""

OUTPUTS = ("stage-changes", "triggers", "dead-letter", "erasures", "identities")
TABLES = ("customer-state", "dedupe-chunks", "event-order", "aliases")


class RocksTable(DictTable):
    """A table in RocksDB whose every write is also sent to its changelog topic."""

    def __init__(self, path: Path, outbox: Outbox, changelog: str) -> None:
        super().__init__()
        self.db = Rdict(str(path))
        self.outbox = outbox
        self.changelog = changelog
        self.sent = 0

    def get(self, key: bytes, /) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def items(self) -> list[tuple[bytes, bytes]]:
        return [(key, value) for key, value in self.db.items() if isinstance(key, bytes)]

    async def put(self, key: bytes, value: bytes, partition: int) -> None:
        self.db[key] = value
        self.sent += 1
        await self.outbox.send(self.changelog, key, value, partition)

    async def delete(self, key: bytes, partition: int) -> None:
        self.db.delete(key)
        self.sent += 1
        await self.outbox.send(self.changelog, key, None, partition)


class OutboxSink(Sink):
    """An output topic: each record into the outbox, as the worker sends it."""

    def __init__(self, outbox: Outbox, topic: str) -> None:
        super().__init__()
        self.outbox = outbox
        self.topic = topic

    async def __call__(self, record: Record, partition: int | None) -> None:
        self.records.append((record, partition))  # as the list sink does: counted at the end
        await self.outbox.send(self.topic, record.key, record.value, partition, record.headers)


def _refused(reason: str, exc: BaseException) -> None:
    raise RuntimeError(reason) from exc


async def shell_on_kafka(bootstrap: str, topics: dict[Source, str], expect: int) -> dict[str, Any]:
    """Consume, route, apply and send everything once; wall and CPU seconds from assignment."""
    prefix = next(iter(topics.values())).rsplit(".", 1)[0]
    await create_topics(
        bootstrap, [f"{prefix}.{name}" for name in OUTPUTS + tuple(f"{t}-log" for t in TABLES)]
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        *topics.values(),
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}-ceiling",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(SESSION_TIMEOUT * 1000),
        heartbeat_interval_ms=int(SESSION_TIMEOUT * 200),
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await producer.start()
    await consumer.start()
    work = tempfile.TemporaryDirectory(prefix="ceiling-")
    deliveries: list[Any] = []
    outbox = Outbox(lambda: producer, deliveries.append, _refused)
    tables: list[RocksTable] = []

    def table(name: str) -> DictTable:
        made = RocksTable(Path(work.name) / name, outbox, f"{prefix}.{name}-log")
        tables.append(made)
        return made

    shell = make_shell(
        partitions=PARTITIONS,
        table=table,
        sink=lambda name: OutboxSink(outbox, f"{prefix}.{name}"),
    )
    source_topic = {topic: source for source, topic in topics.items()}
    shell.router.sources = {topic: source_topic[topic] for topic in topics.values()}
    try:
        seen = 0
        started = cpu_started = None
        while seen < expect:
            fetched = await consumer.getmany(timeout_ms=20, max_records=BATCH)
            if started is None:
                if not fetched:
                    continue
                started, cpu_started = time.perf_counter(), time.process_time()
            batch = [
                InputRecord(m.topic, m.partition, m.offset, m.key, m.value)
                for messages in fetched.values()
                for m in messages
            ]
            if batch:
                await shell.feed(batch, drain=False)
                seen += len(batch)
        await shell.drain()
        await outbox.flush()
        await asyncio.gather(*deliveries)  # every batch delivered: the CPU of sending is in
        assert started is not None and cpu_started is not None
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        return {
            "events": seen,
            "seconds": seconds,
            "cpu": cpu,
            "changes": len(shell.changes.records),
            "changelog": {made.changelog.rsplit(".", 1)[1]: made.sent for made in tables},
            "outputs": len(shell.sent()) - len(shell.bundles.records),
            "bundles": len(shell.bundles.records),
        }
    finally:
        await consumer.stop()
        await producer.stop()
        for made in tables:
            made.db.close()
        work.cleanup()


async def main_async(events: int) -> None:
    with EmbeddedBroker() as broker:
        records = population(events, None, 11, events // 1000)
        prefix = f"c{int(time.time())}"
        sources: tuple[Source, ...] = ("clickstream", "research", "support")
        topics = {source: f"{prefix}.{source}" for source in sources}
        await create_topics(broker.bootstrap, list(topics.values()))
        await produce(broker.bootstrap, records, topics)
        n = len(records)
        cpu = time.process_time()
        a = await baseline_aiokafka(broker.bootstrap, list(topics.values()), f"{prefix}-a", n, 240)
        a_cpu = time.process_time() - cpu
        shell = await shell_in_process(records)
        ceiling = await shell_on_kafka(broker.bootstrap, topics, n)
    assert a.seconds is not None and shell.seconds is not None
    rate_a = n / a.seconds
    rate = ceiling["events"] / ceiling["seconds"]
    print(f"{n:,} records, {PARTITIONS} partitions per topic, one embedded broker")
    print(
        f"A plain aiokafka consumer + orjson: {rate_a:,.0f}/s, {a_cpu / n * 1e6:.1f} us CPU/event"
    )
    print(
        f"shell in process, dict tables: {n / shell.seconds:,.0f}/s "
        f"({n / shell.seconds / rate_a:.3f}x of A), {shell.note}"
    )
    print(
        f"shell on aiokafka + RocksDB, no Faust, no second hop: {rate:,.0f}/s "
        f"({rate / rate_a:.3f}x of A), {ceiling['cpu'] / ceiling['events'] * 1e6:.1f} us "
        f"CPU/event, {ceiling['changes']:,} stage changes"
    )
    per = 1 / ceiling["events"]
    logs = ", ".join(f"{name} {sent * per:.3f}" for name, sent in ceiling["changelog"].items())
    print(
        f"records sent per event: outputs {ceiling['outputs'] * per:.3f}, changelogs: {logs}; "
        f"bundles applied in process {ceiling['bundles'] * per:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="input records [100000]")
    args = parser.parse_args()
    asyncio.run(main_async(args.events))


if __name__ == "__main__":
    main()
