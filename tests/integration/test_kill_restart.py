"""At-least-once with effectively-once output: SIGKILL a worker mid-stream and restart it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from processor.app.failstop import EXIT_CODE
from processor.settings import Settings
from tests.integration.conftest import WorkerProcess, start_worker
from tests.integration.journeys import Sent, event, expected_final, to_records
from tests.integration.kafka import Collector, Received, produce

pytestmark = pytest.mark.integration


def first_half(customers: int) -> list[Sent]:
    sent: list[Sent] = []
    for i in range(customers):
        c = f"k-{i}"
        sent += [
            event(c, "clickstream", "page_view", i),
            event(c, "research", "review_read", i + 2),
        ]
    return sent


def second_half(customers: int) -> list[Sent]:
    sent: list[Sent] = []
    for i in range(customers):
        c = f"k-{i}"
        sent += [
            event(c, "clickstream", "add_to_cart", i + 10),
            event(c, "research", "pricing_view", i + 11),
            event(c, "clickstream", "order_completed", i + 20),
            event(c, "support", "ticket_opened", i + 600),
        ]
        if i % 3 == 0:  # a repeat order: a second cycle
            sent.append(event(c, "clickstream", "order_completed", i + 60 * 24 * 40))
    return sent


def latest_by_customer(records: list[Received]) -> dict[str, dict[str, object]]:
    latest: dict[str, dict[str, object]] = {}
    for r in records:
        doc = r.doc
        seen = latest.get(doc["customer_id"])
        if seen is None or doc["sequence"] > seen["sequence"]:  # type: ignore[operator]
            latest[doc["customer_id"]] = doc
    return latest


async def test_sigkill_and_restart_loses_nothing_and_reemits_identically(
    settings: Settings, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    customers = 1500
    before, after = first_half(customers), second_half(customers)
    expected = expected_final(settings, before + after)

    async with Collector(settings, settings.stage_changes_topic) as changes:
        worker = start_worker(workers, settings, tmp_path, "a")
        await produce(settings, to_records(settings, before))
        await changes.wait_until(
            lambda r: len(latest_by_customer(r)) == customers, 90, "first half applied"
        )
        settled = len(changes.records)

        await produce(settings, to_records(settings, after))
        # Kill while the second half is being applied: some of its changes are out.
        await changes.wait_until(lambda r: len(r) >= settled + 300, 90, "second half under way")
        worker.kill()
        killed_at = len(changes.records)

        restarted = start_worker(workers, settings, tmp_path, "a")  # same data directory

        def done(r: list[Received]) -> bool:
            nonlocal restarted
            if restarted.process.poll() == EXIT_CODE:
                # A worker that fail-stops (a stall: see the README, "When things go
                # wrong") is restarted by its orchestrator; so it is here. Nothing may
                # be lost either way: the checks below still hold every record to it.
                print(f"the restarted worker stopped itself (exit {EXIT_CODE}); restarting it")
                print(restarted.log_tail(8))
                restarted = start_worker(workers, settings, tmp_path, "a")
            return (
                all(
                    (doc["to_stage"], doc["cycle"]) == (expected[c].stage, expected[c].cycle)
                    for c, doc in latest_by_customer(r).items()
                )
                and len(latest_by_customer(r)) == customers
            )

        try:
            await changes.wait_until(
                done, 180, "every customer at its final stage after the restart"
            )
        except AssertionError:
            latest = latest_by_customer(changes.records)
            wrong = [
                (c, s.stage, s.cycle, latest.get(c))
                for c, s in expected.items()
                if c not in latest
                or (latest[c]["to_stage"], latest[c]["cycle"]) != (s.stage, s.cycle)
            ]
            print(f"{len(wrong)} customers short of their final stage, e.g.:")
            for w in wrong[:5]:
                print("  ", w)
            print(restarted.log_tail())
            raise

    assert killed_at < len(changes.records), "the kill came before the work was done"

    by_id: dict[str, list[Received]] = defaultdict(list)
    by_position: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in changes.records:
        by_id[r.doc["id"]].append(r)
        by_position[(r.doc["customer_id"], r.doc["sequence"])].add(r.doc["id"])

    print(
        f"killed after {killed_at} records; {len(changes.records)} records, "
        f"{len(by_id)} distinct changes, {len(changes.records) - len(by_id)} re-emitted"
    )
    # A repeat carries the same id and a byte-identical payload and headers.
    for copies in by_id.values():
        assert len({c.value for c in copies}) == 1
        assert len({tuple(sorted(c.headers.items())) for c in copies}) == 1
    # No change was emitted again under a new id.
    assert all(len(ids) == 1 for ids in by_position.values())

    # Nothing lost, no regression: each customer's distinct changes form one chain.
    chains: dict[str, dict[int, dict[str, object]]] = defaultdict(dict)
    for r in changes.records:
        chains[r.doc["customer_id"]][r.doc["sequence"]] = r.doc
    for customer, chain in chains.items():
        assert sorted(chain) == list(range(1, max(chain) + 1)), customer
        for n in range(2, len(chain) + 1):
            assert chain[n]["from_stage"] == chain[n - 1]["to_stage"], (customer, n)
            assert chain[n]["cycle"] in (chain[n - 1]["cycle"], chain[n - 1]["cycle"] + 1)  # type: ignore[operator]
