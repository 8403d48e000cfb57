"""Identity resolution decisions, table-driven (the agent only applies them)."""

from __future__ import annotations

import pytest

from agents.identity import Resolution, resolve_event, resolve_link


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
        ("c-2", Resolution("c-1", store=True)),  # two real customers: latest wins, no merge
    ],
)
def test_links_record_the_customer_and_merge_provisional_profiles(
    current: str | None, expected: Resolution
) -> None:
    assert resolve_link("anonymous_id:a-1", "c-1", current) == expected
