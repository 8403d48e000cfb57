"""The worker as a real process: ingest every channel into one profile; bad records to the DLQ."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.demo import produce_events
from orchestrator.kafka import consumer, producer
from orchestrator.topics import Topics

from .conftest import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]

CID = "cust-it-1"


def ev(n: int, channel: str, event_type: str, **sections: Any) -> dict[str, Any]:
    return {
        "event_id": f"{CID}-{n}",
        "event_time": datetime.now(UTC) - timedelta(minutes=60 - n),
        "channel": channel,
        "event_type": event_type,
        "identities": sections.pop("identities", {"customer_id": CID}),
        "attributes": sections.pop("attributes", {}),
        **sections,
    }


def product(pid: str, price: int = 1000) -> dict[str, Any]:
    return {"product_id": pid, "name": pid, "price": {"amount_minor": price, "currency": "EUR"}}


def count(worker: WorkerProcess) -> int:
    """Events applied to the test customer's profile so far (0 before the first)."""
    profile = worker.customer(CID)
    return sum(profile["event_counts"].values()) if profile else 0


def read_dead_letters(
    settings: Settings, groups: set[str], expected: int, timeout: float = 30
) -> list[dict]:
    codec = AvroCodec.from_settings(settings.kafka)
    topic = Topics(settings.topics).dead_letters
    group = f"dlq-reader-{time.monotonic_ns()}"
    groups.add(group)
    c = consumer(settings.kafka, group)
    c.subscribe([topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(codec.decode(msg.value(), "DeadLetter", topic))
    finally:
        c.close()
    return out


def test_bad_records_go_to_the_dlq_with_their_reason_and_the_rest_is_processed(
    settings: Settings,
    worker_factory: Callable[..., WorkerProcess],
    kafka_groups: set[str],
) -> None:
    worker = worker_factory(settings)
    topics = Topics(settings.topics)
    codec = AvroCodec.from_settings(settings.kafka)
    produce_events(settings, [ev(1, "web", "page_view")])
    p = producer(settings.kafka)
    good = codec.encode("CustomerEvent", ev(2, "app", "app_open"), topics.events("app"))
    no_identity = codec.encode(
        "CustomerEvent", ev(3, "app", "app_open", identities={}), topics.events("app")
    )
    oversized = codec.encode(
        "CustomerEvent",
        ev(4, "support", "page_view", attributes={"blob": "x" * 70_000}),
        topics.events("support"),
    )
    bad = [
        (topics.events("web"), b"\x17 not avro at all", "unknown framing: first bytes 1720"),
        (topics.events("store"), b"\x00" + (987654).to_bytes(4, "big") + good[5:], "987654"),
        (topics.events("app"), no_identity, "identities: no identifier set"),
        (topics.events("support"), oversized, f"record is {len(oversized)} bytes (limit 65536)"),
    ]
    for topic, value, _ in bad:
        p.produce(topic, key=CID.encode(), value=value, headers=[("trace", b"t-1")])
    p.produce(topics.events("app"), key=CID.encode(), value=good)
    p.flush(10)
    produce_events(settings, [ev(5, "web", "page_view")])

    letters = read_dead_letters(settings, kafka_groups, expected=len(bad))
    by_topic = {d["source_topic"]: d for d in letters}
    assert len(letters) == len(bad), letters
    for topic, value, reason in bad:
        letter = by_topic[topic]
        assert reason in letter["reason"], letter["reason"]
        assert letter["value"] == value
        assert letter["key"] == CID.encode()
        assert letter["headers"] == [{"key": "trace", "value": b"t-1"}]
        assert letter["error_class"] in ("SerializationError", "ValidationError")
    profile = worker.wait_for(
        lambda: (c := worker.customer(CID)) and sum(c["event_counts"].values()) == 3 and c,
        what="the three valid events in the profile",
    )
    assert profile["event_counts"] == {"page_view": 2, "app_open": 1}


def test_one_profile_across_channels(
    settings: Settings, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory(settings)
    order = {
        "order_id": "o-1",
        "total": {"amount_minor": 4500, "currency": "EUR"},
        "store_id": "store-paris-01",
        "items": [{"product_id": "p-1", "quantity": 1}],
    }
    first = [
        ev(1, "web", "page_view"),
        ev(2, "web", "product_view", product=product("p-1")),
        ev(
            3,
            "app",
            "signup",
            identities={"customer_id": CID, "email": "Ann@Example.com", "phone": "+33612345678"},
        ),
        ev(
            4,
            "web",
            "consent_changed",
            consent={"channel": "email", "purpose": "marketing", "status": "opted_in"},
        ),
        ev(5, "app", "add_to_cart", product=product("p-1")),
        ev(6, "email", "message_opened", message={"provider_message_id": "m-1"}),
        ev(7, "store", "order_placed", order=order, identities={"customer_id": CID}),
        ev(8, "support", "support_ticket_opened", support={"ticket_id": "tk-1"}),
        ev(9, "support", "support_ticket_opened", support={"ticket_id": "tk-2"}),
        ev(10, "support", "support_ticket_resolved", support={"ticket_id": "tk-1"}),
    ]
    # Channels are separate topics, so their relative order is not guaranteed: the test
    # produces in phases where order matters (an order empties the cart).
    before_order, order_placed = first[:6] + first[7:], first[6]
    produce_events(settings, before_order)
    worker.wait_for(lambda: count(worker) == len(before_order), what="the first events")
    produce_events(settings, [order_placed])
    worker.wait_for(lambda: count(worker) == len(first), what="the order")
    second = [
        ev(11, "app", "add_to_cart", product=product("p-2", 2500)),
        ev(12, "web", "add_to_cart", product=product("p-3")),
        ev(13, "web", "remove_from_cart", product=product("p-3")),
    ]
    # Two events delivered twice; then one marker per topic, behind the duplicates.
    markers = [ev(14, "web", "page_view"), ev(15, "app", "app_open")]
    produce_events(settings, [*second, second[0], first[0], *markers])
    worker.wait_for(
        lambda: count(worker) == len(first) + len(second) + len(markers), what="the second batch"
    )
    profile = worker.customer(CID)
    assert profile is not None
    assert profile["customer_id"] == CID
    assert profile["event_counts"] == {
        "page_view": 2,
        "app_open": 1,
        "product_view": 1,
        "signup": 1,
        "consent_changed": 1,
        "add_to_cart": 3,
        "remove_from_cart": 1,
        "message_opened": 1,
        "order_placed": 1,
        "support_ticket_opened": 2,
        "support_ticket_resolved": 1,
    }
    assert profile["consent"]["email:marketing"]["status"] == "opted_in"
    assert list(profile["cart"]) == ["p-2"]
    assert profile["cart"]["p-2"]["quantity"] == 1
    assert list(profile["open_tickets"]) == ["tk-2"]
    assert profile["commerce"]["orders_store"] == 1
    assert profile["commerce"]["revenue_minor"] == 4500
    assert profile["engagement"]["email"]["opens"] == 1
    assert profile["lifecycle_stage"] == "active"
    # Contact points are masked, never shown raw.
    assert profile["identities"]["email"] == ["a***@example.com"]
    assert profile["identities"]["phone"] == ["+33*******78"]
    assert "recent_event_ids" not in profile
    # The view is protected by the bearer token.
    assert worker.get(f"/customers/{CID}", token=None)[0] == 401
    assert worker.get(f"/customers/{CID}", token="wrong")[0] == 401
    assert worker.get("/customers/nobody")[0] == 404
