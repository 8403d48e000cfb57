"""The worker's decisions without Kafka: routing inbound records, idempotent profile updates,
the public profile the view shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from agents.ingest import DeadLettered, Forwarded, route_inbound
from agents.views import public_profile
from orchestrator.codec import AvroCodec
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import CustomerState
from orchestrator.errors import SerializationError, is_transient

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CODEC = AvroCodec(registry=None, framing="single_object")


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "event_time": NOW - timedelta(minutes=1),
        "channel": "web",
        "event_type": "add_to_cart",
        "identities": {"customer_id": "c-1", "email": "Ann@Example.com"},
        "product": {"product_id": "p-1", "quantity": 1},
        "attributes": {},
    }
    base.update(changes)
    return base


def route(value: bytes | None, channel: str = "web") -> Forwarded | DeadLettered:
    return route_inbound(
        codec=CODEC,
        channel=channel,
        topic=f"events.{channel}",
        partition=2,
        offset=7,
        key=b"k",
        value=value,
        headers=[("h", b"v")],
        now=NOW,
        worker="w",
        dead_letter_topic="events.dlq",
    )


def test_a_valid_event_is_forwarded_normalised_and_keyed_by_customer() -> None:
    out = route(CODEC.encode_single_object("CustomerEvent", record()))
    assert isinstance(out, Forwarded)
    assert out.key == b"c-1"
    assert not out.via_identity
    forwarded = CODEC.decode(out.value, "CustomerEvent", "x")
    assert forwarded["identities"]["email"] == "ann@example.com"
    assert CustomerEvent.from_dict(forwarded) == out.event


def test_an_event_without_customer_id_is_resolved_by_its_most_stable_identifier() -> None:
    identities = {"email": "ann@example.com", "anonymous_id": "a-9"}
    out = route(CODEC.encode_single_object("CustomerEvent", record(identities=identities)))
    assert isinstance(out, Forwarded)
    assert out.via_identity
    assert out.key == b"anonymous_id:a-9"
    assert out.links == ()


def test_an_event_with_a_customer_id_links_its_other_identifiers() -> None:
    identities = {"customer_id": "c-1", "email": "Ann@Example.com", "loyalty_card": "L1"}
    out = route(CODEC.encode_single_object("CustomerEvent", record(identities=identities)))
    assert isinstance(out, Forwarded)
    assert out.key == b"c-1"
    keys = [k for k, _ in out.links]
    assert keys[0] == b"loyalty_card:L1"
    assert keys[1].startswith(b"email:") and b"example" not in keys[1]  # hashed
    assert {c for _, c in out.links} == {b"c-1"}


@pytest.mark.parametrize(
    ("value", "error_class", "reason"),
    [
        (b"", "SerializationError", "empty value"),
        (b"\x99junk", "SerializationError", "unknown framing"),
        (b"\xc3\x01" + b"\x00" * 8 + b"x", "SerializationError", "unknown schema fingerprint"),
        (
            CODEC.encode_single_object("CustomerEvent", record(channel="app")),
            "ValidationError",
            "channel app does not match topic channel web",
        ),
        (b"\x00" * 70_000, "ValidationError", "record is 70000 bytes (limit 65536)"),
    ],
)
def test_bad_records_become_dead_letters(value: bytes, error_class: str, reason: str) -> None:
    out = route(value)
    assert isinstance(out, DeadLettered)
    assert out.error_class == error_class
    assert reason in out.reason
    letter = CODEC.decode(out.value, "DeadLetter", "events.dlq")
    assert letter["value"] == value
    assert letter["key"] == b"k"
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "events.web",
        2,
        7,
    )
    assert letter["headers"] == [{"key": "h", "value": b"v"}]
    assert letter["worker"] == "w"


def test_registry_outages_are_transient_but_unknown_schema_ids_are_not() -> None:
    class RegistryError(Exception):
        def __init__(self, status: int) -> None:
            self.http_status_code = status

    def wrapped(cause: BaseException) -> SerializationError:
        try:
            raise SerializationError("cannot decode") from cause
        except SerializationError as exc:
            return exc

    assert is_transient(wrapped(httpx.ConnectError("refused")))
    assert is_transient(wrapped(RegistryError(503)))
    assert is_transient(wrapped(ConnectionRefusedError()))
    assert not is_transient(wrapped(RegistryError(404)))
    assert not is_transient(SerializationError("unknown framing"))


def test_the_public_profile_masks_contact_points() -> None:
    state = CustomerState(customer_id="c-1")
    state.identities = {
        "email": ["ann@example.com"],
        "phone": ["+33612345678"],
        "push_token": ["tok-abcdef"],
        "anonymous_id": ["a-1"],
    }
    state.recent_event_ids = ["e-1"]
    body = public_profile(state)
    text = repr(body)
    assert "ann@example.com" not in text and "+33612345678" not in text
    assert "tok-abcdef" not in text
    assert body["identities"]["email"] == ["a***@example.com"]
    assert body["identities"]["anonymous_id"] == ["a-1"]
    assert "recent_event_ids" not in body
    assert state.identities["email"] == ["ann@example.com"]  # the state itself is untouched
