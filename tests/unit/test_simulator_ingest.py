"""The simulator ingests each line as the worker ingests ``events.<channel>``: what the worker
dead-letters is a ``dead_letter`` line with the very reason of the dead letter (checked against
agents.ingest.route_inbound on the same bytes), and changes nothing; what no producer could
write is an error naming the line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agents.ingest import DeadLettered, route_inbound
from orchestrator.codec import AvroCodec
from orchestrator.engine import Rules, load_rules
from orchestrator.engine.timeutil import to_datetime
from orchestrator.errors import ValidationError
from orchestrator.simulator import (
    DeadLetterEntry,
    format_table,
    parse_input,
    read_inputs,
    simulate,
    summarize,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
CODEC = AvroCodec(framing="single_object")


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "event_time": T0.isoformat(),
        "channel": "web",
        "event_type": "add_to_cart",
        "identities": {"customer_id": "c-1", "email": "c-1@example.test"},
        "product": {"product_id": "p-1", "price": {"amount_minor": 5000, "currency": "EUR"}},
    }
    return {**base, **changes}


#: Every way an event the schema carries breaks the ingest contract (issue 11's list).
DEAD_LETTERS = {
    "a typo'd event type": (event(event_type="add_to_kart"), None),
    "order_placed without an order": (event(event_type="order_placed", product=None), None),
    "an invalid e-mail": (event(identities={"customer_id": "c-1", "email": "c-1@nowhere"}), None),
    "dated decades ahead of its arrival": (
        event(event_time=(T0 + timedelta(days=365 * 30)).isoformat()),
        T0,
    ),
    "a channel this worker's schema does not know (written by a newer producer)": (
        event(channel="UNKNOWN"),
        None,
    ),
    "a consent status the schema does not know (opt_in from a newer producer)": (
        event(
            event_type="consent_changed",
            product=None,
            consent={"channel": "sms", "purpose": "marketing", "status": "UNKNOWN"},
        ),
        None,
    ),
    "an identity only a newer schema has (the worker sees no identifier)": (
        event(identities={}),
        None,
    ),
    "a first name too long for a subject line": (
        event(event_type="profile_updated", person={"first_name": "Ø" * 101}),
        None,
    ),
    "a name with a line break (a header injection)": (
        event(event_type="signup", person={"first_name": "Ann\r\nBcc: x@y"}),
        None,
    ),
    "a product image that is not an https URL": (
        event(product={"product_id": "p-1", "image_url": "javascript:alert(1)"}),
        None,
    ),
    "a consent for a channel Tutti cannot act on": (
        event(
            event_type="consent_changed",
            product=None,
            consent={"channel": "fax", "purpose": "marketing", "status": "opted_in"},
        ),
        None,
    ),
}


def live_reason(d: dict[str, Any], received_at: datetime) -> str:
    """What the worker's ingest writes as the dead letter's reason for the same record."""
    record = {**d, "event_time": to_datetime(d["event_time"])}
    channel = d["channel"] if d["channel"] != "UNKNOWN" else "web"
    outcome = route_inbound(
        codec=CODEC,
        channel=channel,
        topic=f"events.{channel}",
        partition=0,
        offset=7,
        key=b"c-1",
        value=CODEC.encode_single_object("CustomerEvent", record),
        headers=None,
        now=received_at,
        worker="w-1",
        dead_letter_topic="events.dlq",
    )
    assert isinstance(outcome, DeadLettered), outcome
    return outcome.reason


@pytest.mark.parametrize("case", list(DEAD_LETTERS))
def test_a_line_the_worker_dead_letters_is_a_dead_letter_line_with_the_same_reason(
    case: str,
) -> None:
    d, received_at = DEAD_LETTERS[case]
    entry = parse_input(d, line=4, received_at=received_at)
    assert isinstance(entry, DeadLetterEntry), entry
    assert entry.reason == live_reason(d, received_at or to_datetime(d["event_time"]))
    assert (entry.line, entry.event_id, entry.error_class) == (4, "e-1", "ValidationError")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"consent": {"channel": "sms", "purpose": "marketing", "status": "opt_in"}},
            "consent.status 'opt_in' is not one of opted_in, opted_out",
        ),
        ({"channel": "tiktok"}, "channel 'tiktok' is not one of web, app"),
        (
            {"identities": {"customer_id": "c-1", "twitter": "@c1"}},
            "identities.twitter is not a field of Identities",
        ),
        ({"colour": "red"}, "colour is not a field of CustomerEvent"),
        ({"event_time": "tomorrow"}, "event_time: expected ISO-8601"),
        ({"attributes": {"n": 3}}, "CustomerEvent record does not fit its schema"),
    ],
)
def test_what_no_producer_could_write_is_an_error_naming_the_line(
    change: dict[str, Any], message: str
) -> None:
    lines = [json.dumps(event(event_id="ok")), "", json.dumps(event(**change))]
    with pytest.raises(ValidationError, match=rf"^f\.jsonl:3: {message}"):
        read_inputs(lines, "f.jsonl")


@pytest.fixture(scope="module")
def library() -> Rules:
    return load_rules(ROOT / "journeys")


def test_a_dead_lettered_line_changes_nothing_and_shows_in_the_timeline(library: Rules) -> None:
    good = [
        event(event_id="p-0", event_type="profile_updated", product=None),
        event(event_id="c-0", event_time=(T0 + timedelta(minutes=1)).isoformat()),
    ]
    bad = event(
        event_id="o-1",
        event_time=(T0 + timedelta(minutes=2)).isoformat(),
        event_type="order_placed",  # no order: it would have ended the cart journey
        product=None,
    )
    until = T0 + timedelta(days=3)
    clean = simulate(library, read_inputs(json.dumps(d) for d in good), until)
    dirty = simulate(library, read_inputs(json.dumps(d) for d in [*good, bad]), until)
    letters = [t for t in dirty.timeline if t.what == "dead_letter"]
    assert [(t.at, t.customer_id, t.channel, t.reason, t.detail) for t in letters] == [
        (
            T0 + timedelta(minutes=2),
            "-",
            "web",
            "event_type order_placed needs the order section",
            "line 3: event o-1 (ValidationError)",
        )
    ]
    assert [t for t in dirty.timeline if t.what != "dead_letter"] == clean.timeline
    assert dirty.states == clean.states
    assert clean.actions()  # the cart reminder the bad order did not stop
    assert "1 dead-lettered line(s)" in summarize(dirty.timeline)
    assert any("dead_letter" in row for row in format_table(dirty.timeline))
