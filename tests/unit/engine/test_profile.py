"""Profile updates for the whole event vocabulary, idempotence and ordering."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orchestrator.engine import CustomerState, Rules, decide
from orchestrator.engine.profile import lifecycle_stage
from orchestrator.vocabulary import EVENT_TYPES

from .factories import T0, at, event, money, order, product

RULES = Rules()


def apply(*events: Any, state: CustomerState | None = None) -> CustomerState:
    for ev in events:
        d = decide(state, ev, ev.event_time, RULES)
        assert d.state is not None
        state = d.state
    assert state is not None
    return state


# (events, check on the resulting state) — one row per event type of the vocabulary.
CASES: dict[str, tuple[list[Any], Any]] = {
    "signup": (
        [
            event(
                "signup",
                identities={"email": "a@b.c"},
                preferences={"time_zone": "Europe/Rome", "language": "it-IT"},
            )
        ],
        lambda s: s.identities["email"] == ["a@b.c"] and s.preferences.language == "it-IT",
    ),
    "login": (
        [event("login", identities={"anonymous_id": "anon-1"})],
        lambda s: s.identities["anonymous_id"] == ["anon-1"],
    ),
    "identify": (
        [event("identify", identities={"phone": "+33611111111"})],
        lambda s: s.identities["phone"] == ["+33611111111"],
    ),
    "profile_updated": (
        [
            event(
                "profile_updated",
                preferences={
                    "quiet_hours_start": "22:00",
                    "quiet_hours_end": "07:00",
                    "preferred_channel": "sms",
                },
            )
        ],
        lambda s: (
            (s.preferences.quiet_hours_start, s.preferences.preferred_channel) == ("22:00", "sms")
        ),
    ),
    "consent_changed": (
        [
            event(
                "consent_changed",
                consent={
                    "channel": "sms",
                    "purpose": "marketing",
                    "status": "opted_in",
                    "source": "store form",
                },
            )
        ],
        lambda s: (
            s.consent["sms:marketing"].status == "opted_in"
            and s.consent["sms:marketing"].source == "store form"
        ),
    ),
    "page_view": ([event("page_view")], lambda s: s.last_activity_at == T0),
    "product_view": (
        [event("product_view", product=product("p9"))],
        lambda s: [v.product_id for v in s.recent_views] == ["p9"],
    ),
    "category_view": (
        [event("category_view", product={"product_id": "", "category": "shoes"})],
        lambda s: s.recent_views == [] and s.recent_categories == ["shoes"],
    ),
    "search": (
        [event("search", attributes={"query": "red shoes"})],
        lambda s: s.last_search == "red shoes",
    ),
    "wishlist_add": (
        [event("wishlist_add", product=product("p2"))],
        lambda s: s.wishlist == ["p2"],
    ),
    "app_install": ([event("app_install", channel="app")], lambda s: s.app_installed),
    "app_open": ([event("app_open", channel="app")], lambda s: s.app_installed),
    "add_to_cart": (
        [event("add_to_cart", product=product("p1", quantity=2))],
        lambda s: s.cart["p1"].quantity == 2 and s.cart["p1"].unit_price_minor == 5000,
    ),
    "remove_from_cart": (
        [
            event("add_to_cart", product=product("p1")),
            event("remove_from_cart", at(minutes=1), product=product("p1")),
        ],
        lambda s: s.cart == {},
    ),
    "checkout_started": (
        [event("checkout_started")],
        lambda s: s.commerce.checkout_started_at == T0,
    ),
    "order_placed": (
        [
            event("add_to_cart", product=product("p1")),
            event(
                "order_placed",
                at(minutes=30),
                channel="store",
                order=order("o1", 7000, store_id="s-12"),
            ),
        ],
        lambda s: (
            s.commerce.orders_store == 1
            and s.commerce.revenue_minor == 7000
            and s.cart == {}
            and s.lifecycle_stage == "active"
        ),
    ),
    "order_returned": (
        [event("order_returned", order=order("o1", 2000))],
        lambda s: (s.commerce.returns, s.commerce.returned_minor) == (1, 2000),
    ),
    "store_visit": ([event("store_visit", channel="store")], lambda s: s.last_store_visit_at == T0),
    "price_drop": (
        [
            event(
                "price_drop",
                channel="catalog",
                product=product("p1", 4000, previous_price=money(5000)),
            )
        ],
        lambda s: s.last_activity_at is None,  # happened to the product, not done by the customer
    ),
    "back_in_stock": (
        [event("back_in_stock", channel="catalog", product=product())],
        lambda s: s.last_activity_at is None,
    ),
    "message_delivered": (
        [event("message_delivered", channel="email", message={})],
        lambda s: s.engagement["email"].delivered == 1,
    ),
    "message_opened": (
        [event("message_opened", channel="push", message={})],
        lambda s: (
            s.engagement["push"].opens == 1 and s.engagement["push"].hours[9] == 1
        ),  # 9:00 UTC
    ),
    "message_clicked": (
        [event("message_clicked", channel="email", message={})],
        lambda s: s.engagement["email"].clicks == 1,
    ),
    # Of nothing in place: counted as an event, in no cap (tests/unit/engine/test_placements.py).
    "message_impression": (
        [event("message_impression", channel="web", message={"action_id": "a-none"})],
        lambda s: s.event_counts == {"message_impression": 1} and not s.send_log,
    ),
    "message_bounced": (
        [event("message_bounced", channel="email", message={}, attributes={"bounce": "hard"})],
        lambda s: s.undeliverable == ["email"],
    ),
    "message_replied": (
        [event("message_replied", channel="sms", message={"reply_text": " stop "})],
        lambda s: (
            s.consent["sms:marketing"].status == "opted_out"
            and s.consent["sms:transactional"].status == "opted_out"
        ),
    ),
    "unsubscribed": (
        [event("unsubscribed", channel="email", message={"action_id": "a1"})],
        lambda s: (
            s.consent["email:marketing"].status == "opted_out"
            and "email:transactional" not in s.consent
        ),
    ),
    "support_ticket_opened": (
        [event("support_ticket_opened", support={"ticket_id": "t1"})],
        lambda s: list(s.open_tickets) == ["t1"],
    ),
    "support_ticket_resolved": (
        [
            event("support_ticket_opened", support={"ticket_id": "t1"}),
            event("support_ticket_resolved", at(hours=2), support={"ticket_id": "t1"}),
        ],
        lambda s: s.open_tickets == {} and s.last_ticket_resolved_at == at(hours=2),
    ),
    "loyalty_enrolled": (
        [event("loyalty_enrolled", loyalty={"tier": "silver", "points": 100})],
        lambda s: (s.loyalty.tier, s.loyalty.points, s.loyalty.enrolled_at) == ("silver", 100, T0),
    ),
    "loyalty_tier_changed": (
        [
            event("loyalty_enrolled", loyalty={"tier": "silver"}),
            event("loyalty_tier_changed", at(days=1), loyalty={"tier": "gold"}),
        ],
        lambda s: (s.loyalty.tier, s.loyalty.previous_tier) == ("gold", "silver"),
    ),
    "loyalty_points_changed": (
        [
            event("loyalty_points_changed", loyalty={"points_delta": 40}),
            event("loyalty_points_changed", at(minutes=1), loyalty={"points_delta": -15}),
        ],
        lambda s: s.loyalty.points == 25,
    ),
}


def test_every_event_type_of_the_vocabulary_has_a_case() -> None:
    assert set(CASES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(CASES))
def test_event_updates_the_profile(event_type: str) -> None:
    events, check = CASES[event_type]
    state = apply(*events)
    assert check(state), state


@pytest.mark.parametrize("event_type", sorted(CASES))
def test_a_redelivered_event_changes_nothing(event_type: str) -> None:
    events, _ = CASES[event_type]
    once = apply(*events)
    twice = apply(*events, state=once)
    assert twice == once


def test_custom_events_are_counted() -> None:
    state = apply(event("custom.quiz_completed"))
    assert state.event_counts["custom.quiz_completed"] == 1


def test_an_older_consent_change_does_not_override_a_newer_one() -> None:
    newer = event(
        "consent_changed",
        at(hours=2),
        consent={"channel": "sms", "purpose": "marketing", "status": "opted_out"},
    )
    older = event(
        "consent_changed",
        at(hours=1),
        consent={"channel": "sms", "purpose": "marketing", "status": "opted_in"},
    )
    state = apply(newer, older)
    assert state.consent["sms:marketing"].status == "opted_out"


def test_a_late_ticket_opened_does_not_reopen_a_resolved_ticket() -> None:
    resolved = event("support_ticket_resolved", at(hours=3), support={"ticket_id": "t1"})
    opened = event("support_ticket_opened", at(hours=1), support={"ticket_id": "t1"})
    assert apply(resolved, opened).open_tickets == {}


def test_the_same_order_from_two_systems_counts_once() -> None:
    web = event("order_placed", order=order("o7", 3000))
    erp = event("order_placed", at(minutes=5), channel="commerce", order=order("o7", 3000))
    state = apply(web, erp)
    assert (state.commerce.orders, state.commerce.revenue_minor) == (1, 3000)


@pytest.mark.parametrize(
    ("orders", "idle_days", "stage"),
    [(0, 1, "new"), (1, 5, "active"), (1, 45, "at_risk"), (2, 120, "lapsed")],
)
def test_lifecycle_stage(orders: int, idle_days: int, stage: str) -> None:
    state = CustomerState("c1")
    state.commerce.orders_online = orders
    state.last_activity_at = T0
    assert lifecycle_stage(state, T0 + timedelta(days=idle_days)) == stage


def test_recent_views_are_bounded() -> None:
    state = apply(
        *[event("product_view", at(minutes=i), product=product(f"p{i}")) for i in range(50)]
    )
    assert len(state.recent_views) == 30
    assert state.recent_views[-1].product_id == "p49"
