"""The chaos checker: what the outputs must satisfy, whatever faults happened.

In the style of Jepsen's checkers and Kafka Streams' EOS system tests: the
whole history (every input record produced, with its coordinates, and every
record of every output topic) is judged after the run, and every property
looked for is reported with its count of violations (target 0) and a few
examples, so a clean run shows what it checked.

The reference is the pure engine (:func:`processor.engine.apply`) over the
deduplicated input. Which order it applies events in is explicit (``order``):

* ``"partition"`` is what the processor promises today: events of one input
  partition are applied in offset order, and nothing more. A customer whose
  valid events all lie in one input partition is compared exactly; for the
  others only what does not depend on arrival order is enforced (the final
  stage when the cycle agrees: within a cycle the final stage is
  order-independent), and a cycle that differs is reported separately, not
  enforced (cross-cycle results depend on order across topics).
* ``"event-time"`` is the promise once events are ordered by event time across
  topics: every customer compared exactly with the engine applied in
  ``occurred_at`` order.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from processor.contracts.bundle import decode_envelope
from processor.contracts.limits import Limits, decode_record
from processor.contracts.outputs import restore_payload
from processor.contracts.state import decode_state
from processor.engine import DEDUPE_CHUNK, CustomerState, Event, JourneyModel, apply
from processor.settings import Settings
from tests.chaos.observe import Out
from tests.chaos.workload import Planned

LIMITS = Limits()
"""The workers' default size limits (the harness does not change them)."""

Order = Literal["partition", "event-time"]

MARKER_KEY = b"\x00journey:handover"
"""processor.app.tables.MARKER_KEY, repeated so the checker imports nothing of the shell."""


@dataclass(frozen=True, slots=True)
class Produced:
    """An input record as the broker stored it."""

    planned: Planned
    topic: str
    partition: int
    offset: int
    timestamp: int = -1


@dataclass
class Finding:
    """One property looked for: how often it was violated, and a few examples."""

    name: str
    description: str
    enforced: bool = True
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < 5:
            self.examples.append(example[:400])


@dataclass
class Observed:
    """Everything read back after the run."""

    stage_changes: list[Out]
    triggers: list[Out]
    dead_letters: list[Out]
    changelog: list[Out]
    api: dict[str, dict[str, Any] | None]
    bundles: list[Out] = field(default_factory=list)
    """The internal events topic (bundles and ticks), to tell a router loss from an engine one."""
    """``/customers/{id}`` answers by customer (None: 404); customers not answered are absent."""


@dataclass
class Report:
    findings: dict[str, Finding] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def finding(self, name: str, description: str, *, enforced: bool = True) -> Finding:
        if name not in self.findings:
            self.findings[name] = Finding(name, description, enforced)
        return self.findings[name]

    @property
    def violations(self) -> int:
        return sum(f.count for f in self.findings.values() if f.enforced)

    def violated(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.enforced and f.count]

    def render(self) -> str:
        lines = ["facts:"]
        lines += [f"  {k}: {v}" for k, v in self.facts.items()]
        lines.append("checks (violations, target 0):")
        for f in self.findings.values():
            tag = "" if f.enforced else "  [reported, not enforced]"
            lines.append(f"  {f.count:>6}  {f.name}: {f.description}{tag}")
            lines += [f"            e.g. {e}" for e in f.examples]
        lines.append(f"total enforced violations: {self.violations}")
        return "\n".join(lines)


@dataclass
class _Reference:
    states: dict[str, CustomerState]
    partitions: dict[str, set[tuple[str, int]]]
    """Input partitions that carried each customer's valid events."""
    event_ids: dict[str, list[str]]
    """Each customer's distinct valid evidence event ids, in produced order."""


