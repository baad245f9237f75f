"""What a Faust worker log says: group joins, assignments, warnings."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[\d+\] \[\w+\] "
JOINED = re.compile(_STAMP + r"Joined group '[^']*' \(generation (-?\d+)\)")
ASSIGNED = re.compile(_STAMP + r"Setting newly assigned partitions")
TABLE_ROW = re.compile(r"^\| (\S+)\s+\| (\{[^}]*\})\s+\|$")


def _stamp(match: re.Match[str]) -> float:
    moment = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
    return moment.timestamp() + int(match.group(2)) / 1000


def joins(log: Path) -> list[tuple[float, int]]:
    """(time, generation) of every group join in a worker log."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text(errors="replace").splitlines():
        match = JOINED.match(line)
        if match:
            found.append((_stamp(match), int(match.group(3))))
    return found


def assignment(log: Path, before: float, labels: dict[str, str]) -> str:
    """The last partition assignment a worker logged before ``before``, for ``labels``'s topics."""
    chosen: dict[str, str] = {}
    current: dict[str, str] | None = None
    for line in log.read_text(errors="replace").splitlines():
        match = ASSIGNED.match(line)
        if match:
            current = {} if _stamp(match) <= before else None
            if current is not None:
                chosen = current
            continue
        row = TABLE_ROW.match(line)
        if row and current is not None and row.group(1) in labels:
            current[labels[row.group(1)]] = row.group(2)
    return ", ".join(f"{label} {chosen.get(label, '{}')}" for label in labels.values())


def log_summary(log: Path) -> str:
    """Counts of the worker's warnings and errors: the evidence to read first."""
    lines = log.read_text(errors="replace").splitlines()
    warnings = [line for line in lines if "[WARNING]" in line]
    sizes = [int(line.split()[-1]) for line in warnings if "producer buffer full size" in line]
    stalled = sum(
        float(line.rsplit(maxsplit=1)[-1]) for line in lines if "producer flush took" in line
    )
    errors = sum("[ERROR]" in line or "Traceback" in line for line in lines)
    return (
        f"{len(warnings)} WARNING lines, {len(sizes)} of them 'producer buffer full' (up to "
        f"{max(sizes, default=0):,} pending table writes; the agent waited {stalled:.1f} s in "
        f"all for Faust's ProducerBuffer to drain), {errors} ERROR/Traceback lines; {log.name}"
    )
