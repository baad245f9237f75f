"""A synthetic but realistic customer population for ``journey demo``.

A demo that only feeds tidy, in-order, happy-path events proves little. This
feed looks like what real producers send: journeys that mostly drop out early,
three sources interleaved by event time with a little arrival lag, mixed
timestamp styles, events the processor does not know, records keyed wrongly or
not at all, and a handful of records that must be dead-lettered. Every rule of
the engine (forward moves, support before and after a purchase, repeat orders,
a new cycle after a long pause) is exercised by some customers.

The output depends only on the arguments, so a demo run can be reproduced.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import orjson

DemoSource = Literal["clickstream", "research", "support"]
SOURCES: tuple[DemoSource, ...] = ("clickstream", "research", "support")

SPAN = timedelta(days=120)
"""Journeys are spread over this long after ``start``."""

NEW_CYCLE_PAUSE = timedelta(days=30)
"""Matches ``new_cycle_after`` of the default definition; returners research after longer."""

SHOP = "https://shop.example.com"


@dataclass(frozen=True)
class DemoRecord:
    """One raw Kafka record to produce to the topic of ``source``."""

    source: DemoSource
    key: bytes | None
    value: bytes


def generate(customers: int, seed: int, start: datetime, malformed: int) -> list[DemoRecord]:
    """``customers`` journeys plus exactly ``malformed`` bad records, in rough event-time order.

    Each customer is ``cust-NNNNNN`` (1-based). ``start`` is the earliest event
    time; a naive ``start`` is taken as UTC. The malformed records are spread
    through the stream and cover every way decoding can reject a record.
    """
    if customers < 0 or malformed < 0:
        raise ValueError("customers and malformed must not be negative")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    rng = random.Random(seed)

    archetypes = list(_ARCHETYPES)
    plan = archetypes[: min(customers, len(archetypes))]
    weights = [_WEIGHTS[name] for name in archetypes]
    plan += rng.choices(archetypes, weights, k=customers - len(plan))
    rng.shuffle(plan)

    timed: list[tuple[datetime, datetime, _Planned, str]] = []
    for number, archetype in enumerate(plan, start=1):
        customer_id = f"cust-{number:06d}"
        journey = _Journey(rng, customer_id, start.year)
        _ARCHETYPES[archetype](journey)
        offset = timedelta(seconds=rng.uniform(0, max(0.0, (SPAN - journey.now).total_seconds())))
        for planned in journey.events:
            occurred = start + offset + planned.at
            timed.append(
                (occurred + _arrival_lag(rng, planned.source), occurred, planned, customer_id)
            )
    timed.sort(key=lambda item: item[0])

    documents: list[tuple[DemoSource, bytes | None, dict[str, Any]]] = []
    for _, occurred, planned, customer_id in timed:
        document = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "customer_id": customer_id,
            "type": planned.type,
            "occurred_at": _timestamp(rng, occurred),
            "properties": planned.properties,
        }
        documents.append((planned.source, _key(rng, customer_id, planned.wrong_key), document))

    records = [DemoRecord(source, key, orjson.dumps(doc)) for source, key, doc in documents]
    return _with_malformed(rng, records, documents, malformed, start)


def count_by_source(records: Iterable[DemoRecord]) -> dict[str, int]:
    """Records per source, every source present (zero if it has none)."""
    counts = Counter(record.source for record in records)
    return {source: counts[source] for source in SOURCES}


@dataclass(frozen=True, slots=True)
class _Product:
    product_id: str
    name: str
    price: float


_CATALOG: dict[str, tuple[str, tuple[_Product, ...]]] = {
    "espresso-machines": (
        "espresso machine",
        (
            _Product("SKU-10231", "Barista Pro 2", 649.0),
            _Product("SKU-10232", "Lungo Compact", 229.0),
            _Product("SKU-10240", "Duo Grinder Set", 389.0),
            _Product("SKU-10255", "Milk Frother Plus", 79.9),
        ),
    ),
    "headphones": (
        "noise cancelling headphones",
        (
            _Product("SKU-20417", "QuietComfort X", 299.0),
            _Product("SKU-20420", "Studio Open 5", 179.0),
            _Product("SKU-20433", "Sport Buds", 89.99),
        ),
    ),
    "e-bikes": (
        "e-bike",
        (
            _Product("SKU-31002", "Urban E 500", 2299.0),
            _Product("SKU-31010", "Trekking E 7", 3199.0),
            _Product("SKU-31021", "Folding E Mini", 1499.0),
            _Product("SKU-31090", "Bike Lock Pro", 59.0),
        ),
    ),
    "robot-vacuums": (
        "robot vacuum",
        (
            _Product("SKU-42010", "RoboClean S8", 549.0),
            _Product("SKU-42018", "RoboMop Duo", 799.0),
            _Product("SKU-42025", "RoboClean Lite", 249.0),
        ),
    ),
    "running-shoes": (
        "running shoes",
        (
            _Product("SKU-53110", "Tempo Runner 3", 139.95),
            _Product("SKU-53124", "Trail Grip GTX", 169.95),
            _Product("SKU-53131", "Marathon Elite", 219.0),
        ),
    ),
    "smartwatches": (
        "smartwatch",
        (
            _Product("SKU-64001", "Pulse Watch 4", 329.0),
            _Product("SKU-64012", "Pulse Watch Lite", 179.0),
            _Product("SKU-64020", "Adventure GPS", 499.0),
        ),
    ),
}
_CATEGORIES = tuple(_CATALOG)
_REVIEW_SITES = ("reviewhub.example", "techtalk.example", "forum.example", "videos.example")
_ENGINES = ("google", "google", "google", "bing", "duckduckgo", "ecosia")
_REFERRERS = (
    "https://www.google.com/",
    "https://www.instagram.com/",
    "https://www.facebook.com/",
    "newsletter",
    None,
    None,
)
_TICKET_TOPICS = ("delivery_delay", "damaged_item", "setup_help", "billing", "warranty")
_COMPLAINTS = (
    "Parcel arrived four days late and nobody answered my emails",
    "Item arrived scratched, the box was crushed",
    "Charged twice for one order",
    "Stopped working after two weeks",
)
_QUESTIONS = (
    "Is the {name} available in black?",
    "How long does delivery of the {name} take?",
    "Does the {name} come with a warranty extension?",
    "Can I pay the {name} in instalments?",
    "What is the difference between the {name} and the {other}?",
)
_SETUP_QUESTIONS = (
    "How do I pair the {name} with my phone?",
    "The {name} shows an error light, what does it mean?",
    "Where can I download the manual for the {name}?",
)


@dataclass(frozen=True, slots=True)
class _Planned:
    at: timedelta
    source: DemoSource
    type: str
    properties: dict[str, Any]
    wrong_key: str
    """What a careless producer would key this record by instead of the customer id."""


class _Journey:
    """One customer's events relative to the journey's own start, built step by step."""

    def __init__(self, rng: random.Random, customer_id: str, year: int) -> None:
        self.rng = rng
        self.customer_id = customer_id
        self.year = year
        self.category = rng.choice(_CATEGORIES)
        self.noun, catalog = _CATALOG[self.category]
        self.products = rng.sample(catalog, len(catalog))
        self.device = rng.choices(("mobile", "desktop", "tablet"), (55, 38, 7))[0]
        self.visitor_id = f"anon-{rng.getrandbits(40):010x}"
        self.session_id = ""
        self.now = timedelta(0)
        self.events: list[_Planned] = []
        self.orders: list[tuple[timedelta, dict[str, Any]]] = []
        self.cart: list[_Product] = []

    @property
    def favourite(self) -> _Product:
        return self.products[0]

    def later(self, low_hours: float, high_hours: float) -> None:
        self.now += timedelta(hours=self.rng.uniform(low_hours, high_hours))

    def session(self, low_hours: float = 2, high_hours: float = 96) -> None:
        if self.events:
            self.later(low_hours, high_hours)
        self.session_id = f"sess-{self.rng.getrandbits(48):012x}"

    def emit(
        self, source: DemoSource, event_type: str, properties: dict[str, Any], wrong_key: str = ""
    ) -> None:
        if self.events:
            self.now += timedelta(seconds=self.rng.uniform(4, 240))
        fallback = self.session_id if source == "clickstream" else self.visitor_id
        self.events.append(
            _Planned(self.now, source, event_type, properties, wrong_key or fallback)
        )
        if self.rng.random() < 0.02:
            self._noise(source)

    def _noise(self, source: DemoSource) -> None:
        """Event types the default definition does not know; the processor must ignore them."""
        self.now += timedelta(seconds=self.rng.uniform(1, 30))
        if source == "clickstream":
            noise = ("heartbeat", {"session_id": self.session_id, "app_version": "7.12.0"})
        elif source == "research":
            noise = ("newsletter_open", {"campaign": f"{self.category}-{self.year}-spring"})
        else:
            noise = ("callback_scheduled", {"slot": "tomorrow 10:00-12:00"})
        self.events.append(_Planned(self.now, source, noise[0], noise[1], self.visitor_id))

    def click(self, event_type: str, **properties: Any) -> None:
        properties = {"session_id": self.session_id, "device": self.device, **properties}
        self.emit("clickstream", event_type, properties)

    def page_view(self) -> None:
        path = self.rng.choice(
            ("/", f"/c/{self.category}", f"/c/{self.category}?sort=price_asc", "/sale", "/blog")
        )
        self.click("page_view", url=SHOP + path, referrer=self.rng.choice(_REFERRERS))

    def product_view(self, product: _Product | None = None) -> None:
        product = product or self.rng.choice(self.products)
        self.click(
            "product_view",
            url=f"{SHOP}/p/{product.product_id}",
            product_id=product.product_id,
            name=product.name,
            category=self.category,
            price=product.price,
        )

    def query(self) -> str:
        first, *rest = self.products
        other = rest[0] if rest else first
        template = self.rng.choice(
            (
                "best {noun} {year}",
                "{noun} under {budget} euro",
                "{name} review",
                "{name} vs {other}",
                "is {name} worth it",
                "{noun} for beginners",
            )
        )
        budget = int(round(first.price * self.rng.uniform(0.8, 1.3), -2)) or 100
        return template.format(
            noun=self.noun, year=self.year, budget=budget, name=first.name, other=other.name
        ).lower()

    def site_search(self) -> None:
        self.click("site_search", query=self.query(), results=self.rng.randint(0, 48))

    def research(self, event_type: str, **properties: Any) -> None:
        self.emit("research", event_type, properties)

    def search_query(self) -> None:
        self.research("search_query", query=self.query(), engine=self.rng.choice(_ENGINES))

    def review_read(self) -> None:
        product = self.rng.choice(self.products)
        site = self.rng.choice(_REVIEW_SITES)
        self.research(
            "review_read",
            url=f"https://{site}/reviews/{product.product_id.lower()}",
            product_id=product.product_id,
            review_rating=round(self.rng.uniform(2.8, 4.9), 1),
            read_seconds=self.rng.randint(20, 600),
        )

    def support(self, event_type: str, **properties: Any) -> None:
        wrong = properties.get("ticket_id", "")
        self.emit("support", event_type, properties, wrong_key=str(wrong))

    def ticket_id(self) -> str:
        return f"TCK-{self.rng.randrange(10**6, 10**7)}"

    def question(self, after_purchase: bool) -> str:
        templates = _SETUP_QUESTIONS if after_purchase else _QUESTIONS
        other = self.products[-1]
        return self.rng.choice(templates).format(name=self.favourite.name, other=other.name)


def _awareness(j: _Journey) -> None:
    for _ in range(j.rng.choice((1, 1, 2))):
        j.session()
        for _ in range(j.rng.randint(1, 4)):
            j.page_view()


def _information_search(j: _Journey) -> None:
    for _ in range(j.rng.randint(1, 3)):
        j.session(4, 120)
        j.search_query()
        for _ in range(j.rng.randint(0, 3)):
            j.review_read()
        if j.rng.random() < 0.25:
            j.research(
                "content_download",
                title=f"Buying guide: {j.noun}s",
                format=j.rng.choice(("pdf", "pdf", "epub")),
            )
        if j.rng.random() < 0.15:
            j.research(
                "recommendation_request",
                channel=j.rng.choice(("forum", "friend", "social")),
                text=f"Which {j.noun} would you recommend?",
            )
        if j.rng.random() < 0.7:
            j.session(0.1, 8)
            j.page_view()
            if j.rng.random() < 0.5:
                j.site_search()
            for _ in range(j.rng.randint(1, 3)):
                j.product_view()


def _evaluation(j: _Journey, pre_purchase_contact: float = 0.25) -> None:
    j.session(4, 96)
    if j.rng.random() < 0.6:
        compared = j.products[: j.rng.randint(2, len(j.products))]
        j.research(
            "comparison_view",
            site=j.rng.choice(_REVIEW_SITES),
            product_ids=[product.product_id for product in compared],
        )
    if j.rng.random() < 0.5:
        j.research(
            "pricing_view",
            site="prices.example",
            product_id=j.favourite.product_id,
            lowest_price=round(j.favourite.price * j.rng.uniform(0.88, 1.0), 2),
        )
    j.session(0.2, 48)
    j.product_view(j.favourite)
    if j.rng.random() < 0.35:
        j.click("add_to_wishlist", product_id=j.favourite.product_id, price=j.favourite.price)
    if j.rng.random() < 0.7:
        _add_to_cart(j, j.favourite)
    if j.rng.random() < pre_purchase_contact:
        j.session(0.5, 30)
        kind = j.rng.choice(("product_question", "chat_started"))
        channel = "chat" if kind == "chat_started" else j.rng.choice(("email", "phone", "chat"))
        j.support(
            kind,
            channel=channel,
            product_id=j.favourite.product_id,
            subject=j.question(after_purchase=False),
        )


def _add_to_cart(j: _Journey, product: _Product) -> None:
    quantity = 1 if j.rng.random() < 0.9 else 2
    j.cart.append(product)
    j.click("add_to_cart", product_id=product.product_id, price=product.price, quantity=quantity)


def _stall(j: _Journey) -> None:
    """An abandoned checkout: the strongest pre-purchase signal that never converts."""
    if j.cart and j.rng.random() < 0.4:
        j.click("checkout_started", cart_value=_cart_value(j.cart), currency="EUR")


def _cart_value(cart: list[_Product]) -> float:
    return round(sum(product.price for product in cart), 2)


def _purchase(j: _Journey, product: _Product | None = None) -> None:
    product = product or j.favourite
    j.session(0.5, 72)
    j.product_view(product)
    if product not in j.cart:
        _add_to_cart(j, product)
    if j.rng.random() < 0.2 and len(j.products) > 1 and j.products[-1] not in j.cart:
        _add_to_cart(j, j.products[-1])
    cart, j.cart = j.cart, []
    value = _cart_value(cart)
    j.click("checkout_started", cart_value=value, currency="EUR", items=len(cart))
    shipping = 0.0 if value >= 50 else 4.95
    order = {
        "order_id": f"ORD-{j.rng.randrange(10**7, 10**8)}",
        "order_value": round(value + shipping, 2),
        "currency": "EUR",
        "items": [{"product_id": item.product_id, "unit_price": item.price} for item in cart],
        "payment_method": j.rng.choice(("card", "paypal", "klarna", "apple_pay")),
        "shipping": j.rng.choice(("standard", "standard", "express")),
    }
    j.click("order_completed", **order)
    j.orders.append((j.now, order))


def _after_purchase(j: _Journey) -> None:
    """Life with the purchase: setup questions, tickets, complaints, returns and ratings."""
    order = j.orders[-1][1]
    unhappy = j.rng.random() < 0.3
    j.session(2, 24 * 6)
    if not unhappy:
        if j.rng.random() < 0.5:
            j.support(
                j.rng.choice(("product_question", "chat_started")),
                channel=j.rng.choice(("chat", "email")),
                order_id=order["order_id"],
                subject=j.question(after_purchase=True),
            )
        if j.rng.random() < 0.7:
            j.later(24, 24 * 10)
            _rating(j, (2, 3, 10, 35, 50), survey="post_delivery")
        return
    ticket = j.ticket_id()
    topic = j.rng.choice(_TICKET_TOPICS)
    j.support("ticket_opened", ticket_id=ticket, order_id=order["order_id"], topic=topic)
    if j.rng.random() < 0.5:
        j.later(1, 48)
        j.support(
            "complaint",
            ticket_id=ticket,
            order_id=order["order_id"],
            text=j.rng.choice(_COMPLAINTS),
            channel=j.rng.choice(("email", "phone")),
        )
    if j.rng.random() < 0.25:
        j.later(1, 72)
        j.support(
            "return_requested",
            order_id=order["order_id"],
            reason=j.rng.choice(("defective", "not_as_described", "changed_mind")),
        )
    j.later(2, 24 * 5)
    j.support(
        "ticket_resolved",
        ticket_id=ticket,
        resolution=j.rng.choice(("replacement_sent", "refund_issued", "answered", "voucher")),
    )
    if j.rng.random() < 0.8:
        j.later(0.5, 48)
        _rating(j, (25, 25, 25, 15, 10), survey="post_contact", ticket_id=ticket)


def _rating(j: _Journey, weights: tuple[int, ...], **properties: Any) -> None:
    score = j.rng.choices((1, 2, 3, 4, 5), weights)[0]
    j.support("satisfaction_rating", score=score, scale="1-5", **properties)


def _bounce(j: _Journey) -> None:
    _awareness(j)
    if j.rng.random() < 0.3:
        j.product_view()


def _researcher(j: _Journey) -> None:
    if j.rng.random() < 0.7:
        _awareness(j)
    _information_search(j)


def _evaluator(j: _Journey) -> None:
    if j.rng.random() < 0.6:
        _awareness(j)
    _information_search(j)
    _evaluation(j)
    _stall(j)


def _buyer(j: _Journey) -> None:
    if j.rng.random() < 0.6:
        _awareness(j)
    if j.rng.random() < 0.85:
        _information_search(j)
    _evaluation(j, pre_purchase_contact=0.2)
    _purchase(j)


def _buyer_with_support(j: _Journey) -> None:
    _buyer(j)
    _after_purchase(j)


def _repeat_buyer(j: _Journey) -> None:
    """Orders again within a few weeks: a new cycle starts straight at purchase."""
    _buyer(j)
    if j.rng.random() < 0.5:
        _after_purchase(j)
    for _ in range(1 if j.rng.random() < 0.8 else 2):
        j.session(24 * 2, 24 * 25)
        j.page_view()
        _purchase(j, j.rng.choice(j.products))
        if j.rng.random() < 0.3:
            _after_purchase(j)


def _returner(j: _Journey) -> None:
    """Researches again more than 30 days after buying, which opens a new cycle."""
    _buyer(j)
    if j.rng.random() < 0.6:
        _after_purchase(j)
    ordered_at = j.orders[-1][0]
    pause = NEW_CYCLE_PAUSE + timedelta(days=j.rng.uniform(2, 40))
    j.now = max(j.now, ordered_at + pause)
    if j.rng.random() < 0.5:
        j.category = j.rng.choice(_CATEGORIES)
        j.noun, catalog = _CATALOG[j.category]
        j.products = j.rng.sample(catalog, len(catalog))
    _information_search(j)
    _evaluation(j)
    if j.rng.random() < 0.8:
        _purchase(j)
        if j.rng.random() < 0.4:
            _after_purchase(j)


_ARCHETYPES: dict[str, Callable[[_Journey], None]] = {
    "bounce": _bounce,
    "researcher": _researcher,
    "evaluator": _evaluator,
    "buyer": _buyer,
    "buyer_with_support": _buyer_with_support,
    "repeat_buyer": _repeat_buyer,
    "returner": _returner,
}
_WEIGHTS = {
    "bounce": 28,
    "researcher": 20,
    "evaluator": 16,
    "buyer": 12,
    "buyer_with_support": 12,
    "repeat_buyer": 6,
    "returner": 6,
}


def _arrival_lag(rng: random.Random, source: DemoSource) -> timedelta:
    """Sources lag differently (a CRM exports support contacts late), so arrival order is rough."""
    if rng.random() < 0.01:
        return timedelta(minutes=rng.uniform(5, 90))
    ceiling = {"clickstream": 2.0, "research": 30.0, "support": 300.0}[source]
    return timedelta(seconds=rng.uniform(0, ceiling))


_OFFSETS = (
    (UTC, 60),
    (timezone(timedelta(hours=2)), 28),
    (timezone(timedelta(hours=1)), 6),
    (timezone(timedelta(hours=-5)), 4),
    (timezone(timedelta(hours=5, minutes=30)), 2),
)


def _timestamp(rng: random.Random, moment: datetime) -> str:
    """RFC 3339 the way different producers write it: various offsets and fraction lengths."""
    zone = rng.choices([z for z, _ in _OFFSETS], [w for _, w in _OFFSETS])[0]
    local = moment.astimezone(zone)
    digits = rng.choices((0, 3, 6, 9), (35, 40, 20, 5))[0]
    fraction = f".{local.microsecond:06d}000"[: digits + 1] if digits else ""
    suffix = "Z" if zone is UTC else local.strftime("%z")
    suffix = suffix if suffix == "Z" else f"{suffix[:3]}:{suffix[3:]}"
    return local.strftime("%Y-%m-%dT%H:%M:%S") + fraction + suffix


def _key(rng: random.Random, customer_id: str, wrong_key: str) -> bytes | None:
    roll = rng.random()
    if roll < 0.04:
        return None
    if roll < 0.08 and wrong_key:
        return wrong_key.encode()
    return customer_id.encode()


_MALFORMED_KINDS = (
    "truncated_json",
    "csv_line",
    "latin1_bytes",
    "json_array",
    "missing_customer_id",
    "empty_event_id",
    "occurred_yesterday",
    "occurred_without_offset",
    "oversized",
)


def _with_malformed(
    rng: random.Random,
    records: list[DemoRecord],
    documents: list[tuple[DemoSource, bytes | None, dict[str, Any]]],
    malformed: int,
    start: datetime,
) -> list[DemoRecord]:
    """Insert the bad records at random places, each shaped like its neighbour."""
    if malformed == 0:
        return records
    kinds = list(_MALFORMED_KINDS)
    rng.shuffle(kinds)
    total = len(records) + malformed
    positions = set(rng.sample(range(total), malformed))
    fallback: tuple[DemoSource, bytes | None, dict[str, Any]] = (
        "clickstream",
        b"cust-000001",
        {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "customer_id": "cust-000001",
            "type": "page_view",
            "occurred_at": _timestamp(rng, start),
            "properties": {"url": SHOP + "/"},
        },
    )
    result: list[DemoRecord] = []
    valid = iter(records)
    inserted = 0
    for position in range(total):
        if position not in positions:
            result.append(next(valid))
            continue
        neighbour = position - inserted
        source, key, document = (
            documents[min(neighbour, len(documents) - 1)] if documents else fallback
        )
        kind = kinds[inserted % len(kinds)]
        result.append(DemoRecord(source, key, _malformed_value(rng, kind, document)))
        inserted += 1
    return result


def _malformed_value(rng: random.Random, kind: str, neighbour: dict[str, Any]) -> bytes:
    doc = dict(neighbour, event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)))
    if kind == "truncated_json":
        whole = orjson.dumps(doc)
        return whole[: rng.randint(len(whole) // 3, len(whole) - 2)]
    if kind == "csv_line":
        return f"{doc['customer_id']},{doc['type']},{doc['occurred_at']}".encode()
    if kind == "latin1_bytes":
        doc["properties"] = {**doc["properties"], "comment": "Très bien, livré à temps"}
        return orjson.dumps(doc).decode("utf-8").encode("latin-1")
    if kind == "json_array":
        return orjson.dumps([doc])
    if kind == "missing_customer_id":
        del doc["customer_id"]
        return orjson.dumps(doc)
    if kind == "empty_event_id":
        return orjson.dumps(dict(doc, event_id=""))
    if kind == "occurred_yesterday":
        return orjson.dumps(dict(doc, occurred_at="yesterday"))
    if kind == "oversized":  # larger than JOURNEY_MAX_EVENT_BYTES' default
        return orjson.dumps(dict(doc, properties={"blob": "x" * 70_000}))
    naive = str(doc["occurred_at"])[:19]
    return orjson.dumps(dict(doc, occurred_at=naive))
