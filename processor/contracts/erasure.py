"""Erasure on the wire: requests in (schemas/erasure-request.v1.json), confirmations out
(``customer_erased``, schemas/customer-erased.v1.json).

Deterministic like every output: the same request gives the same id, bytes and
CloudEvents headers, so a replayed forget is a dedupable repeat. A request
without its own ``request_id`` is named by its input position, which a replay
of the same record keeps.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.contracts.inputs import Rejection, parse_timestamp
from processor.contracts.limits import Limits
from processor.contracts.outputs import Record, rfc3339
from processor.engine.erasure import CustomerErased, ForgetRequest

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


def encode_erasure_request(request: ForgetRequest) -> bytes:
    """A request document, as ``journey forget`` writes it."""
    document: dict[str, Any] = {
        "customer_id": request.customer_id,
        "request_id": request.request_id,
    }
    if request.requested_at is not None:
        document["requested_at"] = rfc3339(request.requested_at)
    return orjson.dumps(document)


def decode_erasure_request(
    value: bytes | None, key: bytes | None, position: str, limits: Limits
) -> ForgetRequest | Rejection:
    """An erasure request record as a request, or why not (reason codes as for events).

    ``position`` (``topic/partition/offset``) names a request that has no ``request_id``.
    """
    oversize = limits.too_large(key, value)
    if oversize is not None:
        return oversize
    if value is None:
        return Rejection("not_json", "the record has no value (a tombstone)")
    try:
        doc: Any = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        return Rejection("not_utf8" if "utf-8" in message.lower() else "not_json", message)
    if not isinstance(doc, dict):
        return Rejection("not_an_object", f"the value is a JSON {type(doc).__name__}")
    if "customer_id" not in doc:
        return Rejection("missing_field", "customer_id is missing")
    customer_id, request_id = doc["customer_id"], doc.get("request_id", position)
    for name, text in (("customer_id", customer_id), ("request_id", request_id)):
        if not isinstance(text, str) or not text:
            return Rejection("invalid_field", f"{name} must be a non-empty string")
        length = len(text.encode("utf-8", "surrogatepass"))
        if length > limits.max_id_length:
            return Rejection(
                "invalid_field",
                f"{name} is {length} bytes long; at most {limits.max_id_length} "
                "(JOURNEY_MAX_ID_LENGTH)",
            )
    requested = doc.get("requested_at")
    requested_at = None
    if requested is not None:
        requested_at = parse_timestamp(requested) if isinstance(requested, str) else None
        if requested_at is None:
            return Rejection(
                "invalid_timestamp",
                f"requested_at {str(requested)[:64]!r} is not RFC 3339 with an offset",
            )
    return ForgetRequest(customer_id, request_id, requested_at)
