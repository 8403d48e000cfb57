"""The identity rule (orchestrator.identity) as the worker's tables see it: IdentityBook applies
links and merges in the order the agents do, and the simulator keys profiles with it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.engine import CustomerEvent, Rules, load_rules
from orchestrator.engine.signals import Identities
from orchestrator.engine.state import CustomerState
from orchestrator.identity import (
    IdentityBook,
    Merge,
    follow,
    identifier_keys,
    links_of,
    redirect_merge,
)
from orchestrator.simulator import SimulationResult, read_inputs, simulate

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)


def key(**ids: str) -> str:
    return identifier_keys(Identities(**ids))[0]


def test_an_anonymous_event_gets_a_stable_provisional_id_without_personal_data() -> None:
    book = IdentityBook()
    ev = CustomerEvent.from_dict(
        {
            "event_id": "e-1",
            "event_time": T0,
            "event_type": "page_view",
            "identities": {"email": "x@example.test", "phone": "+33600000001"},
        }
    )
    first = book.customer_of(ev)
    assert first == f"anon:{key(email='x@example.test')}" and "example" not in first
    assert book.customer_of(ev) == first  # the same identifier, the same profile
    # The most stable identifier routes: an anonymous id wins over an e-mail.
    both = CustomerEvent.from_dict(
        {**_dict(ev), "identities": {"anonymous_id": "a-1", "email": "x@example.test"}}
    )
    assert book.customer_of(both) == "anon:anonymous_id:a-1"


def _dict(ev: CustomerEvent) -> dict[str, Any]:
    return {"event_id": ev.event_id, "event_time": ev.event_time, "event_type": ev.event_type}


def test_a_login_merges_the_provisional_profile_into_the_customer() -> None:
    book = IdentityBook()
    book.identities["anonymous_id:a-1"] = "anon:anonymous_id:a-1"
    merges = book.link("anonymous_id:a-1", "c-1")
    assert merges == [Merge("anon:anonymous_id:a-1", "c-1")]
    assert book.identities["anonymous_id:a-1"] == "c-1"
    assert book.survivor("anon:anonymous_id:a-1") == "c-1"


@pytest.mark.parametrize("shared", [{"phone": "+33600000002"}, {"loyalty_card": "L-7"}])
def test_known_customers_sharing_a_merge_on_identifier_merge_whatever_the_order(
    shared: dict[str, str],
) -> None:
    identifier = key(**shared)
    for first, second in (("c-1", "c-2"), ("c-2", "c-1")):
        book = IdentityBook()
        assert book.link(identifier, first) == []
        assert book.link(identifier, second) == [Merge("c-2", "c-1")]
        assert book.identities[identifier] == "c-1" and book.aliases == {"c-2": "c-1"}
        assert book.link(identifier, second) == []  # a repeated link changes nothing


def test_without_the_kind_in_merge_on_the_latest_link_only_routes() -> None:
    book = IdentityBook(merge_kinds=frozenset({"loyalty_card"}))
    phone = key(phone="+33600000002")
    book.link(phone, "c-1")
    assert book.link(phone, "c-2") == []
    assert book.identities[phone] == "c-2" and book.aliases == {}


def test_a_merge_reaching_an_absorbed_id_is_redirected_to_its_survivor() -> None:
    book = IdentityBook()
    book.aliases.update({"c-3": "c-2"})
    # "c-3 and c-1 are one person": c-3 lives in c-2 now, so c-2 moves into c-1.
    assert book.merge("c-3", "c-1") == [Merge("c-2", "c-1")]
    assert follow(book.aliases, "c-3") == "c-1"
    assert redirect_merge("c-3", "c-2", "c-2") is None  # already one
    assert redirect_merge("c-3", "c-1", "c-2") == ("c-1", "c-2")


def test_an_alias_loop_is_reported_not_followed_forever() -> None:
    with pytest.raises(ValueError, match="alias chain"):
        follow({"a": "b", "b": "a"}, "a")


def test_erasure_forgets_the_links_and_aliases_of_the_customer_only() -> None:
    book = IdentityBook()
    email = key(email="x@example.test")
    book.identities.update({email: "c-1", "device_id:d-1": "c-9"})
    book.aliases.update({"c-2": "c-1", "c-5": "c-4"})
    state = CustomerState(
        customer_id="c-1",
        identities={"email": ["x@example.test"], "device_id": ["d-1"]},
        merged_from=["c-2"],
    )
    book.forget("c-1", state)
    assert book.identities == {"device_id:d-1": "c-9"}  # the device routes to someone else now
    assert book.aliases == {"c-5": "c-4"}


def test_links_are_carried_only_by_events_naming_their_customer() -> None:
    assert links_of(Identities(anonymous_id="a-1")) == []
    assert links_of(Identities(customer_id="c-1", anonymous_id="a-1")) == [
        ("anonymous_id:a-1", "c-1")
    ]


# -- the simulator keys and merges profiles by the same rule ------------------------------------


@pytest.fixture(scope="module")
def library() -> Rules:
    return load_rules(ROOT / "journeys")


def line(event_id: str, minutes: float, event_type: str, ids: dict[str, str], **more: Any) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "event_time": (T0 + timedelta(minutes=minutes)).isoformat(),
            "channel": more.pop("channel", "web"),
            "event_type": event_type,
            "identities": ids,
            **more,
        }
    )


CART = {"product_id": "p-1", "name": "P", "price": {"amount_minor": 5000, "currency": "EUR"}}


def one_person_two_ids(library: Rules, **options: Any) -> SimulationResult:
    """The web shop knows c-web by e-mail and phone, the app c-app by the same phone; the
    person fills a cart on the web, then on the app."""
    lines = [
        line(
            "w-1",
            0,
            "profile_updated",
            {"customer_id": "c-web", "email": "p@example.test", "phone": "+33600000003"},
            preferences={"time_zone": "Europe/Paris"},
        ),
        line("w-2", 1, "add_to_cart", {"customer_id": "c-web"}, product=CART),
        line(
            "a-1",
            2,
            "app_open",
            {"customer_id": "c-app", "phone": "+33600000003", "push_token": "tok-app"},
            channel="app",
        ),
        line("a-2", 3, "add_to_cart", {"customer_id": "c-app"}, channel="app", product=CART),
    ]
    return simulate(library, read_inputs(lines), T0 + timedelta(days=3), **options)


def test_known_customers_sharing_a_phone_are_one_profile_with_one_cart_reminder(
    library: Rules,
) -> None:
    r = one_person_two_ids(library)
    assert set(r.states) == {"c-app"}  # the smaller id survives
    assert r.states["c-app"].merged_from == ["c-web"]
    merged = [t for t in r.timeline if t.reason == "profiles_merged"]
    assert [(t.customer_id, t.detail) for t in merged] == [("c-app", "absorbed c-web")]
    carts = [t for t in r.actions() if t.journey_id == "cart_abandonment"]
    assert carts and {t.customer_id for t in carts} == {"c-app"}
    assert len(carts) == len({t.step_id for t in carts})  # one person, each reminder once


def test_with_merge_on_empty_the_two_accounts_stay_apart(library: Rules) -> None:
    r = one_person_two_ids(library, merge_kinds=frozenset())
    assert set(r.states) == {"c-web", "c-app"}
    assert not [t for t in r.timeline if t.reason == "profiles_merged"]
    carts = [t for t in r.actions() if t.journey_id == "cart_abandonment"]
    assert {t.customer_id for t in carts} == {"c-web", "c-app"}  # two reminders


def test_anonymous_history_then_login_and_a_later_event_for_the_absorbed_id(
    library: Rules,
) -> None:
    lines = [
        line("v-1", 0, "product_view", {"anonymous_id": "a-9"}, product=CART),
        line("v-2", 1, "add_to_cart", {"anonymous_id": "a-9"}, product=CART),
        line("l-1", 5, "login", {"customer_id": "c-9", "anonymous_id": "a-9"}),
        line("v-3", 6, "page_view", {"anonymous_id": "a-9"}),
    ]
    r = simulate(library, read_inputs(lines), T0 + timedelta(days=3))
    assert set(r.states) == {"c-9"}
    state = r.states["c-9"]
    assert state.merged_from == ["anon:anonymous_id:a-9"]
    assert list(state.cart) == ["p-1"]
    assert sum(state.event_counts.values()) == 4  # the device routes to the customer now
