"""The worker's garbage-collector tuning (processor.cli.tune_garbage_collector)."""

from __future__ import annotations

import gc

from processor.cli import YOUNG_GENERATION, tune_garbage_collector


def test_the_worker_freezes_startup_objects_and_collects_young_ones_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0  # startup's objects are out of the collector's sight
        assert gc.get_threshold() == (YOUNG_GENERATION, before[1], before[2])
        # A cycle made afterwards is still collected: only its collection comes later.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