def reference(
    produced: list[Produced], settings: Settings, model: JourneyModel, order: Order
) -> _Reference:
    """The engine over the deduplicated valid input, in the given order."""
    sources = settings.source_topics
    seen: set[tuple[str, str]] = set()
    events: list[tuple[int, Event]] = []
    partitions: dict[str, set[tuple[str, int]]] = defaultdict(set)
    event_ids: dict[str, list[str]] = defaultdict(list)
    for n, p in enumerate(produced):
        if p.planned.kind not in ("good", "duplicate", "ignored"):
            continue
        decoded = decode_record(
            p.planned.key,
            p.planned.value,
            sources[p.topic],
            p.topic,
            LIMITS,
        )
        if not isinstance(decoded, Event):
            raise AssertionError(f"workload bug: {p.planned.kind} record does not decode: {p}")
        if model.evidence_for(decoded.source, decoded.type) is None:
            continue
        if (decoded.customer_id, decoded.event_id) in seen:
            continue
        seen.add((decoded.customer_id, decoded.event_id))
        partitions[decoded.customer_id].add((p.topic, p.partition))
        event_ids[decoded.customer_id].append(decoded.event_id)
        events.append((n, decoded))
    if order == "event-time":
        events.sort(key=lambda ne: (ne[1].occurred_at, ne[0]))
    states: dict[str, CustomerState] = {}
    for _, event in events:
        step = apply(states.get(event.customer_id), event, model)
        assert step.state is not None
        states[event.customer_id] = step.state
    return _Reference(states, dict(partitions), dict(event_ids))


def check(
    produced: list[Produced],
    observed: Observed,
    settings: Settings,
    model: JourneyModel,
    *,
    order: Order = "partition",
) -> Report:
    report = Report()
    ref = reference(produced, settings, model, order)
    kinds: dict[str, int] = defaultdict(int)
    for p in produced:
        kinds[p.planned.kind] += 1
    report.facts["input records produced"] = len(produced)
    report.facts["input by kind"] = dict(sorted(kinds.items()))
    report.facts["customers with valid input"] = len(ref.states)
    report.facts["distinct events applied by the reference"] = sum(
        s.applied_count for s in ref.states.values()
    )
    report.facts["reference order"] = order
    chains = _check_stage_changes(report, observed.stage_changes)
    _check_cycle_dates(report, chains, order)
    _check_final_states(report, ref, chains, order)
    _check_triggers(report, observed.triggers, model)
    _check_dead_letters(report, produced, observed.dead_letters)
    _check_changelog(report, ref, chains, observed)
    if observed.bundles:
        _check_bundles(report, ref, observed.bundles)
    return report


def _check_bundles(report: Report, ref: _Reference, bundles: list[Out]) -> None:
    routed = report.finding(
        "router.every_valid_event_bundled",
        "every valid input event reaches the internal events topic",
    )
    seen: set[tuple[str, str]] = set()
    for r in bundles:
        if r.value is None:
            continue
        arrivals = decode_envelope(r.value).arrivals
        seen.update((a.event.customer_id, a.event.event_id) for a in arrivals)
    for customer, ids in ref.event_ids.items():
        for event_id in ids:
            if (customer, event_id) not in seen:
                routed.add(f"{customer} {event_id}")
    report.facts["internal records (bundles and ticks)"] = len(bundles)


