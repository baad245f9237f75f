"""After a restart on its own RocksDB data, a worker is ready only once it counted what it holds.

The funnel and the timer index are rebuilt by a scan of the local table after
each rebalance. A worker restarted on its data directory used to answer
/readyz 200 before that scan, and then /funnel with zero customers (and, until
the scan, fired no timer): found by ``bench.memory``, whose restarted worker
seemed to hold fewer customers than it did.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.http import get, wait_for
from tests.integration.journeys import event, to_records
from tests.integration.kafka import Collector, produce

pytestmark = pytest.mark.integration


async def test_a_restarted_worker_answers_for_every_customer_it_holds(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    customers = [f"r-{i}" for i in range(40)]  # spread over all 8 partitions
    sent = [event(c, "clickstream", "page_view", i) for i, c in enumerate(customers)]
    async with Collector(settings, settings.stage_changes_topic) as changes:
        worker = start_worker(workers, settings, tmp_path, "a")
        await produce(settings, to_records(settings, sent))
        await changes.wait_until(lambda r: len(r) >= len(customers), 90, "every first change")
    before_url = f"http://127.0.0.1:{worker.settings.web_port}/funnel"
    status, before = await get(before_url)
    assert status == 200 and before["customers"] == len(customers), before
    worker.stop()
    assert worker.process is not None and worker.process.returncode == 0

    restarted = start_worker(workers, settings, tmp_path, "a")  # the same data directory
    base = f"http://127.0.0.1:{restarted.settings.web_port}"

    async def ready() -> bool:
        status, _ = await get(f"{base}/readyz")
        return status == 200

    await wait_for(ready, 90, "the restarted worker ready")
    missing = []
    for customer in customers:
        status, body = await get(f"{base}/customers/{customer}")
        if status != 200:
            missing.append((customer, status, body))
    assert not missing, f"{len(missing)} of {len(customers)} not served: {missing[:3]}"
    status, funnel = await get(f"{base}/funnel")
    assert status == 200
    assert (funnel["customers"], funnel["stages"]) == (before["customers"], before["stages"])
