"""Demo traffic: realistic, valid CustomerEvents from many customers across channels.

Each simulated customer walks a small story (anonymous browsing, sign-up, product views, cart,
an order online or in a store, email engagement, a support ticket, loyalty), so every journey
in the library has something to react to. Deterministic for a seed, so runs can be compared.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.kafka import producer
from orchestrator.topics import Topics

__all__ = ["demo_events", "event_key", "produce_events"]

_PRODUCTS = [
    ("p-trail-runner", "shoes/running", "Trail Runner 2", 12900),
    ("p-city-sneaker", "shoes/casual", "City Sneaker", 8900),
    ("p-rain-jacket", "apparel/outerwear", "Rain Jacket", 15900),
    ("p-wool-socks", "apparel/socks", "Merino Socks (3 pack)", 2400),
    ("p-yoga-mat", "fitness/mats", "Yoga Mat Pro", 6900),
    ("p-water-bottle", "fitness/accessories", "Insulated Bottle", 2900),
]
_TIME_ZONES = ["Europe/Paris", "Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Berlin"]


def _money(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": "EUR"}


def _story(
    rng: random.Random, n: int, start: datetime
) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """One customer's events in time order (the caller interleaves customers)."""
    cid = f"cust-{n:05d}"
    anon = f"anon-{rng.getrandbits(48):012x}"
    email = f"customer{n}@example.com"
    phone = f"+3361{n:07d}"
    t = start + timedelta(seconds=rng.uniform(0, 600))
    seq = 0

    def ev(event_type: str, channel: str, **sections: Any) -> tuple[datetime, dict[str, Any]]:
        nonlocal seq
        seq += 1
        identities = sections.pop("identities", {"customer_id": cid})
        return t, {
            "event_id": f"{cid}-{seq}",
            "event_time": t,
            "channel": channel,
            "event_type": event_type,
            "identities": identities,
            "attributes": sections.pop("attributes", {}),
            **sections,
        }

    def product(i: int | None = None) -> dict[str, Any]:
        pid, cat, name, price = _PRODUCTS[rng.randrange(len(_PRODUCTS)) if i is None else i]
        return {"product_id": pid, "category": cat, "name": name, "price": _money(price)}

    # Anonymous app browsing, then sign-up linking the device to the new customer id.
    for _ in range(rng.randint(1, 3)):
        yield ev("product_view", "app", identities={"anonymous_id": anon}, product=product())
        t += timedelta(seconds=rng.uniform(5, 90))
    yield ev(
        "signup",
        "app",
        identities={"customer_id": cid, "anonymous_id": anon, "email": email, "phone": phone},
        preferences={
            "time_zone": rng.choice(_TIME_ZONES),
            "language": "en",
            "quiet_hours_start": "21:00",
            "quiet_hours_end": "08:00",
        },
    )
    for channel in ("email", "sms", "push"):
        if rng.random() < 0.7:
            yield ev(
                "consent_changed",
                "web",
                consent={
                    "channel": channel,
                    "purpose": "marketing",
                    "status": "opted_in",
                    "source": "signup form",
                },
            )
    t += timedelta(minutes=rng.uniform(1, 30))
    favourite = rng.randrange(len(_PRODUCTS))
    for _ in range(rng.randint(1, 4)):
        yield ev("product_view", rng.choice(["web", "app"]), product=product(favourite))
        t += timedelta(seconds=rng.uniform(10, 300))
    if rng.random() < 0.6:
        yield ev("add_to_cart", rng.choice(["web", "app"]), product=product(favourite))
        t += timedelta(minutes=rng.uniform(5, 120))
        if rng.random() < 0.5:
            _, _, _, price = _PRODUCTS[favourite]
            store = rng.random() < 0.3
            yield ev(
                "order_placed",
                "store" if store else "commerce",
                order={
                    "order_id": f"o-{cid}-1",
                    "total": _money(price),
                    "store_id": "store-paris-01" if store else None,
                    "items": [
                        {
                            "product_id": _PRODUCTS[favourite][0],
                            "quantity": 1,
                            "unit_price": _money(price),
                        }
                    ],
                },
                identities={"customer_id": cid, "loyalty_card": f"L{n:08d}"}
                if store
                else {"customer_id": cid},
            )
    if rng.random() < 0.15:
        t += timedelta(hours=rng.uniform(1, 24))
        yield ev(
            "support_ticket_opened",
            "support",
            support={"ticket_id": f"tk-{cid}", "topic": "delivery", "severity": "normal"},
        )
        t += timedelta(hours=rng.uniform(1, 48))
        yield ev("support_ticket_resolved", "support", support={"ticket_id": f"tk-{cid}"})
    if rng.random() < 0.3:
        t += timedelta(days=rng.uniform(1, 10))
        yield ev(
            "loyalty_tier_changed",
            "loyalty",
            loyalty={"tier": rng.choice(["silver", "gold"]), "points": rng.randint(100, 5000)},
        )