def _check_stage_changes(report: Report, records: list[Out]) -> dict[str, dict[int, Any]]:
    """Ids, positions, chains and order of the stage changes; the distinct chain per customer."""
    ids = report.finding("stage_changes.one_payload_per_id", "an id carries one payload")
    headers = report.finding("stage_changes.one_header_set_per_id", "an id carries one header set")
    positions = report.finding(
        "stage_changes.one_payload_per_customer_sequence",
        "a (customer, sequence) carries one payload",
    )
    keys = report.finding("stage_changes.keyed_by_customer", "key = customer_id")
    gaps = report.finding("stage_changes.sequences_1_to_n", "sequences are 1..N per customer")
    chained = report.finding(
        "stage_changes.chained",
        "from_stage = previous to_stage; first from null; cycle +0 or +1",
    )
    first = report.finding(
        "stage_changes.first_occurrences_in_sequence_order",
        "per customer, first occurrences appear in sequence order",
    )
    by_id: dict[str, set[bytes]] = defaultdict(set)
    headers_by_id: dict[str, set[tuple[tuple[str, bytes], ...]]] = defaultdict(set)
    by_position: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    order_seen: dict[str, list[int]] = defaultdict(list)
    chains: dict[str, dict[int, Any]] = defaultdict(dict)
    for r in records:
        assert r.value is not None
        doc = r.doc
        customer, sequence = doc["customer_id"], doc["sequence"]
        by_id[doc["id"]].add(r.value)
        headers_by_id[doc["id"]].add(r.headers)
        by_position[(customer, sequence)].add(r.value)
        if r.key != customer.encode():
            keys.add(f"{customer} seq {sequence} at p{r.partition}@{r.offset} key {r.key!r}")
        if sequence not in chains[customer]:
            order_seen[customer].append(sequence)
        chains[customer].setdefault(sequence, doc)
    for id_, values in by_id.items():
        if len(values) > 1:
            ids.add(
                f"{id_}: {len(values)} payloads: " + " | ".join(sorted(_short(v) for v in values))
            )
    for id_, sets in headers_by_id.items():
        if len(sets) > 1:
            headers.add(f"{id_}: {len(sets)} header sets")
    for (customer, sequence), values in by_position.items():
        if len(values) > 1:
            positions.add(
                f"{customer} seq {sequence}: " + " | ".join(sorted(_short(v) for v in values))
            )
    for customer, chain in chains.items():
        sequences = sorted(chain)
        if sequences != list(range(1, len(sequences) + 1)):
            missing = sorted(set(range(1, sequences[-1] + 1)) - set(sequences))
            gaps.add(
                f"{customer}: has {len(sequences)} up to {sequences[-1]}, missing {missing[:10]}"
            )
        if chain.get(1, {"from_stage": None})["from_stage"] is not None:
            chained.add(f"{customer} seq 1 from {chain[1]['from_stage']}")
        for n in sequences[1:]:
            prev, this = chain.get(n - 1), chain[n]
            if prev is None:
                continue
            if this["from_stage"] != prev["to_stage"] or this["cycle"] not in (
                prev["cycle"],
                prev["cycle"] + 1,
            ):
                chained.add(
                    f"{customer} seq {n - 1} -> {n}: {prev['to_stage']}/c{prev['cycle']} then "
                    f"{this['from_stage']}->{this['to_stage']}/c{this['cycle']}"
                )
        seen = order_seen[customer]
        if seen != sorted(seen):
            at = next(i for i in range(1, len(seen)) if seen[i] < seen[i - 1])
            first.add(f"{customer}: first occurrences ... {seen[max(0, at - 3) : at + 2]} ...")
    report.facts["stage change records"] = len(records)
    report.facts["distinct stage changes"] = len(by_id)
    return chains


def _check_cycle_dates(report: Report, chains: dict[str, dict[int, Any]], order: Order) -> None:
    """No change inside a later cycle is dated before the change that started the cycle.

    Within cycle 1 an early event arriving late is dated before the first change
    legitimately; in a later cycle such an event belongs to an earlier cycle.

    Such a change comes from an event of an earlier cycle applied after the new
    cycle began (a support contact arriving after the research that started
    cycle 2 is judged as before the new cycle's purchase). With events applied
    in event-time order it cannot happen, so it is enforced only then.
    """
    dated = report.finding(
        "stage_changes.not_dated_before_their_cycle",
        "no change within a cycle after the first has changed_at before the cycle's first change",
        enforced=order == "event-time",
    )
    for customer, chain in chains.items():
        started: dict[int, str] = {}
        for n in sorted(chain):
            doc = chain[n]
            start = started.setdefault(doc["cycle"], doc["changed_at"])
            if doc["cycle"] > 1 and _instant(doc["changed_at"]) < _instant(start):
                dated.add(
                    f"{customer} seq {n} {doc['from_stage']}->{doc['to_stage']}/c{doc['cycle']} "
                    f"at {doc['changed_at']} (trigger {doc['trigger']['type']}), cycle began "
                    f"{start}"
                )


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _final(chain: dict[int, Any]) -> tuple[str, int]:
    last = chain[max(chain)]
    return last["to_stage"], last["cycle"]


