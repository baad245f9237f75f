"""The intake's group: a worker upgraded from the Faust router carries on where it was.

Before the intake, Faust's group (``app_id``) committed the input offsets. A worker
of this version reads the inputs as ``{app_id}-router``; a partition that group
never committed starts at the offset Faust's group committed for it, not at the
log start, so an upgrade neither replays the whole history nor skips anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from processor.app.intake import records_behind
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.http import wait_for
from tests.integration.journeys import event, to_records
from tests.integration.kafka import Collector, create_topics, produce

pytestmark = pytest.mark.integration


async def test_an_upgraded_worker_starts_where_the_faust_group_committed(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    await create_topics(
        settings,
        {settings.clickstream_topic: 1, settings.research_topic: 1, settings.support_topic: 1},
    )
    old = [event(f"old-{i}", "clickstream", "page_view", i) for i in range(30)]
    new = [event(f"new-{i}", "clickstream", "page_view", 100 + i) for i in range(30)]
    await produce(settings, to_records(settings, old + new))

    # What the Faust router of the previous version left: the old records committed.
    legacy = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=settings.app_id,
        enable_auto_commit=False,
    )
    await legacy.start()
    try:
        tp = TopicPartition(settings.clickstream_topic, 0)
        legacy.assign([tp])
        await legacy.commit({tp: len(old)})
    finally:
        await legacy.stop()

    async with Collector(settings, settings.stage_changes_topic) as changes:
        start_worker(workers, settings, tmp_path, "a")
        await changes.wait_until(
            lambda r: {x.doc["customer_id"] for x in r} >= {f"new-{i}" for i in range(30)},
            90,
            "every record after the Faust group's commit applied",
        )
        await wait_for(lambda: _caught_up(settings), 60, "the intake committed to the end")
    seen = {x.doc["customer_id"] for x in changes.records}
    assert not {c for c in seen if c.startswith("old-")}, "committed records are not replayed"


async def _caught_up(settings: Settings) -> bool:
    return await records_behind(settings) == 0
