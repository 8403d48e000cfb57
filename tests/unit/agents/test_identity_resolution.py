"""Identity resolution decisions, table-driven (the agent only applies them)."""

from __future__ import annotations

import pytest

from orchestrator.identity import Resolution, for_survivor, merge_pair, resolve_event, resolve_link
from tables.aliases import AliasTable


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, Resolution("anon:anonymous_id:a-1", store=True)),
        ("anon:anonymous_id:a-1", Resolution("anon:anonymous_id:a-1")),
        ("c-1", Resolution("c-1")),
    ],
)
def test_events_go_to_the_identifiers_customer_or_a_stable_provisional_id(
    current: str | None, expected: Resolution
) -> None:
    assert resolve_event("anonymous_id:a-1", current) == expected


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, Resolution("c-1", store=True)),
        ("c-1", Resolution("c-1")),  # already linked: no write, no merge
        (
            "anon:anonymous_id:a-1",
            Resolution("c-1", store=True, merge_from="anon:anonymous_id:a-1"),
        ),
        ("c-2", Resolution("c-1", store=True)),  # a device shared by two known customers
    ],
)
def test_links_record_the_customer_and_merge_provisional_profiles(
    current: str | None, expected: Resolution
) -> None:
    assert resolve_link("anonymous_id:a-1", "c-1", current) == expected


@pytest.mark.parametrize("identifier", ["email:5d41402abc4b2a76", "loyalty_card:L-77", "phone:9f"])
def test_two_known_customers_sharing_a_personal_identifier_merge_into_the_smaller_id(
    identifier: str,
) -> None:
    # Whichever of the two links comes last, the same profile survives.
    assert resolve_link(identifier, "c-2", "c-1") == Resolution("c-1", merge_from="c-2")
    assert resolve_link(identifier, "c-1", "c-2") == Resolution("c-1", store=True, merge_from="c-2")


@pytest.mark.parametrize("identifier", ["device_id:d-1", "anonymous_id:a-1", "push_token:0f3a"])
def test_shared_devices_never_merge_known_customers(identifier: str) -> None:
    assert resolve_link(identifier, "c-2", "c-1") == Resolution("c-2", store=True)


def test_merge_on_setting_limits_which_identifiers_merge() -> None:
    only_cards = frozenset({"loyalty_card"})
    assert resolve_link("email:5d41", "c-2", "c-1", only_cards) == Resolution("c-2", store=True)
    assert resolve_link("loyalty_card:L-1", "c-2", "c-1", only_cards).merge_from == "c-2"
    assert resolve_link("email:5d41", "c-2", "c-1", frozenset()).merge_from is None


def test_a_provisional_profile_always_merges_into_the_customer_whatever_the_ids() -> None:
    # "anon:..." sorts before "c-...": the known customer must still survive.
    assert merge_pair("anon:anonymous_id:a", "c-1") == ("c-1", "anon:anonymous_id:a")
    assert merge_pair("c-1", "anon:anonymous_id:a") == ("c-1", "anon:anonymous_id:a")
    assert merge_pair("c-9", "c-10") == ("c-10", "c-9")


def test_an_event_for_an_absorbed_id_is_rewritten_for_the_survivor() -> None:
    record = {"event_id": "e-1", "event_type": "login", "identities": {"customer_id": "c-2"}}
    out = for_survivor(record, "c-2", "c-1")
    assert out["identities"]["customer_id"] == "c-1"
    assert out["event_id"] == "e-1"
    assert record["identities"]["customer_id"] == "c-2"  # the input is not changed


def test_a_catalog_event_fanned_out_to_an_absorbed_id_takes_the_survivors_derived_id() -> None:
    # Both ids may still be in a product's interest index: the survivor must hear it once.
    record = {
        "event_id": "drop-7:c-2",
        "event_type": "price_drop",
        "identities": {"customer_id": "c-2"},
    }
    assert for_survivor(record, "c-2", "c-1")["event_id"] == "drop-7:c-1"


def test_aliases_write_once_and_forget_only_for_their_survivor() -> None:
    store: dict[bytes, bytes] = {}
    aliases = AliasTable(store)
    aliases.record("c-2", "c-1")
    assert store == {b"c-2": b"c-1"}
    assert aliases.survivor(b"c-2") == "c-1" and aliases.survivor("c-3") is None
    assert not aliases.forget("c-2", "c-9")  # an erasure of someone else
    assert aliases.forget("c-2", "c-1") and store == {}