def _check_final_states(
    report: Report, ref: _Reference, chains: dict[str, dict[int, Any]], order: Order
) -> None:
    missing = report.finding(
        "final_state.customer_has_changes", "every customer with valid input has stage changes"
    )
    unknown = report.finding(
        "final_state.no_unknown_customers", "no stage changes for customers without valid input"
    )
    for customer in chains:
        if customer not in ref.states:
            unknown.add(customer)
    if order == "event-time":
        exact = report.finding(
            "final_state.event_time_order",
            "final (stage, cycle) = engine over deduplicated input in event-time order",
        )
    else:
        exact = report.finding(
            "final_state.single_partition_customers",
            "customers whose input lies in one partition: final (stage, cycle) = engine",
        )
        within = report.finding(
            "final_state.within_cycle",
            "other customers whose input is one cycle (engine and output at cycle 1): "
            "the same final stage",
        )
        cross = report.finding(
            "final_state.cross_cycle",
            "other customers with more than one cycle: final (stage, cycle) = engine's in "
            "produced order (needs event-time ordering across topics)",
            enforced=False,
        )
    single = 0
    for customer, state in ref.states.items():
        chain = chains.get(customer)
        expected = (state.stage, state.cycle)
        if not chain:
            missing.add(f"{customer}: expected {expected}, no stage change at all")
            continue
        got = _final(chain)
        if got == expected:
            if len(ref.partitions[customer]) == 1:
                single += 1
            continue
        where = sorted(f"{t}[{p}]" for t, p in ref.partitions[customer])
        example = f"{customer}: got {got}, engine {expected}; input from {', '.join(where)}"
        if order == "event-time" or len(ref.partitions[customer]) == 1:
            exact.add(example)
        elif got[1] == expected[1] == 1:
            within.add(example)
        else:
            cross.add(example)
    report.facts["customers compared exactly (one input partition)"] = sum(
        1 for c in ref.states if len(ref.partitions[c]) == 1
    )


def _check_triggers(report: Report, records: list[Out], model: JourneyModel) -> None:
    ids = report.finding("triggers.one_payload_per_id", "a trigger id carries one payload")
    once = report.finding(
        "triggers.at_most_once_per_customer_rule_cycle",
        "at most one trigger per (customer, rule, cycle) for rules without repeat",
    )
    repeat = {r.name for r in model.triggers if r.repeat}
    by_id: dict[str, set[bytes]] = defaultdict(set)
    per_cycle: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    names: dict[str, int] = defaultdict(int)
    for r in records:
        assert r.value is not None
        doc = r.doc
        by_id[doc["id"]].add(r.value)
        per_cycle[(doc["customer_id"], doc["trigger"], doc["cycle"])].add(doc["id"])
    for id_, values in by_id.items():
        if len(values) > 1:
            ids.add(f"{id_}: " + " | ".join(sorted(_short(v) for v in values)))
        names[orjson.loads(next(iter(values)))["trigger"]] += 1
    for (customer, rule, cycle), found in per_cycle.items():
        if rule not in repeat and len(found) > 1:
            once.add(f"{customer} {rule} cycle {cycle}: {len(found)} ids")
    report.facts["trigger records"] = len(records)
    report.facts["distinct triggers"] = dict(sorted(names.items()))


def _check_dead_letters(report: Report, produced: list[Produced], records: list[Out]) -> None:
    missing = report.finding(
        "dead_letters.every_malformed_offset", "every malformed input record has a dead letter"
    )
    unexpected = report.finding(
        "dead_letters.only_malformed_offsets", "no dead letter for a valid or ignored record"
    )
    reasons = report.finding("dead_letters.reason", "the dead letter gives the expected reason")
    restorable = report.finding(
        "dead_letters.restorable", "key and payload restore the original record byte for byte"
    )
    one = report.finding(
        "dead_letters.one_payload_per_offset", "repeats of a dead letter are identical"
    )
    by_coordinates = {(p.topic, p.partition, p.offset): p for p in produced}
    letters: dict[tuple[str, int, int], set[bytes]] = defaultdict(set)
    by_reason: dict[str, int] = defaultdict(int)
    for r in records:
        assert r.value is not None
        doc = r.doc
        source = doc["source"]
        where = (source["topic"], source["partition"], source["offset"])
        if not letters[where]:
            by_reason[doc["reason"]] += 1
        letters[where].add(r.value)
        original = by_coordinates.get(where)
        if original is None or original.planned.kind != "malformed":
            kind = "unknown offset" if original is None else original.planned.kind
            unexpected.add(f"{where} ({kind}): {doc['reason']}: {doc['detail'][:160]}")
            continue
        if doc["reason"] != original.planned.reason:
            reasons.add(f"{where}: {doc['reason']}, expected {original.planned.reason}")
        if doc["reason"] == "too_large":  # carried by digest, fetched from the input topic
            value = original.planned.value or b""
            if doc["original"]["sha256"] != hashlib.sha256(value).hexdigest():
                restorable.add(f"{where}: sha256 differs from the original")
        elif restore_payload(doc) != original.planned.value or r.key != original.planned.key:
            restorable.add(f"{where}: payload or key differs")
    for where, values in letters.items():
        if len(values) > 1:
            one.add(f"{where}: {len(values)} different dead letters")
    for p in produced:
        if p.planned.kind == "malformed" and (p.topic, p.partition, p.offset) not in letters:
            missing.add(f"{(p.topic, p.partition, p.offset)} ({p.planned.reason})")
    report.facts["dead letter records"] = len(records)
    report.facts["distinct dead-lettered offsets by reason"] = dict(sorted(by_reason.items()))