def _returning_visits(
    seed: int, n: int, start: datetime
) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """Later browsing by customer ``n``: how many visits follows a heavy tail (Pareto), as on a
    real shop where a few customers come back daily and most never do."""
    rng = random.Random(seed * 1_000_003 + n)
    cid = f"cust-{n:05d}"
    visits = min(40, int(rng.paretovariate(1.3)) - 1)
    for v in range(visits):
        t = start + timedelta(days=rng.uniform(1, 13))
        for i in range(rng.randint(1, 4)):
            pid, cat, name, price = _PRODUCTS[rng.randrange(len(_PRODUCTS))]
            at = t + timedelta(seconds=30 * i)
            yield (
                at,
                {
                    "event_id": f"{cid}-v{v}-{i}",
                    "event_time": at,
                    "channel": rng.choice(["web", "app"]),
                    "event_type": "product_view",
                    "identities": {"customer_id": cid},
                    "attributes": {},
                    "product": {
                        "product_id": pid,
                        "category": cat,
                        "name": name,
                        "price": _money(price),
                    },
                },
            )


def demo_events(
    customers: int = 200,
    seed: int = 7,
    start: datetime | None = None,
    returning_visits: bool = False,
) -> list[dict[str, Any]]:
    """Events from ``customers`` customers, interleaved in event-time order.

    ``returning_visits`` adds later browsing with skewed activity per customer (a heavy tail:
    most customers never come back, a few browse almost daily) - what `tutti bench` uses.
    """
    rng = random.Random(seed)
    start = start or datetime.now(UTC)
    events = [e for n in range(customers) for e in _story(rng, n, start)]
    if returning_visits:
        events += [e for n in range(customers) for e in _returning_visits(seed, n, start)]
    events.sort(key=lambda te: (te[0], te[1]["event_id"]))
    return [e for _, e in events]


def event_key(event: dict[str, Any]) -> bytes:
    """Key as an upstream system would: its customer id, else the identifier it has."""
    ids = event.get("identities") or {}
    for name in ("customer_id", "anonymous_id", "device_id", "loyalty_card", "email", "phone"):
        if ids.get(name):
            return str(ids[name]).encode()
    product = event.get("product") or {}
    return str(product.get("product_id", event["event_id"])).encode()


def produce_events(
    settings: Settings,
    events: list[dict[str, Any]],
    rate: float | None = None,
    codec: AvroCodec | None = None,
    on_sent: Callable[[dict[str, Any]], None] | None = None,
    retime: bool = False,
) -> int:
    """Write events to their channel topics in the configured framing. Returns the count.

    ``rate`` limits events per second (None: as fast as possible); ``retime`` stamps each event
    with the current time (for live demo traffic).
    """
    codec = codec or AvroCodec.from_settings(settings.kafka)
    topics = Topics(settings.topics)
    p = producer(settings.kafka)
    sent = 0
    started = time.monotonic()
    for event in events:
        if retime:
            event = {**event, "event_time": datetime.now(UTC)}
        topic = topics.events(event["channel"])
        p.produce(topic, key=event_key(event), value=codec.encode("CustomerEvent", event, topic))
        p.poll(0)
        sent += 1
        if on_sent:
            on_sent(event)
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    p.flush(30)
    return sent
