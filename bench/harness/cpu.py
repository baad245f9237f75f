"""CPU time of processes and of the machine, from /proc."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    parts = stat.rsplit(")", 1)[1].split()  # after the command name: state is parts[0]
    return (int(parts[11]) + int(parts[12])) / _TICK


def machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the machine since boot, summed over its CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


@dataclass(frozen=True)
class CpuSample:
    at: float
    processes: dict[str, float | None]
    busy: float
    total: float


class CpuWatch:
    """Samples the CPU time of named processes and of the machine, every ``every`` seconds."""

    def __init__(self, pids: dict[str, int], every: float = 0.25) -> None:
        self.pids = pids
        self.every = every
        self.samples: list[CpuSample] = []

    def sample(self) -> None:
        busy, total = machine_cpu()
        processes = {name: process_cpu(pid) for name, pid in self.pids.items()}
        self.samples.append(CpuSample(time.time(), processes, busy, total))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def between(self, start: float, end: float) -> str | None:
        """Each process's share of one core and the machine's busy share, from ``start`` to
        ``end`` (the nearest samples at or after each)."""
        first = next((s for s in self.samples if s.at >= start), None)
        last = next((s for s in self.samples if s.at >= end), None) or (
            self.samples[-1] if self.samples else None
        )
        if first is None or last is None or last.at - first.at < 0.5:
            return None
        wall = last.at - first.at
        parts = []
        for name in self.pids:
            a, b = first.processes.get(name), last.processes.get(name)
            if a is None or b is None:
                parts.append(f"{name} -")
            else:
                parts.append(f"{name} {b - a:.1f} s ({(b - a) / wall:.0%} of a core)")
        cpus = (last.total - first.total) / wall
        busy = (last.busy - first.busy) / max(last.total - first.total, 1e-9)
        return (
            f"over {wall:.1f} s: {', '.join(parts)}; machine busy {busy:.0%} of its {cpus:.1f} CPUs"
        )