def _check_changelog(
    report: Report, ref: _Reference, chains: dict[str, dict[int, Any]], observed: Observed
) -> None:
    api_match = report.finding(
        "changelog.applied_count_equals_api",
        "last changelog applied_count = /customers applied_events",
    )
    input_match = report.finding(
        "changelog.applied_count_equals_input",
        "last changelog applied_count = distinct valid events of the customer (none lost)",
    )
    output_match = report.finding(
        "changelog.sequence_equals_output",
        "last changelog sequence = highest stage-change sequence emitted",
    )
    regressions = report.finding(
        "changelog.never_goes_back",
        "per customer, changelog applied_count never decreases",
    )
    forks = report.finding(
        "changelog.one_history",
        "each changelog write of a customer extends the previous one (same dedupe ids at "
        "the same count; the open chunk only grows)",
    )
    unanswered = report.finding(
        "api.answers", "/customers answers 200 for every customer with valid input"
    )
    last: dict[str, CustomerState] = {}
    for r in observed.changelog:  # sorted by partition, offset: one customer, one partition
        if r.key == MARKER_KEY or r.value is None:
            continue
        state = decode_state(r.value)
        seen = last.get(state.customer_id)
        if seen is not None and state.applied_count < seen.applied_count:
            regressions.add(
                f"{state.customer_id} p{r.partition}@{r.offset}: applied_count "
                f"{seen.applied_count} -> {state.applied_count}, seq {seen.sequence} -> "
                f"{state.sequence}"
            )
        elif seen is not None and _forked(seen, state):
            forks.add(
                f"{state.customer_id} p{r.partition}@{r.offset}: count {seen.applied_count} "
                f"ids ..{list(seen.recent_event_ids[-2:])} then count {state.applied_count} "
                f"ids ..{list(state.recent_event_ids[-2:])}"
            )
        last[state.customer_id] = state
    for customer, expected in ref.states.items():
        final = last.get(customer)
        if final is None:
            input_match.add(f"{customer}: no changelog record, expected {expected.applied_count}")
            continue
        if final.applied_count != expected.applied_count:
            input_match.add(
                f"{customer}: changelog {final.applied_count}, input {expected.applied_count}"
            )
        emitted = max(chains.get(customer, {0: None}))
        if final.sequence != emitted:
            output_match.add(f"{customer}: changelog seq {final.sequence}, emitted {emitted}")
        if customer not in observed.api:
            unanswered.add(f"{customer}: no answer")
            continue
        answer = observed.api[customer]
        if answer is None:
            unanswered.add(f"{customer}: 404")
            continue
        if answer["applied_events"] != final.applied_count:
            api_match.add(
                f"{customer}: changelog {final.applied_count}, api {answer['applied_events']} "
                f"(served by {answer.get('served_by')})"
            )
    report.facts["changelog records"] = len(observed.changelog)


def _forked(before: CustomerState, after: CustomerState) -> bool:
    """Whether ``after`` is not a continuation of ``before`` (both of one customer).

    A write without new events (a timer tick) keeps the applied ids; new events
    append to the open dedupe chunk until it is sealed (every DEDUPE_CHUNK events).
    """
    if after.applied_count < before.applied_count:
        return False  # counted by never_goes_back
    if after.applied_count == before.applied_count:
        return after.recent_event_ids != before.recent_event_ids
    if after.applied_count // DEDUPE_CHUNK != before.applied_count // DEDUPE_CHUNK:
        return False  # a chunk was sealed in between: the open chunk started again
    n = len(before.recent_event_ids)
    return after.recent_event_ids[:n] != before.recent_event_ids


def _short(value: bytes, limit: int = 160) -> str:
    doc = orjson.loads(value)
    if isinstance(doc, dict):
        doc = {
            k: v
            for k, v in doc.items()
            if k
            in ("sequence", "cycle", "from_stage", "to_stage", "changed_at", "trigger", "fired_at")
        }
    text = orjson.dumps(doc).decode()
    return text[:limit]


def summarize(findings: Iterable[Finding]) -> str:
    return ", ".join(f"{f.name}={f.count}" for f in findings)
