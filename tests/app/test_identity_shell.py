"""Identity through the shell (dict tables, list sinks): identify, merge, forward, forget.

The ids are chosen so that the anonymous id and the customer live on different
partitions (anon-1 on 2, alice on 1) unless a test says otherwise (anon-3 shares
alice's partition). Every record the engine sends to the internal topic is
applied after what was sent before it, as the broker would deliver it.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.app.partitioning import partition_for
from processor.app.pipeline import InputRecord
from processor.app.timers import TimerIndex
from processor.contracts.bundle import Tick, decode_envelope, encode_tick
from processor.contracts.identity import decode_alias
from processor.contracts.outputs import MERGED_FROM_HEADER, Record
from processor.contracts.state import decode_state
from tests.app.shell import Shell, consumed, make_shell, outcomes
from tests.app.test_erasure_shell import holds_anywhere, live_keys_holding, request
from tests.schemas import validator

IDENTITY_MERGED = validator("identity-merged.v1.json")
MERGE = validator("internal.merge.v1.json")
FORWARD = validator("internal.forward.v1.json")
FORGET_V2 = validator("internal.forget.v2.json")
FORGET_V3 = validator("internal.forget.v3.json")
STAGE_CHANGE = validator("stage-change.v2.json")


def event(
    customer: str,
    event_id: str,
    event_type: str,
    when: str,
    *,
    anonymous: str | None = None,
    offset: int,
    topic: str = "journey.clickstream",
    partition: int = 0,
) -> InputRecord:
    doc: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": customer,
        "type": event_type,
        "occurred_at": f"2026-01-01T{when}:00Z",
    }
    if anonymous is not None:
        doc["anonymous_id"] = anonymous
    return InputRecord(topic, partition, offset, customer.encode(), orjson.dumps(doc))


def anonymous(anon: str, event_id: str, event_type: str, when: str, offset: int) -> InputRecord:
    return event(anon, event_id, event_type, when, anonymous=anon, offset=offset)


def identify(customer: str, anon: str, event_id: str, when: str, offset: int) -> InputRecord:
    return event(customer, event_id, "identify", when, anonymous=anon, offset=offset)


BROWSE = [
    anonymous("anon-1", "a1", "page_view", "10:00", 0),
    anonymous("anon-1", "a2", "product_view", "10:05", 1),
    anonymous("anon-1", "a3", "checkout_started", "10:10", 2),
]
LOGIN = identify("alice", "anon-1", "login-1", "10:20", 3)
BUY = event("alice", "b1", "order_completed", "10:30", offset=4)


def docs(records: list[tuple[Record, int | None]]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r, _ in records]


def counted_once(shell: Shell) -> None:
    """Every input record consumed ends in exactly one counted outcome, per input partition."""
    per_partition: Counter[tuple[str, str]] = Counter()
    for (topic, partition, _), n in outcomes(shell.metrics).items():
        per_partition[(topic, partition)] += int(n)
    assert per_partition == Counter({k: int(v) for k, v in consumed(shell.metrics).items()})


def internal(shell: Shell, kind: str) -> list[tuple[dict[str, Any], int | None]]:
    found = []
    for record, partition in shell.bundles.records:
        doc = orjson.loads(record.value)
        if doc.get("kind") == kind:
            found.append((doc, partition))
    return found


async def browse_identify_buy(shell: Shell) -> None:
    await shell.feed(BROWSE)
    await shell.feed([LOGIN])
    await shell.feed([BUY])


def test_the_ids_of_these_tests_live_where_they_say() -> None:
    assert partition_for("anon-1", 4) == 2
    assert partition_for("alice", 4) == 1
    assert partition_for("anon-3", 4) == 1


async def test_identify_links_on_the_anonymous_partition_and_merges_on_the_customers() -> None:
    timers = TimerIndex()
    shell = make_shell(timers=timers)
    await shell.feed(BROWSE)
    assert timers.pending_total() == 2  # cart_abandoned and stalled_in_evaluation, on anon-1

    await shell.feed([LOGIN])

    # The alias, on the anonymous id's partition; the anonymous state and its timers gone.
    assert decode_alias(shell.aliases.data[b"anon-1"]).customer_id == "alice"
    written = [(k, p) for k, _, p in shell.aliases.writes]
    assert written == [(b"anon-1", 2), (b"alice\x1faliases", 1)]  # and alice's list, on hers
    assert b"anon-1" not in shell.states.data
    assert (b"anon-1", None, 2) in shell.states.writes
    # The merge message went to alice's partition and was valid.
    [(merge, partition)] = internal(shell, "merge")
    MERGE.validate(merge)
    assert partition == 1 and merge["state"]["customer_id"] == "anon-1"
    # alice is the anonymous journey now, with its timers, on her partition.
    alice = decode_state(shell.states.data[b"alice"])
    assert (alice.stage, alice.applied_count) == ("evaluation", 4)
    assert shell.applier.store.aliases_of("alice") == ("anon-1",)  # on alice's partition
    assert {t.rule for t in alice.triggers.timers} == {"cart_abandoned", "stalled_in_evaluation"}
    assert timers.pending_total() == 2 and sum(timers.pending[1].values()) == 2
    # One merged stage change, from nothing, with the header; valid stage-change.v2.
    [(merged, _)] = [(r, p) for r, p in shell.changes.records if r.key == b"alice"]
    STAGE_CHANGE.validate(orjson.loads(merged.value))
    assert (MERGED_FROM_HEADER, b"anon-1") in merged.headers
    assert orjson.loads(merged.value)["trigger"]["event_id"] == "login-1"
    # The anonymous id's final record.
    [(record, _)] = shell.identities.records
    IDENTITY_MERGED.validate(orjson.loads(record.value))
    assert orjson.loads(record.value)["customer_id"] == "alice" and record.key == b"anon-1"
    # Counted once: the identify as applied (on alice's partition), every browse event too.
    counted_once(shell)
    assert outcomes(shell.metrics)[("journey.clickstream", "0", "applied")] == 4
    assert sum(shell.counts.totals().values()) == 1  # the funnel counts alice only


async def test_a_purchase_after_identify_continues_the_merged_journey_no_trigger_twice() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    alice = decode_state(shell.states.data[b"alice"])
    assert (alice.stage, alice.sequence) == ("purchase", 2)
    fired = Counter(orjson.loads(r.value)["trigger"] for r, _ in shell.triggers.records)
    assert fired == Counter({"sales_assist": 1, "purchase_completed": 1})  # not twice
    assert sum(shell.counts.totals().values()) == 1
    counted_once(shell)


async def test_later_anonymous_only_events_are_forwarded_to_the_customer_and_counted_once() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    later = [
        event("anon-1", "s1", "chat_started", "11:00", anonymous="anon-1", offset=5,
              topic="journey.support"),
        anonymous("anon-1", "a4", "page_view", "11:05", 6),
    ]  # fmt: skip
    await shell.feed(later)

    [(forward, partition)] = internal(shell, "forward")
    FORWARD.validate(forward)
    assert partition == 1 and [e["event_id"] for e in forward["events"]] == ["s1", "a4"]
    assert all(e["customer_id"] == "alice" for e in forward["events"])
    alice = decode_state(shell.states.data[b"alice"])
    assert (alice.stage, alice.applied_count) == ("post_purchase", 7)
    assert b"anon-1" not in shell.states.data  # nothing applied under the anonymous id
    assert shell.metrics.forwarded._value.get() == 2
    counted_once(shell)
    assert outcomes(shell.metrics)[("journey.support", "0", "applied")] == 1


async def test_an_anonymous_event_in_the_same_batch_after_identify_is_forwarded() -> None:
    shell = make_shell()
    after = anonymous("anon-1", "a9", "order_completed", "10:25", 4)
    await shell.feed([*BROWSE, LOGIN, after])
    alice = decode_state(shell.states.data[b"alice"])
    assert (alice.stage, alice.applied_count) == ("purchase", 5)
    assert b"anon-1" not in shell.states.data
    counted_once(shell)


async def test_a_replayed_identify_re_emits_identical_bytes_and_changes_nothing() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    state = shell.states.data[b"alice"]
    changes = [r for r, _ in shell.changes.records]
    triggers = {orjson.loads(r.value)["id"] for r, _ in shell.triggers.records}

    await shell.feed([LOGIN])  # a crash before the commit: the identify comes again

    assert shell.identities.records[1][0] == shell.identities.records[0][0]
    again = [r for r, _ in shell.changes.records[len(changes) :]]
    assert again == [r for r in changes if (MERGED_FROM_HEADER, b"anon-1") in r.headers]
    assert shell.states.data[b"alice"] == state
    assert {orjson.loads(r.value)["id"] for r, _ in shell.triggers.records} == triggers
    assert outcomes(shell.metrics)[("journey.clickstream", "0", "duplicate")] == 1


async def test_a_replay_whose_anonymous_state_is_still_there_sends_the_same_merge() -> None:
    """A crash after the alias was written but before the tombstone: everything again."""
    shell = make_shell()
    await shell.feed(BROWSE)
    anon_state = shell.states.data[b"anon-1"]
    await shell.feed([LOGIN])
    first = [r for r, _ in shell.bundles.records if b'"kind":"merge"' in r.value]
    shell.states.data[b"anon-1"] = anon_state  # the local store still had it

    await shell.feed([LOGIN])

    merges = [r for r, _ in shell.bundles.records if b'"kind":"merge"' in r.value]
    assert merges == first * 2
    assert b"anon-1" not in shell.states.data
    assert decode_state(shell.states.data[b"alice"]).applied_count == 4


async def test_the_identify_id_remembered_in_a_sealed_chunk_still_makes_a_duplicate() -> None:
    shell = make_shell()
    await shell.feed(BROWSE)
    await shell.feed([LOGIN])
    more = [event("alice", f"m{i}", "page_view", "10:40", offset=10 + i) for i in range(40)]
    await shell.feed(more)  # login-1 is sealed into alice's chunk 0 now
    alice = decode_state(shell.states.data[b"alice"])
    assert "login-1" not in alice.recent_event_ids and list(alice.sealed_chunks) == [0]

    await shell.feed([LOGIN])

    assert decode_state(shell.states.data[b"alice"]).applied_count == alice.applied_count
    assert outcomes(shell.metrics)[("journey.clickstream", "0", "duplicate")] == 1


async def test_anonymous_and_customer_on_the_same_partition() -> None:
    shell = make_shell()
    await shell.feed([anonymous("anon-3", "x1", "add_to_cart", "10:00", 0)])
    await shell.feed([identify("alice", "anon-3", "login-3", "10:10", 1)])
    await shell.feed([anonymous("anon-3", "x2", "order_completed", "10:20", 2)])
    alice = decode_state(shell.states.data[b"alice"])
    assert (alice.stage, alice.applied_count) == ("purchase", 3)
    assert shell.applier.store.aliases_of("alice") == ("anon-3",)
    assert b"anon-3" not in shell.states.data
    counted_once(shell)


async def test_a_second_identify_of_a_linked_anonymous_id_links_nothing() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    await shell.feed([identify("bob", "anon-1", "login-2", "12:00", 9)])
    assert decode_alias(shell.aliases.data[b"anon-1"]).customer_id == "alice"
    assert b"bob" not in shell.states.data and len(shell.identities.records) == 1
    assert outcomes(shell.metrics)[("journey.clickstream", "0", "ignored")] == 1
    counted_once(shell)


async def test_identify_of_a_visitor_with_no_anonymous_history() -> None:
    shell = make_shell()
    await shell.feed([identify("alice", "anon-1", "login-1", "10:20", 0)])
    assert b"alice" not in shell.states.data  # nothing to merge: no state is made
    assert decode_alias(shell.aliases.data[b"anon-1"]).customer_id == "alice"
    [(record, _)] = shell.identities.records
    IDENTITY_MERGED.validate(orjson.loads(record.value))
    assert outcomes(shell.metrics)[("journey.clickstream", "0", "ignored")] == 1
    counted_once(shell)


async def test_forgetting_the_customer_forgets_its_aliases_everywhere() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    await shell.forget([request("alice", "r1", offset=0)])

    assert holds_anywhere(shell, "alice") == []
    assert holds_anywhere(shell, "anon-1") == []
    assert shell.aliases.data == {}  # the alias and alice's list of aliases
    assert (b"anon-1", None, 2) in shell.aliases.writes  # tombstoned on its partition
    assert (b"alice\x1faliases", None, 1) in shell.aliases.writes
    [(forget, partition)] = [(d, p) for d, p in internal(shell, "forget") if d["v"] == 2]
    FORGET_V2.validate(forget)
    assert partition == 2 and forget["alias_of"] == "alice"
    erased = {orjson.loads(r.value)["customer_id"] for r, _ in shell.erasures.records}
    assert erased == {"alice", "anon-1"}
    assert outcomes(shell.metrics)[("journey.erasure-requests", "0", "applied")] == 1
    assert sum(shell.counts.totals().values()) == 0
    # A later anonymous-only event starts a new anonymous journey: the link went too.
    await shell.feed([anonymous("anon-1", "a7", "page_view", "13:00", 20)])
    assert decode_state(shell.states.data[b"anon-1"]).applied_count == 1


async def test_forgetting_an_anonymous_id_deletes_its_alias() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    await shell.forget([request("anon-1", "r2", offset=0)])
    assert b"anon-1" not in shell.aliases.data
    assert (b"anon-1", None, 2) in shell.aliases.writes
    assert decode_state(shell.states.data[b"alice"]).stage == "purchase"  # alice stays


def held_anywhere(shell: Shell, some_id: str) -> list[str]:
    """Every table, aliases included: keys or values holding the id, stored or live."""
    needle = some_id.encode()
    tables = {
        "state": shell.states,
        "chunks": shell.chunks,
        "order": shell.order,
        "aliases": shell.aliases,
    }
    found = []
    for name, table in tables.items():
        found += [f"{name} store {k!r}" for k, v in table.data.items() if needle in k + v]
        found += [f"{name} changelog {k!r}" for k in live_keys_holding(table, some_id)]
    return found


async def test_forgetting_a_linked_anonymous_id_leaves_it_nowhere_and_alice_as_she_was() -> None:
    shell = make_shell()
    erased: list[tuple[int, str]] = []
    shell.applier.on_erased = lambda partition, some_id: erased.append((partition, some_id))
    await browse_identify_buy(shell)
    alice = decode_state(shell.states.data[b"alice"])
    assert held_anywhere(shell, "anon-1")  # the alias, alice's list, her merged change

    await shell.forget([request("anon-1", "r2", offset=0)])

    assert erased == [(2, "anon-1"), (1, "alice")]  # both key ranges compacted on disk

    assert held_anywhere(shell, "anon-1") == []
    assert (b"alice\x1faliases", None, 1) in shell.aliases.writes  # her list, now empty
    [(unlinking, partition)] = [(d, p) for d, p in internal(shell, "forget") if d["v"] == 3]
    FORGET_V3.validate(unlinking)
    assert partition == 1 and unlinking["unlink_from"] == "alice"
    assert unlinking["customer_id"] == "anon-1" and unlinking["request_id"] == "r2"
    after = decode_state(shell.states.data[b"alice"])
    assert (after.stage, after.applied_count, after.sequence) == (
        alice.stage,
        alice.applied_count,
        alice.sequence,
    )
    assert [c.id for c in after.recent_changes] == [c.id for c in alice.recent_changes]
    # One confirmation, for anon-1 only; the request counted once, where anon-1 lives.
    assert [orjson.loads(r.value)["customer_id"] for r, _ in shell.erasures.records] == ["anon-1"]
    assert outcomes(shell.metrics)[("journey.erasure-requests", "0", "applied")] == 1
    counted_once(shell)


async def test_a_replayed_forget_of_an_anonymous_id_re_emits_identical_bytes() -> None:
    """Replayed whole (alias gone: nothing to unlink again) and after a crash before the alias
    went (found again: the same unlink again); either way the same confirmation, same end."""
    shell = make_shell()
    await browse_identify_buy(shell)
    alias = shell.aliases.data[b"anon-1"]
    await shell.forget([request("anon-1", "r2", offset=0)])
    sent = [r for r, _ in shell.bundles.records[shell.cursor - 2 :]]
    first = [r for r, _ in shell.erasures.records]
    tables = (dict(shell.states.data), dict(shell.aliases.data))

    await shell.forget([request("anon-1", "r2", offset=0)])
    assert [r for r, _ in shell.erasures.records] == first * 2
    assert (shell.states.data, shell.aliases.data) == tables

    shell.aliases.data[b"anon-1"] = alias  # the local store still had it
    await shell.forget([request("anon-1", "r2", offset=0)])
    assert [r for r, _ in shell.bundles.records[-2:]] == sent  # the forget, the same unlink
    assert [r for r, _ in shell.erasures.records] == first * 3
    assert (shell.states.data, shell.aliases.data) == tables
    assert held_anywhere(shell, "anon-1") == []


async def test_forgetting_one_of_two_linked_anonymous_ids_keeps_the_other() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    await shell.feed([anonymous("anon-2", "c1", "page_view", "11:00", 5)])
    await shell.feed([identify("alice", "anon-2", "login-2", "11:05", 6)])
    assert shell.applier.store.aliases_of("alice") == ("anon-1", "anon-2")

    await shell.forget([request("anon-1", "r2", offset=0)])

    assert shell.applier.store.aliases_of("alice") == ("anon-2",)
    assert held_anywhere(shell, "anon-1") == []
    assert decode_alias(shell.aliases.data[b"anon-2"]).customer_id == "alice"
    await shell.forget([request("alice", "r3", offset=1)])  # her forget still finds anon-2
    assert held_anywhere(shell, "anon-2") == [] and held_anywhere(shell, "alice") == []


async def test_an_undelivered_unlink_stops_before_the_alias_goes() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)

    async def failed() -> bool:
        return False

    shell.applier.identity.settle = failed
    with pytest.raises(RuntimeError, match="unlink of 'anon-1' was not delivered"):
        await shell.forget([request("anon-1", "r2", offset=0)])
    assert b"anon-1" in shell.aliases.data and shell.erasures.records == []


async def test_forgetting_an_anonymous_id_before_identify_works_as_for_any_id() -> None:
    shell = make_shell()
    await shell.feed(BROWSE)
    await shell.forget([request("anon-1", "r3", offset=0)])
    assert holds_anywhere(shell, "anon-1") == []


async def test_a_failed_merge_send_stops_before_the_anonymous_state_goes() -> None:
    shell = make_shell()
    await shell.feed(BROWSE)

    async def broken(record: Record, partition: int | None) -> None:
        if b'"kind":"merge"' in record.value:
            raise ConnectionError("broker gone")
        await shell.bundles(record, partition)

    shell.applier.identity.send_internal = broken
    with pytest.raises(ConnectionError):
        await shell.feed([LOGIN])
    assert b"anon-1" in shell.states.data  # not tombstoned: the replay finds it
    assert shell.identities.records == []
    assert b"anon-1" in shell.aliases.data  # written first: the replay redoes everything

    shell.applier.identity.send_internal = shell.bundles  # restarted: the identify again
    shell.cursor = len(shell.bundles.records)
    await shell.feed([LOGIN])
    assert decode_state(shell.states.data[b"alice"]).applied_count == 4
    assert b"anon-1" not in shell.states.data and len(shell.identities.records) == 1


async def test_an_undelivered_merge_stops_before_the_anonymous_state_goes() -> None:
    shell = make_shell()
    await shell.feed(BROWSE)

    async def failed() -> bool:
        return False

    shell.applier.identity.settle = failed
    with pytest.raises(RuntimeError, match="not delivered"):
        await shell.feed([LOGIN])
    assert b"anon-1" in shell.states.data and shell.identities.records == []


async def test_merge_and_forward_messages_decode_as_envelopes() -> None:
    shell = make_shell()
    await browse_identify_buy(shell)
    await shell.feed([anonymous("anon-1", "a4", "page_view", "11:05", 6)])
    kinds = []
    for record, _ in shell.bundles.records:
        envelope = decode_envelope(record.value)
        kinds.append("merge" if envelope.merge else "forward" if envelope.forward else "bundle")
    assert kinds.count("merge") == 1 and kinds.count("forward") == 1


async def test_an_identify_with_nothing_to_merge_still_leaves_the_alias_findable() -> None:
    """No anonymous history, customer unknown: the customer's alias list still names it."""
    shell = make_shell()
    await shell.feed([identify("alice", "anon-1", "login-1", "10:00", 0)])
    await shell.feed([anonymous("anon-1", "a1", "add_to_cart", "10:05", 1)])
    alice = decode_state(shell.states.data[b"alice"])
    assert alice.stage == "evaluation" and shell.applier.store.aliases_of("alice") == ("anon-1",)
    await shell.forget([request("alice", "r1", offset=0)])
    assert holds_anywhere(shell, "alice") == [] and shell.aliases.data == {}


