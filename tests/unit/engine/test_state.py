"""CustomerState: tolerant serialization, wake-up helpers, profile merge."""

from __future__ import annotations

import json
from datetime import timedelta

from orchestrator.engine import (
    CustomerState,
    Enrollment,
    merge_states,
    next_wakeup_at,
    pending_wakeups,
)

from .factories import T0, Customer, at, event, library, product


def busy_state() -> CustomerState:
    c = Customer(library())
    c.send(event("signup", identities={"email": "x@y.z", "push_token": "t"}))
    c.send(event("product_view", at(minutes=1), product=product("p1")))
    c.send(event("add_to_cart", at(minutes=2), product=product("p1")))
    assert c.state is not None
    return c.state


def test_round_trip_through_json() -> None:
    state = busy_state()
    text = json.dumps(state.to_dict())
    assert CustomerState.from_dict(json.loads(text)) == state


def test_an_older_smaller_record_loads_with_defaults() -> None:
    old = {"customer_id": "c9", "schema_version": 0, "cart": {}, "retired_field": 1}
    state = CustomerState.from_dict(old)
    assert state.customer_id == "c9" and state.enrollments == [] and state.commerce.orders == 0


def test_next_wakeup_is_the_earliest_due_time() -> None:
    state = busy_state()
    assert next_wakeup_at(state) == min(w.due_at for w in pending_wakeups(state))
    assert next_wakeup_at(None) is None
    assert next_wakeup_at(CustomerState("empty")) is None


def test_merge_keeps_history_and_does_not_duplicate_enrolments() -> None:
    survivor = busy_state()
    anon = CustomerState("anonymous_id:a1", identities={"anonymous_id": ["a1"]})
    anon.enrollments.append(Enrollment("e-anon", "cart_abandonment", 1, T0, step_id="wait_1h"))
    anon.enrollments.append(Enrollment("e-browse", "browse_abandonment", 1, T0, step_id="x"))
    anon.recent_event_ids = ["anon-ev-1"]
    merged = merge_states(survivor, anon)
    journeys = [e.journey_id for e in merged.enrollments]
    assert journeys.count("cart_abandonment") == 1  # the survivor's one, not the anonymous one
    assert "browse_abandonment" in journeys
    assert merged.identities["anonymous_id"] == ["a1"]
    assert "anon-ev-1" in merged.recent_event_ids


def test_merge_is_idempotent_and_pure() -> None:
    survivor = busy_state()
    anon = CustomerState("anonymous_id:a1", identities={"anonymous_id": ["a1"]})
    anon.commerce.orders_online = 1
    anon.commerce.order_ids = ["o1"]
    anon.commerce.revenue_minor = 1000
    before = survivor.to_dict()
    once = merge_states(survivor, anon)
    twice = merge_states(once, anon)
    assert twice == once
    assert once.commerce.orders == 1 and once.commerce.revenue_minor == 1000
    assert survivor.to_dict() == before


def test_newest_consent_wins_on_merge() -> None:
    a = CustomerState("c1")
    b = CustomerState("anonymous_id:a1")
    from orchestrator.engine.state import ConsentRecord

    a.consent["sms:marketing"] = ConsentRecord("opted_in", T0)
    b.consent["sms:marketing"] = ConsentRecord("opted_out", T0 + timedelta(hours=1))
    assert merge_states(a, b).consent["sms:marketing"].status == "opted_out"
