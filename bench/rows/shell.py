"""The shell in-process: the router and the applier on dict tables and list sinks.

The worker's own code from input record to output bytes (decode, route, bundle,
hold for event time, apply, encode state and outputs, count), without Faust,
aiokafka, RocksDB or a broker. It runs on the wiring the shell's unit tests use
(:mod:`tests.app.shell`). Against the engine rows it shows what the shell adds to
the pure engine; against the processor row, what the runtime around it costs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.harness.config import PARTITIONS
from bench.harness.results import Row
from processor.app.partitioning import partition_for
from processor.app.pipeline import InputRecord
from processor.demo.population import DemoRecord
from tests.app.shell import SOURCES, make_shell

BATCH = 1000
"""Records per routed batch: the intake's ``JOURNEY_BATCH_MAX`` default."""


async def shell_in_process(records: Sequence[DemoRecord]) -> Row:
    """Route and apply every record in batches, as one worker owning every partition would."""
    topic_of = {source: topic for topic, source in SOURCES.items()}
    offsets: dict[tuple[str, int], int] = {}
    inputs = []
    for n, r in enumerate(records):
        topic = topic_of[r.source]
        # Keyed records where Kafka's default partitioner puts them; unkeyed ones spread.
        partition = n % PARTITIONS if r.key is None else partition_for(r.key.decode(), PARTITIONS)
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        inputs.append(InputRecord(topic, partition, offset, r.key, r.value))

    shell = make_shell(partitions=PARTITIONS)

    started, cpu_started = time.perf_counter(), time.process_time()
    for start in range(0, len(inputs), BATCH):
        await shell.feed(inputs[start : start + BATCH], drain=False)
    await shell.drain()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    changes = len(shell.changes.records)
    return Row(
        "shell: router + applier in-process",
        len(records),
        seconds,
        note=f"{len(records) / cpu:,.0f}/CPU s; dict tables; {changes:,} stage changes",
    )
