"""The live terminal view of ``journey demo``: a funnel read back from the stage-change topic.

The view is built only from what the processor publishes, the way any downstream
consumer would see it: stage changes arrive at least once and, across
partitions, in no particular order. The tracker therefore dedupes on the
change id and lets the highest sequence per customer win, so that the picture
on screen is the processor's, not an artefact of delivery.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_EIGHTHS = " ▏▎▍▌▋▊▉"
_FULL = "█"
_EMPTY = "░"
_COLOURS = ("36", "34", "35", "32", "33")


@dataclass
class FunnelSnapshot:
    """What the funnel looks like at one moment; everything :func:`render` needs."""

    stages: tuple[str, ...]
    customers_per_stage: dict[str, int]
    """Customers whose latest stage (highest sequence) is this one."""
    customers_per_cycle: dict[int, int]
    """Customers whose latest change is in this cycle, by cycle ascending."""
    stage_changes: int
    """Distinct stage changes seen (repeats of an id are not counted)."""
    dead_letters: int
    produced: int
    total: int
    elapsed_s: float
    customers_reached: dict[str, int] = field(default_factory=dict)
    """Customers who got to this stage or a later one in any cycle; empty if unknown."""
    buyers: int = 0
    repeat_buyers: int = 0
    """Customers with a purchase in cycle 2 or later, so with at least two purchases."""

    @property
    def customers(self) -> int:
        return sum(self.customers_per_stage.values())

    @property
    def events_per_s(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0


class FunnelTracker:
    """Folds stage-change and dead-letter documents into a funnel.

    The result is independent of the order and the number of times each change
    is observed, as it would be for the processor's own state.
    """

    def __init__(self, stages: Sequence[str], purchase_stage: str = "purchase") -> None:
        self._stages = list(stages)
        self._rank = {stage: rank for rank, stage in enumerate(self._stages)}
        self._purchase_stage = purchase_stage
        self._seen: set[str] = set()
        self._latest: dict[str, tuple[int, str, int]] = {}
        self._furthest: dict[str, int] = {}
        self._buyers: set[str] = set()
        self._repeat_buyers: set[str] = set()
        self._dead_letters: Counter[str] = Counter()

    def observe(self, change: Mapping[str, Any]) -> None:
        """Take one stage-change document; a repeat of an id already seen changes nothing."""
        customer_id = str(change["customer_id"])
        sequence = int(change["sequence"])
        change_id = str(change.get("id") or f"{customer_id}\n{sequence}")
        if change_id in self._seen:
            return
        self._seen.add(change_id)
        stage = str(change["to_stage"])
        cycle = int(change["cycle"])
        if stage not in self._rank:
            self._rank[stage] = len(self._stages)
            self._stages.append(stage)
        latest = self._latest.get(customer_id)
        if latest is None or sequence > latest[0]:
            self._latest[customer_id] = (sequence, stage, cycle)
        rank = self._rank[stage]
        if rank > self._furthest.get(customer_id, -1):
            self._furthest[customer_id] = rank
        purchase_rank = self._rank.get(self._purchase_stage)
        if purchase_rank is not None and rank >= purchase_rank:
            self._buyers.add(customer_id)
            if cycle >= 2:
                self._repeat_buyers.add(customer_id)

    def observe_dead_letter(self, doc: Mapping[str, Any]) -> None:
        reason = doc.get("reason")
        self._dead_letters[reason if isinstance(reason, str) and reason else "unknown"] += 1

    @property
    def dead_letters_by_reason(self) -> dict[str, int]:
        """Most frequent reason first."""
        return dict(self._dead_letters.most_common())

    def stage_of(self, customer_id: str) -> str | None:
        latest = self._latest.get(customer_id)
        return None if latest is None else latest[1]

    def snapshot(self, produced: int, total: int, elapsed_s: float) -> FunnelSnapshot:
        per_stage = dict.fromkeys(self._stages, 0)
        per_cycle: Counter[int] = Counter()
        for _, stage, cycle in self._latest.values():
            per_stage[stage] += 1
            per_cycle[cycle] += 1
        furthest = Counter(self._furthest.values())
        reached: dict[str, int] = {}
        running = 0
        for rank in range(len(self._stages) - 1, -1, -1):
            running += furthest[rank]
            reached[self._stages[rank]] = running
        return FunnelSnapshot(
            stages=tuple(self._stages),
            customers_per_stage=per_stage,
            customers_per_cycle=dict(sorted(per_cycle.items())),
            stage_changes=len(self._seen),
            dead_letters=sum(self._dead_letters.values()),
            produced=produced,
            total=total,
            elapsed_s=elapsed_s,
            customers_reached={stage: reached[stage] for stage in self._stages},
            buyers=len(self._buyers),
            repeat_buyers=len(self._repeat_buyers),
        )


def render(snapshot: FunnelSnapshot, width: int = 80, *, colour: bool = False) -> str:
    """The funnel as lines no wider than ``width``; ANSI colour only when ``colour`` is set."""
    lines = [_title(snapshot, width, colour)]
    lines += _stage_lines(snapshot, width, colour)
    lines.append(_clip(_totals(snapshot, width), width))
    return "\n".join(lines)


def render_summary(snapshot: FunnelSnapshot, dead_letters_by_reason: Mapping[str, int]) -> str:
    """The closing report: conversion between consecutive stages, repeat buyers, dead letters."""
    reached = snapshot.customers_reached or _reached_from_latest(snapshot)
    rate = f"{snapshot.events_per_s:,.0f}"
    lines = [
        f"Produced {snapshot.produced:,} of {snapshot.total:,} records in "
        f"{snapshot.elapsed_s:,.1f} s ({rate} records/s); {snapshot.customers:,} customers.",
        "Funnel (customers who got at least this far; conversion from the stage before):",
    ]
    label = max((len(stage) for stage in snapshot.stages), default=0)
    count = max((len(f"{n:,}") for n in reached.values()), default=1)
    previous: int | None = None
    for stage in snapshot.stages:
        here = reached.get(stage, 0)
        line = f"  {stage:<{label}}  {here:>{count},}"
        if previous is not None:
            line += f"  {_percent(here, previous):5.1f}%"
        lines.append(line)
        previous = here
    lines.append(
        f"Repeat buyers: {snapshot.repeat_buyers:,} "
        f"({_percent(snapshot.repeat_buyers, snapshot.buyers):.1f}% of {snapshot.buyers:,} buyers)"
    )
    cycles = ", ".join(f"cycle {c}: {n:,}" for c, n in snapshot.customers_per_cycle.items())
    lines.append(f"Customers by current cycle: {cycles or 'none'}")
    lines.append(f"Stage changes: {snapshot.stage_changes:,}")
    reasons = sorted(dead_letters_by_reason.items(), key=lambda item: (-item[1], item[0]))
    detail = ", ".join(f"{reason} {n:,}" for reason, n in reasons if n)
    lines.append(f"Dead letters: {snapshot.dead_letters:,}" + (f" ({detail})" if detail else ""))
    return "\n".join(lines)


def _title(snapshot: FunnelSnapshot, width: int, colour: bool) -> str:
    done = snapshot.produced / snapshot.total if snapshot.total > 0 else 0.0
    done = min(max(done, 0.0), 1.0)
    head = "journey demo "
    tail = (
        f" {snapshot.produced:,}/{snapshot.total:,} {done * 100:3.0f}%"
        f"  {snapshot.events_per_s:,.0f} ev/s"
    )
    room = width - len(head) - len(tail) - 2
    if room < 5:
        return _clip(head + tail.lstrip(), width)
    filled = round(done * room)
    bar = _paint(_FULL * filled, "1", colour) + _EMPTY * (room - filled)
    return f"{_paint(head, '1', colour)}[{bar}]{tail}"


def _stage_lines(snapshot: FunnelSnapshot, width: int, colour: bool) -> list[str]:
    customers = snapshot.customers
    counts = [snapshot.customers_per_stage.get(stage, 0) for stage in snapshot.stages]
    label = max((len(stage) for stage in snapshot.stages), default=0)
    digits = max((len(f"{n:,}") for n in counts), default=1)
    room = width - label - digits - 11
    biggest = max(counts, default=0)
    lines = []
    for index, (stage, count) in enumerate(zip(snapshot.stages, counts, strict=True)):
        numbers = f"{count:>{digits},} {_percent(count, customers):5.1f}%"
        if room < 4:
            lines.append(_clip(f"{stage} {numbers}", width))
            continue
        bar = _bar(count / biggest if biggest else 0.0, room)
        bar = _paint(bar, _COLOURS[index % len(_COLOURS)], colour)
        lines.append(f"{stage:<{label}} |{bar}| {numbers}")
    return lines


def _totals(snapshot: FunnelSnapshot, width: int) -> str:
    items = sorted(snapshot.customers_per_cycle.items())
    changes = f"{snapshot.stage_changes:,}"
    dead = f"{snapshot.dead_letters:,}"
    long = "  ".join(f"cycle {c}: {n:,}" for c, n in items) or "cycle 1: 0"
    candidates = [
        f"{long} | stage changes {changes} | dead letters {dead}",
        f"{long} | changes {changes} | dead {dead}",
    ]
    for keep in range(len(items), 0, -1):
        shown = [f"{c}: {n:,}" for c, n in items[: keep - 1]]
        rest = sum(n for _, n in items[keep - 1 :])
        last = items[keep - 1][0]
        shown.append(f"{last}{'+' if keep < len(items) else ''}: {rest:,}")
        candidates.append(f"cycles {'  '.join(shown)} | changes {changes} | dead {dead}")
    for candidate in candidates:
        if len(candidate) <= width:
            return candidate
    return candidates[-1]


def _bar(fraction: float, room: int) -> str:
    eighths = round(min(max(fraction, 0.0), 1.0) * room * 8)
    full, rest = divmod(eighths, 8)
    bar = _FULL * full + (_EIGHTHS[rest] if rest else "")
    return bar.ljust(room)


def _reached_from_latest(snapshot: FunnelSnapshot) -> dict[str, int]:
    """Without history, a customer's current stage stands in for the furthest one."""
    reached: dict[str, int] = {}
    running = 0
    for stage in reversed(snapshot.stages):
        running += snapshot.customers_per_stage.get(stage, 0)
        reached[stage] = running
    return reached


def _percent(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour and text else text


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"
