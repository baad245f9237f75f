"""Baselines B and C: Faust agents on the three input topics that do nothing, or one write.

Run as ``python -m bench.noop_app`` with the same ``JOURNEY_*`` variables a
processor worker gets (its own app id, web port and data directory). The Faust
options come from :func:`processor.app.factory.faust_options`, so the baseline
pays exactly the framework costs the processor pays (same session timeout,
offset reset, acks, commit interval), and the difference between the two rows
is the processor's own work: decoding, routing, the repartition hop, the tables.

With ``BENCH_VALUE_BYTES`` set, the agent instead writes every record to a
table (baseline C, the write-per-event floor).

The agent stamps the wall-clock time of its first record and of the record
that completes ``BENCH_EXPECT`` on stdout. The benchmark measures these
baselines the same way as the processor (committed offsets); the stamps only
show how much of that figure is Faust's commit interval.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import faust

from bench.harness.config import FIRST_STAMP, LAST_STAMP
from processor.app.factory import faust_options
from processor.settings import Settings


def _app_on_inputs(settings: Settings) -> tuple[faust.App, Any]:
    """A Faust app configured like the processor, and its raw input topics."""
    app = faust.App(settings.app_id, **faust_options(settings))
    sources = app.topic(
        *settings.source_topics,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    return app, sources


def create_noop_app(settings: Settings, expect: int) -> faust.App:
    """A Faust app with one no-op agent on the input topics, configured like the processor."""
    app, sources = _app_on_inputs(settings)

    @app.agent(sources, name="noop", concurrency=1)
    async def noop(stream: Any) -> None:
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 1:
                print(f"{FIRST_STAMP} {time.time():.6f}", flush=True)
            if seen == expect:
                print(f"{LAST_STAMP} {time.time():.6f} {seen}", flush=True)

    return app


def create_table_app(settings: Settings, expect: int, value_bytes: int) -> faust.App:
    """Like the no-op app, but every record is written to a table: one write per event.

    This is the Faust floor of the design the processor's bundles avoid: no
    decoding and no engine, just ``table[key] = value`` per record, with a value
    the size of an encoded customer state. The table is keyed by the record key
    and, like every Faust table, changelogged to the record's partition.
    """
    app, sources = _app_on_inputs(settings)
    table = app.Table("per-event", partitions=settings.partitions, key_type=bytes, value_type=bytes)

    @app.agent(sources, name="write-per-event", concurrency=1)
    async def write(stream: Any) -> None:
        seen = 0
        async for event in stream.events():
            table[event.key or b"-"] = (event.value or b"").ljust(value_bytes)[:value_bytes]
            seen += 1
            if seen == 1:
                print(f"{FIRST_STAMP} {time.time():.6f}", flush=True)
            if seen == expect:
                print(f"{LAST_STAMP} {time.time():.6f} {seen}", flush=True)

    return app


def main() -> None:
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    expect = int(os.environ.get("BENCH_EXPECT", "0"))
    value_bytes = int(os.environ.get("BENCH_VALUE_BYTES", "0"))
    if value_bytes > 0:
        app = create_table_app(settings, expect, value_bytes)
    else:
        app = create_noop_app(settings, expect)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
    sys.exit(0)
