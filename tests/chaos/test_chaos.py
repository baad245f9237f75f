"""The short chaos run of ``make test``: every fault kind once, then the checker (target 0).

``make chaos`` runs the long version. ``CHAOS_SEED`` picks another seed here, and
``CHAOS_WORKDIR`` keeps logs and the history dump (``python -m tests.chaos.explain``)
somewhere that outlives pytest's temporary directories.

The embedded broker's group coordinator never lets a group form again once the
member it named leader is gone while the group is forming
(``tests/chaos/coordinator.py``). This run therefore starts each fault on a
settled group and keeps a killed worker down past its session
(``ChaosConfig.broker_safe``). Should it meet the loop all the same, it cannot
finish its work: only what no amount of waiting could repair is judged on it
(:data:`SAFETY`: nothing wrong was ever written), and the whole checker on a
second run with the next seed. Everything is printed, the loop included; a
second loop fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.runner import ChaosConfig, RunResult, run
from tests.chaos.workload import WorkloadShape

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

SAFETY = frozenset(
    {
        "stage_changes.one_payload_per_id",
        "stage_changes.one_header_set_per_id",
        "stage_changes.one_payload_per_customer_sequence",
        "stage_changes.keyed_by_customer",
        "stage_changes.sequences_1_to_n",
        "stage_changes.chained",
        "stage_changes.first_occurrences_in_sequence_order",
        "final_state.no_unknown_customers",
        "triggers.one_payload_per_id",
        "triggers.at_most_once_per_customer_rule_cycle",
        "dead_letters.only_malformed_offsets",
        "dead_letters.reason",
        "dead_letters.restorable",
        "dead_letters.one_payload_per_offset",
        "changelog.never_goes_back",
        "changelog.one_history",
    }
)
"""Checks that hold at every moment, finished or not: judged even on a run the broker stalled."""


def short_run(seed: int, workdir: Path) -> RunResult:
    config = ChaosConfig(
        seed=seed,
        duration=float(os.environ.get("CHAOS_DURATION", "40")),
        shape=WorkloadShape(customers=300, hot_customers=3, hot_events=1200),
        gap=(1.0, 3.0),
        settle_timeout=90.0,
        broker_safe=True,
        # Settling before each fault spreads the five over about two minutes: keep
        # records coming for most of them, not only the first.
        produce_fraction=2.0,
        workdir=workdir,
    )
    result = run(config)
    print("\n".join(result.faults))
    print(result.report.render())
    assert result.report.facts["faults injected"], "no fault was injected"
    return result


def violations(result: RunResult, only: frozenset[str] | None = None) -> str:
    found = [f for f in result.report.violated() if only is None or f.name in only]
    return ", ".join(f"{f.name}={f.count}" for f in found)


@pytest.mark.timeout(900)
def test_short_chaos_run_has_no_violations(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED", "1"))
    workdir = Path(os.environ.get("CHAOS_WORKDIR") or tmp_path)
    result = short_run(seed, workdir)
    if result.coordinator_loop is not None:
        unsafe = violations(result, SAFETY)
        assert not unsafe, f"violations (see {result.workdir}): {unsafe}"
        print(f"\nseed {seed} met the broker's coordinator loop ({result.coordinator_loop});")
        print(f"its safety checks hold; running seed {seed + 1} for the whole checker\n")
        seed += 1
        result = short_run(seed, workdir / f"seed-{seed}")
        assert result.coordinator_loop is None, (
            f"the broker looped twice: {result.coordinator_loop}"
        )
    assert result.report.violations == 0, (
        f"seed {seed}: violations (see {result.workdir}): {violations(result)}"
    )
