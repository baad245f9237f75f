"""Erasure decisions (GDPR article 17), pure: what forgetting a customer deletes and confirms.

The shell deletes what :func:`forget` names (the state key, every sealed dedupe
chunk still inside the window) and sends the confirmation. The confirmation
depends on the request only, never on what was found: a forget replayed after
a crash, which finds the state already gone, re-emits the same id and bytes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

import msgspec

from processor.engine.vocabulary import CustomerState

ERASURE_NAMESPACE = uuid.UUID("4b7c2f8e-1d3a-5e6f-8a9b-657261736564")
"""Namespace of ``customer_erased`` ids. Never change it."""


class ForgetRequest(msgspec.Struct, frozen=True):
    """Forget one customer; ``request_id`` names the request (a replay keeps it)."""

    customer_id: str
    request_id: str
    requested_at: datetime | None = None


class CustomerErased(msgspec.Struct, frozen=True):
    """The confirmation that a customer's data is gone from its owning partition."""

    customer_id: str
    request_id: str
    requested_at: datetime | None = None

    @property
    def id(self) -> str:
        """A UUIDv5 of the customer and the request: identical on every replay."""
        return str(uuid.uuid5(ERASURE_NAMESPACE, f"{self.customer_id}\x1f{self.request_id}"))


class Forget(NamedTuple):
    """What one forget request does: the chunks to tombstone, and the confirmation."""

    had_state: bool
    chunks: tuple[int, ...]
    """Indexes of sealed dedupe chunks that may still exist (the state's window)."""
    confirmation: CustomerErased


def forget(state: CustomerState | None, request: ForgetRequest) -> Forget:
    """Decide the erasure of ``request.customer_id`` given its state (None: nothing stored).

    ``state`` must belong to the requested customer. Chunks older than the
    window were deleted when they expired, so the window is every chunk key
    the customer can still have.
    """
    if state is not None and state.customer_id != request.customer_id:
        raise ValueError("the state belongs to another customer")
    chunks = tuple(state.sealed_chunks) if state is not None else ()
    confirmation = CustomerErased(request.customer_id, request.request_id, request.requested_at)
    return Forget(state is not None, chunks, confirmation)
