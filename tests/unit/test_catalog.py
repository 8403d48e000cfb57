"""Catalog fan-out without Kafka: the interest index, catalog validation, derived events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.catalog import (
    Interest,
    InterestIndex,
    InterestLimits,
    decode_interest,
    encode_interest,
    fan_out,
    interests_from_event,
    interests_from_state,
    normalise_catalog,
    products_of,
)
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import CartLine, CustomerState, ProductView
from orchestrator.errors import SerializationError, ValidationError

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
LIMITS = InterestLimits(max_customers=3, window=timedelta(days=30), refresh=timedelta(hours=1))


def at(hours_ago: float) -> datetime:
    return NOW - timedelta(hours=hours_ago)


def catalog_record(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "pd-1",
        "event_time": NOW,
        "channel": "catalog",
        "event_type": "price_drop",
        "identities": {},
        "product": {
            "product_id": " p-1 ",
            "name": "Trail Runner",
            "price": {"amount_minor": 8000, "currency": "EUR"},
            "previous_price": {"amount_minor": 10000, "currency": "EUR"},
        },
        "attributes": {},
        **overrides,
    }


def customer_event(event_type: str, product_id: str | None = "p-1") -> CustomerEvent:
    return CustomerEvent.from_dict(
        {
            "event_id": "e-1",
            "event_time": at(2),
            "channel": "web",
            "event_type": event_type,
            "identities": {"customer_id": "c-1"},
            "product": {"product_id": product_id} if product_id else None,
        }
    )


@pytest.mark.parametrize(
    ("event_type", "customer", "expected"),
    [
        ("product_view", "c-1", 1),
        ("wishlist_add", "c-1", 1),
        ("add_to_cart", "c-1", 1),
        ("remove_from_cart", "c-1", 0),
        ("page_view", "c-1", 0),
        ("product_view", "anon:anonymous_id:a-1", 0),  # provisional: follows the merge instead
    ],
)
def test_which_events_show_interest(event_type: str, customer: str, expected: int) -> None:
    found = interests_from_event(customer_event(event_type), customer)
    assert len(found) == expected
    if expected:
        assert found == [Interest("p-1", customer, at(2))]


def test_an_absorbed_profile_carries_its_interest_to_the_survivor() -> None:
    state = CustomerState(
        customer_id="anon:anonymous_id:a-1",
        recent_views=[ProductView("p-1", at(5)), ProductView("p-1", at(3))],
        cart={"p-2": CartLine(quantity=1, added_at=at(4))},
        wishlist=["p-3"],
        last_event_at=at(1),
    )
    assert interests_from_state(state, "c-1", NOW) == [
        Interest("p-1", "c-1", at(3)),
        Interest("p-2", "c-1", at(4)),
        Interest("p-3", "c-1", at(1)),
    ]
    assert interests_from_state(state, "anon:x", NOW) == []


def test_interest_records_round_trip_and_reject_garbage() -> None:
    interest = Interest("p-1", "c-1", at(2))
    assert decode_interest("p-1", encode_interest(interest)) == interest
    with pytest.raises(SerializationError):
        decode_interest("p-1", b"not json")


def test_the_index_keeps_the_most_recent_customers_within_the_window() -> None:
    index = InterestIndex()
    assert index.record(Interest("p", "c-1", at(10)), NOW, LIMITS)
    assert index.record(Interest("p", "c-2", at(5)), NOW, LIMITS)
    assert index.record(Interest("p", "c-3", at(1)), NOW, LIMITS)
    assert index.customers(NOW, LIMITS) == ["c-3", "c-2", "c-1"]
    # A fourth customer pushes out the oldest one.
    assert index.record(Interest("p", "c-4", at(0)), NOW, LIMITS)
    assert index.customers(NOW, LIMITS) == ["c-4", "c-3", "c-2"]
    # Older than everyone kept: no change, nothing to write.
    assert not index.record(Interest("p", "c-5", at(20)), NOW, LIMITS)
    # Interest outside the window is never recorded; later, old entries age out.
    assert not index.record(Interest("p", "c-6", at(24 * 31)), NOW, LIMITS)
    later = NOW + timedelta(days=30) - timedelta(hours=2)
    assert index.customers(later, LIMITS) == ["c-4", "c-3"]
    assert index.record(Interest("p", "c-4", later), later, LIMITS)
    assert len(index) == 2


def test_expired_interest_is_dropped_with_the_next_change_and_never_fanned_out() -> None:
    index = InterestIndex()
    assert index.record(Interest("p", "c-old", at(2)), NOW, LIMITS)
    assert index.record(Interest("p", "c-1", at(1)), NOW, LIMITS)
    later = NOW + timedelta(days=30) - timedelta(minutes=90)  # c-old out of the window
    # A repeat within the refresh period writes nothing, even with an expired entry inside...
    assert not index.record(
        Interest("p", "c-1", later - timedelta(days=30) + timedelta(hours=1)), later, LIMITS
    )
    # ...and the expired customer is never fanned out to.
    assert index.customers(later, LIMITS) == ["c-1"]
    # The next change writes the index without it.
    assert index.record(Interest("p", "c-2", later), later, LIMITS)
    assert set(InterestIndex.decode(index.encode()).entries) == {"c-1", "c-2"}


def test_repeated_interest_is_written_once_per_refresh_period_and_is_idempotent() -> None:
    index = InterestIndex()
    assert index.record(Interest("p", "c-1", at(3)), NOW, LIMITS)
    encoded = index.encode()
    assert not index.record(Interest("p", "c-1", at(3)), NOW, LIMITS)  # redelivery
    assert not index.record(Interest("p", "c-1", at(2.5)), NOW, LIMITS)  # within the hour
    assert not index.record(Interest("p", "c-1", at(5)), NOW, LIMITS)  # older
    assert index.encode() == encoded
    assert index.record(Interest("p", "c-1", at(1)), NOW, LIMITS)
    assert InterestIndex.decode(index.encode()).entries == index.entries


@pytest.mark.parametrize("data", [b"\x09{}", b"\x01not json", b"\x01[1,2]"])
def test_a_corrupt_or_unknown_index_says_so(data: bytes) -> None:
    with pytest.raises(SerializationError):
        InterestIndex.decode(data)


def test_catalog_events_are_validated_without_identities() -> None:
    valid = normalise_catalog(catalog_record(), NOW)
    assert valid["product"]["product_id"] == "p-1"
    assert valid["identities"] == {}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_type": "product_view"}, "is not one of back_in_stock, price_drop"),
        ({"product": None}, "price_drop needs product.product_id"),
        ({"product": {"product_id": " "}}, "price_drop needs product.product_id"),
        ({"channel": "web"}, "does not match topic channel catalog"),
        ({"event_id": ""}, "event_id is missing"),
        ({"event_time": NOW + timedelta(hours=2)}, "in the future"),
    ],
)
def test_bad_catalog_events_say_why(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        normalise_catalog(catalog_record(**overrides), NOW)


def test_fan_out_derives_one_deterministic_event_per_customer() -> None:
    valid = normalise_catalog(catalog_record(), NOW)
    events = fan_out(valid, ["c-2", "c-1"])
    assert [e["event_id"] for e in events] == ["pd-1:c-2", "pd-1:c-1"]
    assert fan_out(valid, ["c-2", "c-1"]) == events
    for event in events:
        parsed = CustomerEvent.from_dict(event)
        assert parsed.event_type == "price_drop"
        assert parsed.channel == "catalog"
        assert parsed.product is not None and parsed.product.product_id == "p-1"
        assert parsed.identities.customer_id == event["event_id"].split(":")[1]


def test_an_erased_customer_is_forgotten_by_every_product_of_their_profile() -> None:
    state = CustomerState(
        customer_id="c-1",
        recent_views=[ProductView("p-1", at(5)), ProductView("p-2", at(3))],
        cart={"p-3": CartLine(quantity=1, added_at=at(4))},
        wishlist=["p-1", "p-4"],
    )
    assert products_of(state) == ["p-1", "p-2", "p-3", "p-4"]
    index = InterestIndex()
    index.record(Interest("p-1", "c-1", at(5)), NOW, LIMITS)
    index.record(Interest("p-1", "c-2", at(5)), NOW, LIMITS)
    assert index.forget("c-1")
    assert not index.forget("c-1")  # redelivered: nothing to write
    assert index.customers(NOW, LIMITS) == ["c-2"]


def test_a_full_index_drops_the_oldest_and_of_equally_old_the_greatest_id() -> None:
    from orchestrator.catalog import Interest, InterestIndex

    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    old = int((now - timedelta(days=2)).timestamp())
    index = InterestIndex({"c-a": old, "c-c": old, "c-b": int(now.timestamp()) - 60})
    assert index.record(Interest("p", "c-new", now), now, LIMITS)
    assert sorted(index.entries) == ["c-a", "c-b", "c-new"]  # c-c: oldest, greatest id
    expired = int((now - timedelta(days=31)).timestamp())
    index = InterestIndex({"c-x": expired, "c-y": old})
    assert index.record(Interest("p", "c-z", now), now, LIMITS)
    assert sorted(index.entries) == ["c-y", "c-z"]  # the expired entry went with the change


def _reference_record(
    entries: dict[str, int], customer: str, at: int, horizon: int, limits: Any, refresh: float
) -> bool:
    """InterestIndex.record as first written: a full scan for expired entries on every record."""
    if at < horizon:
        return False
    current = entries.get(customer)
    if current is not None and at - current < refresh:
        return False
    expired = [c for c, t in entries.items() if t < horizon]
    for c in expired:
        del entries[c]
    entries[customer] = at
    dropped_self = False
    while len(entries) > limits.max_customers:
        oldest = min(entries.values())
        worst = max(c for c, t in entries.items() if t == oldest)
        del entries[worst]
        dropped_self = dropped_self or worst == customer
    if dropped_self and current is None:
        return bool(expired)
    return True


def test_interest_index_skips_the_scan_but_keeps_and_drops_exactly_what_a_full_scan_would() -> None:
    """The index keeps a lower bound of its times instead of scanning on every record; over a
    long random run (time moving on, repeats, a full index, erasures) it must keep exactly the
    entries - and answer exactly the changes - of the scan-every-time version."""
    import random

    limits = InterestLimits(max_customers=40, window=timedelta(hours=6))
    rng = random.Random(7)
    index = InterestIndex()
    reference: dict[str, int] = {}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for step in range(6000):
        now += timedelta(minutes=rng.choice([0, 1, 5, 30]))
        if step % 500 == 499:
            index = InterestIndex.decode(index.encode())  # a reload starts from a fresh bound
        if rng.random() < 0.05 and reference:
            victim = rng.choice(sorted(reference))
            assert index.forget(victim) == (reference.pop(victim, None) is not None)
            continue
        customer = f"c{rng.randrange(120)}"
        at = now - timedelta(minutes=rng.choice([0, 0, 10, 400]))
        interest = Interest("p1", customer, at)
        horizon = int((now - limits.window).timestamp())
        expected = _reference_record(
            reference,
            customer,
            int(at.timestamp()),
            horizon,
            limits,
            limits.refresh.total_seconds(),
        )
        assert index.record(interest, now, limits) == expected, step
        assert index.entries == reference, step


def test_the_eviction_order_stays_bounded_when_the_index_no_longer_overflows() -> None:
    limits = InterestLimits(max_customers=50, window=timedelta(days=30))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    index = InterestIndex()
    for n in range(60):  # overflows once: the eviction order is built
        index.record(Interest("p", f"c{n:03d}", now + timedelta(seconds=n)), now, limits)
    for n in range(5000):  # the same customers again and again, an hour apart: no overflow
        later = now + timedelta(hours=2 + n)
        customer = f"c{10 + n % 50:03d}"
        assert index.record(Interest("p", customer, later), later, limits)
    assert len(index) == 50
    assert len(index._eviction or []) <= 2 * len(index) + 65
