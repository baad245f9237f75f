"""Identity on the wire: the anonymous id's final record on ``journey.identities``
(``identity_merged``, schemas/identity-merged.v1.json), and the alias table's rows:
an anonymous id's alias (on its partition) and a customer's alias list (on the customer's).

Deterministic like every output: the same identify event gives the same id,
bytes and CloudEvents headers, so a replayed identify is a dedupable repeat.
"""

from __future__ import annotations

from typing import NamedTuple

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


class Alias(NamedTuple):
    """A row of the ``customer-aliases`` table: anonymous id (the key) -> its customer.

    Stored on the anonymous id's partition. ``identify`` is the event id of the
    identify event that linked them: the same event again is a replay (redo
    everything, identically); another identify of the same anonymous id links
    nothing (the first link wins).
    """

    customer_id: str
    identify: str


ALIAS_VERSION = 1


def encode_alias(alias: Alias) -> bytes:
    """JSON ``{"v": 1, "customer_id": ..., "identify": ...}``."""
    return orjson.dumps(
        {"v": ALIAS_VERSION, "customer_id": alias.customer_id, "identify": alias.identify}
    )


def decode_alias(raw: bytes) -> Alias:
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != ALIAS_VERSION:
        raise ValueError("unknown alias record version")
    return Alias(doc["customer_id"], doc["identify"])


def aliases_key(customer_id: str) -> bytes:
    """Key of a customer's list of merged anonymous ids, in the alias table on its partition.

    Beside the customer's own keys (``<id>``, ``<id>\\x1f<n>``), so erasure's key-range
    compaction of the customer covers it."""
    return f"{customer_id}\x1faliases".encode()


def encode_alias_list(anonymous_ids: tuple[str, ...]) -> bytes:
    """JSON ``{"v": 1, "aliases": [...]}``, oldest first."""
    return orjson.dumps({"v": ALIAS_VERSION, "aliases": anonymous_ids})


def decode_alias_list(raw: bytes) -> tuple[str, ...]:
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != ALIAS_VERSION:
        raise ValueError("unknown alias list version")
    return tuple(doc["aliases"])
