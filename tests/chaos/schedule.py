"""The seeded fault schedule: which fault, after which gap, against which worker.

The gaps between faults are the schedule itself (faults arrive at times the
seed chose), not waits for correctness: nothing is judged until the run has
quiesced on conditions (see :mod:`tests.chaos.runner`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["kill", "kill_wipe", "pause", "scale", "rolling"]

DESCRIPTIONS: dict[str, str] = {
    "kill": "kill -9, restart on the same data dir",
    "kill_wipe": "kill -9, restart on a wiped data dir",
    "pause": "SIGSTOP longer than the session timeout, then SIGCONT",
    "scale": "scale 3 -> 2 -> 4 -> 3 (SIGTERM, two new workers, SIGTERM)",
    "rolling": "rolling SIGTERM restart of every worker, each waited ready",
}


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    gap: float
    """Seconds after the previous fault ended."""
    pick: int
    """Chooses the target among the running workers (modulo their number)."""
    hold: float
    """Seconds paused (pause), or down before the restart (kill), or between scale steps."""


def plan(
    seed: int,
    *,
    session_timeout: float,
    gap: tuple[float, float] = (2.0, 6.0),
    extras: int = 60,
) -> list[Fault]:
    """Every kind once (in a seeded order), then ``extras`` more drawn at random.

    The runner always runs the first five and then the extras while time is left.
    """
    rng = random.Random(f"faults-{seed}")
    kinds: list[FaultKind] = ["kill", "kill_wipe", "pause", "scale", "rolling"]
    rng.shuffle(kinds)
    weights: list[tuple[FaultKind, int]] = [
        ("kill", 4),
        ("kill_wipe", 2),
        ("pause", 3),
        ("scale", 1),
        ("rolling", 1),
    ]
    kinds += rng.choices([k for k, _ in weights], weights=[w for _, w in weights], k=extras)

    def hold(kind: FaultKind) -> float:
        if kind == "pause":
            return round(session_timeout * rng.uniform(1.3, 2.0), 1)
        if kind in ("kill", "kill_wipe"):
            return round(rng.uniform(0.2, 2.0), 1)
        return round(rng.uniform(*gap), 1)

    return [
        Fault(kind, round(rng.uniform(*gap), 1), rng.randrange(1000), hold(kind)) for kind in kinds
    ]
