"""The simulator fans catalog events out the way the worker does (orchestrator.catalog's rules):
to the customers who viewed, wish-listed or carted the product, under the worker's derived ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalog import InterestLimits, derived_event_id, fan_out, normalise_catalog
from orchestrator.codec import AvroCodec
from orchestrator.engine import Rules, load_rules
from orchestrator.errors import ValidationError
from orchestrator.ingest import wire_event
from orchestrator.simulator import (
    CatalogEntry,
    DeadLetterEntry,
    Input,
    SimulationResult,
    Simulator,
    parse_input,
    read_inputs,
    simulate,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def library() -> Rules:
    return load_rules(ROOT / "journeys")


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def ev(
    event_id: str, minutes: float, event_type: str, product_id: str | None = None, **ids: str
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "event_id": event_id,
        "event_time": at(minutes),
        "channel": "web",
        "event_type": event_type,
        "identities": ids,
    }
    if product_id:
        d["product"] = {"product_id": product_id, "name": product_id}
    return d


def contact(cid: str, minutes: float = 0) -> dict[str, Any]:
    return {
        **ev(f"{cid}-profile", minutes, "profile_updated", customer_id=cid),
        "identities": {"customer_id": cid, "email": f"{cid}@example.test"},
        "preferences": {"time_zone": "Europe/Paris"},
    }


def catalog(
    event_id: str, minutes: float, event_type: str, product_id: str, **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_time": at(minutes),
        "channel": "catalog",
        "event_type": event_type,
        "identities": {},
        "product": {
            "product_id": product_id,
            "name": product_id,
            "price": {"amount_minor": 8000, "currency": "EUR"},
            "previous_price": {"amount_minor": 10000, "currency": "EUR"},
        },
        **extra,
    }


def run(
    rules: Rules, lines: list[dict[str, Any]], limits: InterestLimits | None = None
) -> SimulationResult:
    inputs = read_inputs(json.dumps(d) for d in lines)
    if limits is None:
        return simulate(rules, inputs, T0 + timedelta(days=40))
    return simulate(rules, inputs, T0 + timedelta(days=40), limits)


def received(result: SimulationResult, event_type: str) -> dict[str, int]:
    """customer -> how many events of ``event_type`` their profile applied."""
    return {
        cid: state.event_counts[event_type]
        for cid, state in result.states.items()
        if state.event_counts.get(event_type)
    }


def test_a_price_drop_reaches_who_viewed_or_carted_the_product_and_nobody_else(
    library: Rules,
) -> None:
    r = run(
        library,
        [
            contact("c-view"),
            contact("c-cart"),
            contact("c-other"),
            contact("c-page"),
            ev("v1", 5, "product_view", "p-1", customer_id="c-view"),
            ev("a1", 6, "add_to_cart", "p-1", customer_id="c-cart"),
            ev("o1", 7, "product_view", "p-2", customer_id="c-other"),
            ev("g1", 8, "page_view", "p-1", customer_id="c-page"),
            ev("anon1", 9, "product_view", "p-1", anonymous_id="a-1"),
            catalog("pd-1", 60, "price_drop", "p-1"),
        ],
    )
    assert received(r, "price_drop") == {"c-view": 1, "c-cart": 1}
    assert "p-1" not in r.states  # no profile keyed by the product
    assert "anon:anonymous_id:a-1" in r.states  # the visitor exists, but is not indexed
    assert set(r.interest["p-1"].entries) == {"c-view", "c-cart"}
    # The journey decides on the customer's own state: both qualify (20 % off, interest shown).
    sends = {(t.customer_id, t.journey_id, t.template_id) for t in r.actions()}
    assert ("c-view", "price_drop", "price_drop") in sends
    assert ("c-cart", "price_drop", "price_drop") in sends
    assert not {s for s in sends if s[0] in ("c-other", "c-page")}


def test_fanned_out_events_carry_the_workers_derived_ids_and_fields(library: Rules) -> None:
    drop = catalog("pd-7", 60, "price_drop", "p-1", attributes={"campaign": "spring"})
    r = run(library, [contact("c-1"), ev("v1", 5, "product_view", "p-1", customer_id="c-1"), drop])
    state = r.states["c-1"]
    assert state.recent_event_ids[-1] == derived_event_id("pd-7", "c-1") == "pd-7:c-1"
    # The record the simulator fans out is the worker's: decoded from the wire,
    # normalise_catalog, then fan_out.
    entry = parse_input(drop)
    assert isinstance(entry, CatalogEntry)
    decoded, _ = wire_event(drop, AvroCodec(framing="single_object"))
    worker = fan_out(normalise_catalog(decoded, T0 + timedelta(minutes=60)), ["c-1"])
    assert list(fan_out(entry.record, ["c-1"])) == worker
    assert worker[0]["identities"] == {"customer_id": "c-1"}
    assert worker[0]["attributes"] == {"campaign": "spring"}
    assert worker[0]["channel"] == "catalog"


def test_a_catalog_event_ignores_the_customer_it_names(library: Rules) -> None:
    """Like events.catalog in the worker: identities are dropped, interest decides."""
    named = {**catalog("bis-1", 60, "back_in_stock", "p-1"), "identities": {"customer_id": "c-x"}}
    r = run(
        library,
        [
            contact("c-x"),
            contact("c-1"),
            ev("v", 5, "wishlist_add", "p-1", customer_id="c-1"),
            named,
        ],
    )
    assert received(r, "back_in_stock") == {"c-1": 1}


def test_a_redelivered_catalog_event_is_applied_once(library: Rules) -> None:
    drop = catalog("pd-1", 60, "price_drop", "p-1")
    r = run(
        library, [contact("c-1"), ev("v", 5, "product_view", "p-1", customer_id="c-1"), drop, drop]
    )
    assert received(r, "price_drop") == {"c-1": 1}
    assert len([t for t in r.actions() if t.journey_id == "price_drop"]) == 1


def test_interest_shown_anonymously_follows_the_visitor_into_their_profile(
    library: Rules,
) -> None:
    r = run(
        library,
        [
            ev("v", 5, "product_view", "p-1", anonymous_id="a-1"),
            {**contact("c-1", 10), "identities": {"customer_id": "c-1", "anonymous_id": "a-1"}},
            catalog("bis-1", 60, "back_in_stock", "p-1"),
        ],
    )
    assert "anonymous_id:a-1" not in r.states  # merged into c-1
    assert received(r, "back_in_stock") == {"c-1": 1}


def test_an_erased_customer_is_forgotten_and_gets_no_profile_back(library: Rules) -> None:
    erase = {"kind": "erase_customer", "target": "c-1", "customer_id": "c-1", "issued_at": at(30)}
    r = run(
        library,
        [
            contact("c-1"),
            contact("c-2"),
            ev("v1", 5, "product_view", "p-1", customer_id="c-1"),
            ev("v2", 6, "product_view", "p-1", customer_id="c-2"),
            erase,
            catalog("pd-1", 60, "price_drop", "p-1"),
        ],
    )
    assert "c-1" not in r.states
    assert set(r.interest["p-1"].entries) == {"c-2"}
    assert received(r, "price_drop") == {"c-2": 1}


def test_an_index_entry_that_outlived_its_customer_creates_no_profile(library: Rules) -> None:
    """The worker's guard: a fanned-out catalog event for an unknown customer is skipped."""
    inputs: list[Input] = read_inputs(
        json.dumps(d)
        for d in (
            contact("c-1"),
            ev("v1", 5, "product_view", "p-1", customer_id="c-1"),
            catalog("pd-1", 60, "price_drop", "p-1"),
        )
    )
    sim = Simulator(library)
    for item in inputs[:2]:
        sim.step(T0 + timedelta(minutes=5), item)
    sim.states.pop("c-1")  # gone, but the product's index still names them
    sim.step(T0 + timedelta(minutes=60), inputs[2])
    assert "c-1" not in sim.states


