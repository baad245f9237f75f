"""The short chaos run of ``make test``: every fault kind once, then the checker (target 0).

``make chaos`` runs the long version. ``CHAOS_SEED`` picks another seed here, and
``CHAOS_WORKDIR`` keeps logs and the history dump (``python -m tests.chaos.explain``)
somewhere that outlives pytest's temporary directories.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.runner import ChaosConfig, run
from tests.chaos.workload import WorkloadShape

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.timeout(600)
def test_short_chaos_run_has_no_violations(tmp_path: Path) -> None:
    config = ChaosConfig(
        seed=int(os.environ.get("CHAOS_SEED", "1")),
        duration=float(os.environ.get("CHAOS_DURATION", "40")),
        shape=WorkloadShape(customers=300, hot_customers=3, hot_events=1200),
        gap=(1.0, 3.0),
        settle_timeout=90.0,
        workdir=Path(os.environ.get("CHAOS_WORKDIR") or tmp_path),
    )
    result = run(config)
    print("\n".join(result.faults))
    print(result.report.render())
    assert result.report.facts["faults injected"], "no fault was injected"
    assert result.report.violations == 0, f"violations (see {result.workdir}): " + ", ".join(
        f"{f.name}={f.count}" for f in result.report.violated()
    )