async def test_an_identify_with_no_anonymous_history_for_a_known_customer_records_the_alias() -> (
    None
):
    shell = make_shell()
    await shell.feed([event("alice", "b0", "page_view", "09:00", offset=0)])
    await shell.feed([identify("alice", "anon-1", "login-1", "10:00", 1)])
    assert shell.applier.store.aliases_of("alice") == ("anon-1",)
    counted_once(shell)


async def test_the_anonymous_timer_fires_once_for_the_customer_after_the_merge() -> None:
    """cart_abandoned was armed for the visitor; after the merge only alice's partition has it."""
    timers = TimerIndex()
    shell = make_shell(timers=timers)
    await shell.feed(BROWSE)
    await shell.feed([LOGIN])
    later = datetime(2026, 1, 1, 12, tzinfo=UTC)  # past the 1 h of cart_abandoned
    for partition in range(shell.partitions):
        await shell._apply(encode_tick(Tick(f"tick-{partition}", later)), partition)
    await shell.pump()
    fired = [orjson.loads(r.value) for r, _ in shell.triggers.records]
    abandoned = [t["customer_id"] for t in fired if t["trigger"] == "cart_abandoned"]
    assert abandoned == ["alice"]
    assert sum(1 for t in fired if t["trigger"] == "sales_assist") == 1