def test_interest_older_than_the_window_is_not_fanned_out_to(library: Rules) -> None:
    limits = InterestLimits(window=timedelta(days=1))
    lines = [
        contact("c-old"),
        contact("c-new"),
        ev("v1", 5, "product_view", "p-1", customer_id="c-old"),
        ev("v2", 60 * 30, "product_view", "p-1", customer_id="c-new"),
        catalog("bis-1", 60 * 31, "back_in_stock", "p-1"),
    ]
    assert received(run(library, lines, limits), "back_in_stock") == {"c-new": 1}
    assert received(run(library, lines), "back_in_stock") == {"c-old": 1, "c-new": 1}


def test_the_index_keeps_the_most_recent_customers(library: Rules) -> None:
    limits = InterestLimits(max_customers=2)
    lines = [contact(f"c-{n}") for n in range(3)]
    lines += [ev(f"v{n}", 5 + n, "product_view", "p-1", customer_id=f"c-{n}") for n in range(3)]
    lines.append(catalog("bis-1", 60, "back_in_stock", "p-1"))
    assert received(run(library, lines, limits), "back_in_stock") == {"c-1": 1, "c-2": 1}


def test_an_invalid_catalog_event_is_dead_lettered_with_its_line_as_the_worker_does() -> None:
    bad = {**catalog("pd-1", 60, "price_drop", "p-1"), "product": None}
    wrong = catalog("x-1", 60, "product_view", "p-1")
    first, second = read_inputs([json.dumps(bad), json.dumps(wrong)])
    assert first == DeadLetterEntry(
        T0 + timedelta(minutes=60),
        "price_drop needs product.product_id",
        "ValidationError",
        1,
        "pd-1",
        "catalog",
    )
    assert isinstance(second, DeadLetterEntry) and second.line == 2
    assert second.reason.startswith("catalog event_type 'product_view' is not one of")
    # A line no producer could write (a field the schema does not have) stops the run.
    with pytest.raises(ValidationError, match=r"<events>:1: product.colour is not a field"):
        read_inputs([json.dumps({**bad, "product": {"product_id": "p-1", "colour": "red"}})])
