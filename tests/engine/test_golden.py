"""The engine's outputs and states on the demo population, pinned by digest.

Speed work on the decoder and the engine must not change a single output byte
or state: a re-emission after an upgrade has to be byte-identical to what the
old release sent. The digests below were taken on the engine before the fast
paths were added (commit 3658d4d); any change to them is a behaviour change.
The output digest was taken again for trigger.v2 (content ids and ``occurrence``
on the wire, a versioned contract change): the state digest and the output
count stayed as they were. The state digest was taken again when two fields were
renamed in the code (a stage change's ``trigger`` to ``evidence``, a fired
trigger's ``trigger`` to ``rule``): it hashes msgspec's JSON of the states, which
names fields. The output digest, and the stored state bytes (a positional format;
checked equal on 44,953 writes of another population), did not change.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec

from processor.contracts.inputs import Rejection
from processor.contracts.limits import Limits, decode_record
from processor.contracts.outputs import encode_stage_change, encode_trigger
from processor.demo.population import generate
from processor.engine import ChunkSealed, CustomerState, StageChange, apply, load_model
from processor.engine.triggers import TriggerFired

TOPICS = {"clickstream": "t.clickstream", "research": "t.research", "support": "t.support"}


def _run(customers: int, seed: int) -> tuple[str, str, int]:
    model = load_model()
    limits = Limits()
    records = generate(customers, seed, datetime(2025, 3, 1, tzinfo=UTC), customers // 20)
    states: dict[str, CustomerState] = {}
    outputs = hashlib.sha256()
    count = 0
    for record in records:
        event = decode_record(
            record.key, record.value, record.source, TOPICS[record.source], limits
        )
        if isinstance(event, Rejection):
            outputs.update(f"reject {event.reason} {event.detail}\n".encode())
            continue
        step = apply(states.get(event.customer_id), event, model)
        outputs.update(f"{step.outcome}\n".encode())
        if step.state is not None:
            states[event.customer_id] = step.state
        for output in step.outputs:
            count += 1
            if isinstance(output, StageChange):
                sent = encode_stage_change(output, "/golden")
                outputs.update(sent.value + repr(sent.headers).encode())
            elif isinstance(output, TriggerFired):
                sent = encode_trigger(output, "/golden")
                outputs.update(sent.value + repr(sent.headers).encode())
            elif isinstance(output, ChunkSealed):
                outputs.update(msgspec.json.encode(output))
    final = hashlib.sha256()
    for customer in sorted(states):
        final.update(msgspec.json.encode(states[customer]))
    return outputs.hexdigest()[:24], final.hexdigest()[:24], count


def test_outputs_and_states_match_the_pinned_digests() -> None:
    assert _run(400, 11) == GOLDEN


GOLDEN = ("dfe4fb6aa4faf21551591b1e", "23d4d1d9e4cda3ab0eb0494d", 1758)
