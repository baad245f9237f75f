"""Building events for the engine tests: one customer, times as days after T0."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from processor.engine import Event, Source, load_model

CUSTOMER = "cust-1"
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
TOPICS: dict[Source, str] = {
    "clickstream": "journey.clickstream",
    "research": "journey.research",
    "support": "journey.support",
}
SOURCE_OF: dict[str, Source] = {
    event_type: source for (source, event_type) in load_model().evidence
}

_ids = itertools.count()


def at(days: float = 0, **delta: float) -> datetime:
    """T0 plus some days (and optionally hours, minutes, seconds, ...)."""
    return T0 + timedelta(days=days, **delta)


def ev(
    type_: str,
    when: datetime | float = 0,
    *,
    source: Source | None = None,
    event_id: str | None = None,
    customer: str = CUSTOMER,
    properties: Mapping[str, Any] | None = None,
) -> Event:
    """An event; ``when`` is a datetime or a number of days after T0; source from the type."""
    source = source or SOURCE_OF.get(type_, "clickstream")
    occurred_at = when if isinstance(when, datetime) else at(when)
    return Event(
        event_id=event_id or f"ev-{next(_ids)}",
        customer_id=customer,
        source=source,
        topic=TOPICS[source],
        type=type_,
        occurred_at=occurred_at,
        properties=dict(properties or {}),
    )