async def test_forgetting_an_anonymous_id_drops_its_held_identify() -> None:
    """The identify is held on the anonymous id's partition under the customer's id."""
    shell = make_shell()
    await shell.feed([*BROWSE, LOGIN], drain=False)
    assert b"anon-1" in shell.states.data  # the browse events are out: the clock passed them
    assert shell.aliases.data == {}  # the identify, the newest, is still held

    await shell.forget([request("anon-1", "r4", offset=0)])
    await shell.drain()

    assert shell.aliases.data == {} and shell.identities.records == []
    assert shell.states.data == {}
    assert outcomes(shell.metrics)[("journey.clickstream", "0", "erased")] == 1
    counted_once(shell)


# --------------------------------------------------------------------------- replays, as a property

ANON_TYPES = ["page_view", "product_view", "add_to_cart", "checkout_started", "order_completed"]


@st.composite
def visits(draw: st.DrawFn) -> tuple[list[InputRecord], list[int]]:
    """An anonymous visit, an identify, customer events and later anonymous events,
    with the indexes of records to deliver again (a crash before the commit)."""
    before = draw(st.lists(st.sampled_from(ANON_TYPES), max_size=5))
    own = draw(st.lists(st.sampled_from(ANON_TYPES), max_size=3))
    after = draw(st.lists(st.sampled_from(ANON_TYPES), max_size=4))
    records: list[InputRecord] = []
    for n, kind in enumerate(before):
        records.append(anonymous("anon-1", f"a{n}", kind, f"10:{n:02d}", len(records)))
    for n, kind in enumerate(own):
        records.append(event("alice", f"c{n}", kind, f"09:{n:02d}", offset=len(records)))
    records.append(identify("alice", "anon-1", "login-1", "10:30", len(records)))
    for n, kind in enumerate(after):
        records.append(anonymous("anon-1", f"z{n}", kind, f"11:{n:02d}", len(records)))
    for n, kind in enumerate(draw(st.lists(st.sampled_from(ANON_TYPES), max_size=3))):
        records.append(event("alice", f"d{n}", kind, f"11:3{n}", offset=len(records)))
    again = draw(st.lists(st.integers(0, len(records) - 1), max_size=4))
    return records, again


