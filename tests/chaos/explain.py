"""``python -m tests.chaos.explain WORKDIR CUSTOMER``: one customer's whole history from a run.

Reads the dump a chaos run leaves in ``WORKDIR/history`` (the broker is gone by
then) and prints, per topic in offset order, what the customer's input,
bundles, changelog writes and stage changes were: the starting point of a
post-mortem of a violation the checker reported.
"""

from __future__ import annotations

import base64
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from processor.contracts.state import decode_state


def _rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def _value(row: dict[str, Any]) -> Any:
    raw = row["value"]
    return None if raw is None else orjson.loads(base64.b64decode(raw))


def _at(row: dict[str, Any]) -> str:
    """The record's broker timestamp as the workers' logs show time (UTC), if known."""
    ms = row.get("timestamp", -1)
    if ms is None or ms < 0:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3] + " "


def explain(history: Path, customer: str) -> list[str]:
    lines = [f"input records of {customer} (topic[partition]@offset kind event):"]
    for row in _rows(history / "produced.jsonl"):
        if row["customer_id"] == customer:
            doc = orjson.loads(base64.b64decode(row["value"]))
            lines.append(
                f"  {_at(row)}{row['topic']}[{row['partition']}]@{row['offset']} {row['kind']} "
                f"{doc['event_id']} {doc['type']} {doc['occurred_at']}"
            )
    lines.append("bundles carrying its events (partition@offset: event ids):")
    for row in _rows(history / "events-by-customer.jsonl"):
        doc = _value(row)
        ids = [e["event_id"] for e in doc["events"] if e["customer_id"] == customer]
        if ids:
            lines.append(f"  {_at(row)}p{row['partition']}@{row['offset']}: {' '.join(ids)}")
    lines.append("changelog writes (partition@offset: applied_count sequence stage/cycle):")
    for row in _rows(history / "changelog.jsonl"):
        if row["key"] and base64.b64decode(row["key"]) == customer.encode():
            raw = row["value"]
            if raw is None:
                lines.append(f"  {_at(row)}p{row['partition']}@{row['offset']}: tombstone")
                continue
            state = decode_state(base64.b64decode(raw))  # v1 JSON or v2 msgpack
            lines.append(
                f"  {_at(row)}p{row['partition']}@{row['offset']}: {state.applied_count} "
                f"{state.sequence} {state.stage}/c{state.cycle} "
                f"open ids ..{list(state.recent_event_ids[-2:])}"
            )
    lines.append("stage changes (partition@offset: sequence from->to/cycle trigger):")
    for row in _rows(history / "stage-changes.jsonl"):
        doc = _value(row)
        if doc["customer_id"] == customer:
            lines.append(
                f"  {_at(row)}p{row['partition']}@{row['offset']}: {doc['sequence']} "
                f"{doc['from_stage']}->{doc['to_stage']}/c{doc['cycle']} "
                f"{doc['trigger']['event_id']} {doc['changed_at']}"
            )
    api = orjson.loads((history / "api.json").read_bytes()).get(customer)
    lines.append(f"/customers: {api and {k: api[k] for k in ('stage', 'cycle', 'applied_events')}}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(explain(Path(argv[0]) / "history", argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
