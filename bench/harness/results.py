"""One line of the result table, and the table: every row as a ratio to the aiokafka row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Row:
    """One line of the result table; ``low``/``high`` bracket the time when it is uncertain."""

    name: str
    events: int
    seconds: float | None
    startup: float | None = None
    low: float | None = None
    high: float | None = None
    exact: float | None = None
    """Seconds to the last record seen by other means than commits (see the timing note)."""
    work: float | None = None
    """Seconds until every record that led to an output was seen committed
    (:attr:`bench.harness.watch.Watch.work_committed`)."""
    note: str = ""

    @property
    def rate(self) -> float | None:
        return self.events / self.seconds if self.seconds else None

    @property
    def exact_rate(self) -> float | None:
        return self.events / self.exact if self.exact else None

    @property
    def work_rate(self) -> float | None:
        return self.events / self.work if self.work else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.3f}x" if value and base else "-"


def table(rows: Sequence[Row], plain: Row | None, noop: Row | None) -> str:
    """The result table, every rate also as a ratio to the aiokafka row and to the no-op row.

    The issue's goals are ratios to the plain aiokafka consumer (``vs aiokafka``);
    ``vs no-op`` (the Faust floor) is kept beside it. ``exact end/s`` is compared
    with the aiokafka rate too (row A has no commit uncertainty: it is timed to its
    last record).
    """
    base = plain.rate if plain else None
    floor = noop.rate if noop else None
    head = (
        f"{'':38} {'events':>8} {'startup s':>9} {'seconds':>8} {'events/s':>9} "
        f"{'vs aiokafka':>11} {'vs no-op':>8}  {'commit bracket':>17}  {'exact end/s':>11} "
        f"{'vs aiokafka':>11}  note"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        exact = row.exact_rate if row.exact_rate else row.rate if row.low is None else None
        bracket = ""
        if row.low is not None and row.high is not None:
            bracket = f"{row.events / row.high:,.0f}..{row.events / row.low:,.0f}"
        lines.append(
            f"{row.name:38} {row.events:>8,} {fmt(row.startup, '.1f'):>9} "
            f"{fmt(row.seconds, '.2f'):>8} {fmt(row.rate, ',.0f'):>9} "
            f"{ratio(row.rate, base):>11} {ratio(row.rate, floor):>8}  {bracket:>17}  "
            f"{fmt(exact, ',.0f'):>11} {ratio(exact, base):>11}  {row.note}"
        )
    return "\n".join(lines)