@given(visits())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_replays_re_emit_identical_bytes_and_end_in_the_same_state(
    visit: tuple[list[InputRecord], list[int]],
) -> None:
    records, again = visit
    once, twice = make_shell(), make_shell()
    for record in records:
        await once.feed([record])
    for n, record in enumerate(records):
        await twice.feed([record])
        for replayed in (records[i] for i in again if i <= n):
            await twice.feed([replayed])  # delivered again after a crash before the commit

    assert twice.states.data.keys() == once.states.data.keys()
    for key, raw in once.states.data.items():
        assert decode_state(twice.states.data[key]) == decode_state(raw)
    assert twice.aliases.data == once.aliases.data
    for sink in ("changes", "triggers", "identities"):
        first = {orjson.loads(r.value)["id"]: r for r, _ in getattr(once, sink).records}
        copies = [r for r, _ in getattr(twice, sink).records]
        assert {orjson.loads(r.value)["id"] for r in copies} == first.keys(), sink
        assert all(r == first[orjson.loads(r.value)["id"]] for r in copies), sink
    counted_once(twice)


@st.composite
def shuffled_visits(draw: st.DrawFn) -> tuple[list[InputRecord], list[InputRecord]]:
    """Both ids' events and the identify, arriving in any order (one record per batch)."""
    anon = draw(st.lists(st.sampled_from(ANON_TYPES), min_size=1, max_size=5))
    # Purchases on one side only: two, one per side, are one cycle after a merge (a merge
    # never starts a cycle) but two in the union (processor/engine/identity.py says so).
    own = draw(st.lists(st.sampled_from(ANON_TYPES[:-1]), max_size=4))
    records = [anonymous("anon-1", f"a{n}", k, f"10:{n:02d}", n) for n, k in enumerate(anon)]
    records += [event("alice", f"c{n}", k, f"10:{n:02d}", offset=20 + n) for n, k in enumerate(own)]
    login = identify("alice", "anon-1", "login-1", "10:30", 40)
    return draw(st.permutations([*records, login])), records


