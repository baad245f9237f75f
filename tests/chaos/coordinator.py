"""Telling the embedded broker's group-coordinator loop apart from a failure of ours.

Tansu 0.6.0 (the embedded broker) sometimes leaves a consumer group unable to
form after members left or died mid-rebalance: every live member is answered
JoinGroup as a *follower* of the same generation, its SyncGroup is refused
("rebalance in progress") because the member named leader never syncs, and it
joins again, for good. No worker gets partitions, so a run that meets it can
neither quiesce nor answer ``/customers``. Restarting the workers does not help
(the group keeps its leader), a broker with a working coordinator never does
this, and it is not something a worker can cause or repair. Seen in the short
chaos runs after the scale step's SIGTERM and a kill -9 in quick succession.

:func:`coordinator_loop` reads it from the workers' own logs (aiokafka says
``Joined group '<group>' (generation N)`` on every join and ``Successfully
synced group <group>`` when it got an assignment): a group is looping when
every running worker joined it at least :data:`LOOPS` times with one and the
same generation since its last sync.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

LOOPS = 4
"""Joins of one generation without a sync, on every worker, that make a loop (about 30 s)."""

_JOINED = re.compile(r"Joined group '([^']+)' \(generation (\d+)\)")
_SYNCED = re.compile(r"Successfully synced group (\S+) with generation (\d+)")


def joins_since_sync(text: str, group: str) -> list[int]:
    """The generations of the joins of ``group`` after its last successful sync in ``text``."""
    joins: list[int] = []
    for line in text.splitlines():
        synced = _SYNCED.search(line)
        if synced and synced.group(1) == group:
            joins = []
            continue
        joined = _JOINED.search(line)
        if joined and joined.group(1) == group:
            joins.append(int(joined.group(2)))
    return joins


def coordinator_loop(logs: Iterable[Path], groups: Iterable[str]) -> str | None:
    """Describe the loop if one of ``groups`` is in it on every worker whose log is given."""
    texts = {path.stem: path.read_text(errors="replace") for path in logs if path.exists()}
    if not texts:
        return None
    for group in groups:
        stuck = {name: Counter(joins_since_sync(text, group)) for name, text in texts.items()}
        repeated = [{g for g, n in joins.items() if n >= LOOPS} for joins in stuck.values()]
        common = set.intersection(*repeated)
        if common:
            generation = min(common)
            counts = ", ".join(
                f"{name} {joins[generation]}" for name, joins in sorted(stuck.items())
            )
            return (
                f"group {group} generation {generation}: every worker joined it again and "
                f"again without a sync ({counts} joins)"
            )
    return None
