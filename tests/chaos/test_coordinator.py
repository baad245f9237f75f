"""The coordinator-loop detector on log lines as aiokafka writes them."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.coordinator import LOOPS, coordinator_loop, joins_since_sync

GROUP = "chaos2-app"


def joined(generation: int, group: str = GROUP) -> str:
    return f"[05:42:02,788] [1] [INFO] Joined group '{group}' (generation {generation}) with m"


def synced(generation: int, group: str = GROUP) -> str:
    return (
        f"[05:42:02,790] [1] [INFO] Successfully synced group {group} with generation {generation}"
    )


def write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / f"worker-{name}.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_joins_are_counted_after_the_last_sync_of_that_group_only() -> None:
    text = "\n".join(
        [joined(3), synced(3), joined(4), joined(4, "other"), synced(4, "other"), joined(4)]
    )
    assert joins_since_sync(text, GROUP) == [4, 4]


def test_every_worker_joining_one_generation_again_and_again_is_the_loop(tmp_path: Path) -> None:
    logs = [
        write(tmp_path, "w2", [joined(7), synced(7), *[joined(8)] * (LOOPS + 1)]),
        write(tmp_path, "w4", [*[joined(8)] * LOOPS, joined(10)]),
    ]
    found = coordinator_loop(logs, ["unrelated", GROUP])
    assert found is not None and f"group {GROUP} generation 8" in found


def test_an_ordinary_rebalance_is_not_the_loop(tmp_path: Path) -> None:
    logs = [
        write(tmp_path, "w1", [joined(1), synced(1), joined(2), synced(2)]),
        write(tmp_path, "w2", [joined(2), joined(2), joined(3), joined(4), joined(5)]),
    ]
    assert coordinator_loop(logs, [GROUP]) is None
    one_stuck = [*logs[:1], write(tmp_path, "w3", [joined(9)] * (LOOPS + 2))]
    assert coordinator_loop(one_stuck, [GROUP]) is None  # another worker still syncs