@given(shuffled_visits())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_in_any_arrival_order_the_customer_ends_as_the_union_of_both_journeys(
    visit: tuple[list[InputRecord], list[InputRecord]],
) -> None:
    """Anonymous events before the identify merge, after it forward: none is lost or split."""
    arrivals, events = visit
    shell = make_shell()
    for record in arrivals:
        await shell.feed([record])
    union = make_shell()  # every event under alice, no identity at all
    for record in events:
        doc = orjson.loads(record.value) | {"customer_id": "alice"}
        doc.pop("anonymous_id", None)
        await union.feed([InputRecord(record.topic, 0, record.offset, None, orjson.dumps(doc))])

    alice = decode_state(shell.states.data[b"alice"])
    expected = decode_state(union.states.data[b"alice"])
    merged = alice.applied_count - len(events)  # 1 if the identify merged, 0 if nothing was there
    assert merged in (0, 1)
    assert (alice.stage, alice.cycle, alice.purchase_at, alice.last_event_at) == (
        expected.stage,
        expected.cycle,
        expected.purchase_at,
        expected.last_event_at,
    )
    assert b"anon-1" not in shell.states.data
    assert shell.applier.store.aliases_of("alice") == ("anon-1",)
    assert sum(shell.counts.totals().values()) == 1
    counted_once(shell)
