"""Identity on the wire: the anonymous id's final record on ``journey.identities``
(``identity_merged``, schemas/identity-merged.v1.json).

Deterministic like every output: the same identify event gives the same id,
bytes and CloudEvents headers, so a replayed identify is a dedupable repeat.
"""

from __future__ import annotations

import orjson

from processor.contracts.outputs import Record, rfc3339
from processor.engine.identity import IdentityMerged

IDENTITY_MERGED_TYPE = "io.journey-processor.identity_merged.v1"
"""CloudEvents ``type`` of an identity merge record."""


def encode_identity_merged(merged: IdentityMerged, source: str) -> Record:
    """The record, keyed by the anonymous id, with CloudEvents binary-mode headers.

    ``ce_time`` is the identify event's time, ``ce_subject`` the anonymous id: the
    record is about that id, and its key puts it next to nothing else of ours.
    """
    identified = rfc3339(merged.identified_at)
    document = {
        "id": merged.id,
        "anonymous_id": merged.anonymous_id,
        "customer_id": merged.customer_id,
        "identify": {
            "event_id": merged.identify.event_id,
            "topic": merged.identify.topic,
            "type": merged.identify.type,
        },
        "identified_at": identified,
        "model": {"name": merged.model_name, "version": merged.model_version},
    }
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", merged.id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", IDENTITY_MERGED_TYPE.encode()),
        ("ce_time", identified.encode()),
        ("ce_subject", merged.anonymous_id.encode()),
        ("content-type", b"application/json"),
    ]
    return Record(merged.anonymous_id.encode(), orjson.dumps(document), headers)
