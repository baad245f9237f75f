"""Fuzz: whole input records, good and hostile, through the router and the engine.

Whatever arrives, the shell never raises, every record ends in exactly one
counted outcome against its input partition, every record it sends fits the
size limit, and every output validates against its schema.
"""

from __future__ import annotations

from collections import defaultdict

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.app.pipeline import InputRecord
from processor.contracts.limits import Limits
from tests.app.shell import SOURCES, consumed, make_shell, outcomes
from tests.schemas import validator

LIMITS = Limits(max_event_bytes=4_096, max_id_length=64, max_message_bytes=12_000)
DEAD_LETTER = validator("dead-letter.v2.json")
STAGE_CHANGE = validator("stage-change.v2.json")
TRIGGER = validator("trigger.v2.json")

_TYPES = [
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout_started",
    "order_completed",
    "review_read",
    "pricing_view",
    "ticket_opened",
    "complaint",
    "satisfaction_rating",
    "unknown_type",
]
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_TIMES = st.sampled_from(
    [
        "2026-01-01T10:00:00Z",
        "2026-01-03T10:00:00+02:00",
        "2026-03-01T00:00:00.5Z",
        "9998-12-31T00:00:00Z",
    ]
)


@st.composite
def good_document(draw: st.DrawFn) -> bytes:
    doc = {
        "event_id": draw(st.sampled_from([f"e{i}" for i in range(12)])),  # ids repeat
        "customer_id": draw(st.sampled_from(["alice", "bob", "ünï", "hot"])),
        "type": draw(st.sampled_from(_TYPES)),
        "occurred_at": draw(_TIMES),
        "properties": draw(st.dictionaries(_TEXT, _JSON, max_size=3)),
    }
    if doc["type"] == "satisfaction_rating":
        doc["properties"]["score"] = draw(st.integers(1, 5))
    return orjson.dumps(doc)


_HOSTILE = st.one_of(
    st.none(),  # a tombstone
    st.binary(max_size=64),
    st.just(b"\x00" * 5_000),  # a NUL blob over the size limit
    st.just(b"[" * 2_000 + b"]" * 2_000),  # deep nesting
    st.builds(
        lambda n: orjson.dumps(
            {
                "event_id": "x",
                "customer_id": "c" * n,
                "type": "page_view",
                "occurred_at": "2026-01-01T00:00:00Z",
            }
        ),
        st.integers(60, 3_000),
    ),  # a long customer id, sometimes too large as a whole
    st.builds(
        lambda n: orjson.dumps(
            {
                "event_id": "e" * n,
                "customer_id": "c",
                "type": "page_view",
                "occurred_at": "2026-01-01T00:00:00Z",
            }
        ),
        st.integers(60, 200),
    ),
    st.builds(
        lambda p: orjson.dumps(
            {
                "event_id": "p",
                "customer_id": "c",
                "type": "page_view",
                "occurred_at": "2026-01-01T00:00:00Z",
                "properties": {"pad": "x" * p},
            }
        ),
        st.integers(3_000, 5_000),
    ),
)


@st.composite
def batches(draw: st.DrawFn) -> list[list[InputRecord]]:
    offsets: dict[tuple[str, int], int] = defaultdict(int)
    result = []
    for _ in range(draw(st.integers(1, 4))):
        batch = []
        for _ in range(draw(st.integers(0, 25))):
            topic = draw(st.sampled_from(sorted(SOURCES)))
            partition = draw(st.integers(0, 2))
            value = draw(st.one_of(good_document(), good_document(), _HOSTILE))
            key = draw(st.one_of(st.none(), st.binary(max_size=10), st.just(b"k" * 5_000)))
            offset = offsets[(topic, partition)]
            offsets[(topic, partition)] += 1
            batch.append(InputRecord(topic, partition, offset, key, value))
        result.append(batch)
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches())
async def test_any_records_end_in_exactly_one_outcome_with_valid_bounded_output(
    batches: list[list[InputRecord]],
) -> None:
    shell = make_shell(partitions=3, limits=LIMITS)
    for batch in batches:
        await shell.feed(batch)

    fed: dict[tuple[str, str], int] = defaultdict(int)
    for batch in batches:
        for record in batch:
            fed[(record.topic, str(record.partition))] += 1
    assert consumed(shell.metrics) == fed
    counted: dict[tuple[str, str], float] = defaultdict(float)
    for (topic, partition, _), n in outcomes(shell.metrics).items():
        counted[(topic, partition)] += n
    assert counted == fed

    for record in shell.sent():
        assert len(record.value) <= LIMITS.max_message_bytes
    for record, _ in shell.dead_letters.records:
        DEAD_LETTER.validate(orjson.loads(record.value))
    for record, _ in shell.changes.records:
        STAGE_CHANGE.validate(orjson.loads(record.value))
    for record, _ in shell.triggers.records:
        TRIGGER.validate(orjson.loads(record.value))
