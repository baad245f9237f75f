"""The erasure confirmation on the wire: ``customer_erased`` (schemas/customer-erased.v1.json).

Deterministic like every output: the same request gives the same id, bytes and
CloudEvents headers, so a replayed forget is a dedupable repeat.
"""

from __future__ import annotations

import orjson

from processor.contracts.outputs import Record, rfc3339
from processor.engine.erasure import CustomerErased

CUSTOMER_ERASED_TYPE = "io.journey-processor.customer_erased.v1"
"""CloudEvents ``type`` of an erasure confirmation."""


def encode_customer_erased(erased: CustomerErased, source: str) -> Record:
    """The confirmation record, keyed by customer, with CloudEvents binary-mode headers.

    ``ce_time`` is the request's time (none when the request gave none): the
    record must not depend on when the forget was applied.
    """
    requested = None if erased.requested_at is None else rfc3339(erased.requested_at)
    document = {
        "id": erased.id,
        "customer_id": erased.customer_id,
        "request_id": erased.request_id,
        "requested_at": requested,
    }
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", erased.id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", CUSTOMER_ERASED_TYPE.encode()),
        *([("ce_time", requested.encode())] if requested is not None else []),
        ("ce_subject", erased.customer_id.encode()),
        ("content-type", b"application/json"),
    ]
    return Record(erased.customer_id.encode(), orjson.dumps(document), headers)
