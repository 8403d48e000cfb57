"""The ingest contract: every way a decoded record can be wrong has a precise reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.codec import AvroCodec
from orchestrator.demo import demo_events
from orchestrator.engine.signals import CustomerEvent
from orchestrator.errors import SerializationError, ValidationError
from orchestrator.identity import identifier_keys, resolve_event
from orchestrator.ingest import (
    MAX_DEAD_LETTER_VALUE_BYTES,
    IngestLimits,
    dead_letter,
    encode_dead_letter,
    normalise_event,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "event_time": NOW - timedelta(seconds=5),
        "channel": "web",
        "event_type": "page_view",
        "identities": {"customer_id": "c-1"},
        "attributes": {},
    }
    base.update(changes)
    return base


ORDER = {"order_id": "o-1", "total": {"amount_minor": 1000, "currency": "eur"}, "items": []}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"event_id": ""}, "event_id is missing or empty"),
        ({"event_id": "x" * 300}, "event_id is 300 characters (limit 256)"),
        ({"identities": {}}, "identities: no identifier set"),
        ({"identities": {"customer_id": "  ", "email": None}}, "identities: no identifier set"),
        ({"identities": {"email": "not-an-email"}}, "identities.email is not an email address"),
        ({"identities": {"phone": "0612"}}, "identities.phone is not an E.164 number"),
        ({"identities": {"customer_id": "c" * 257}}, "identities.customer_id is 257 characters"),
        ({"channel": "UNKNOWN"}, "channel is UNKNOWN"),
        ({"channel": None}, "channel is UNKNOWN"),
        ({"channel": "fax"}, "channel 'fax' is not an inbound channel"),
        ({"channel": "app"}, "channel app does not match topic channel web"),
        ({"event_type": "teleported"}, "event_type 'teleported' is not in the vocabulary"),
        ({"event_type": "custom."}, "event_type 'custom.' is not in the vocabulary"),
        ({"event_time": NOW + timedelta(days=3, hours=2)}, "event_time is 3 d 2 h in the future"),
        ({"event_time": NOW + timedelta(minutes=6)}, "event_time is 6 min 0 s in the future"),
        ({"event_time": 0}, "event_time 1970-01-01 is more than 1825 days old"),
        ({"event_time": "yesterday"}, "event_time: expected ISO-8601"),
        ({"attributes": {f"k{i}": "v" for i in range(65)}}, "attributes has 65 entries"),
        ({"attributes": {"q": "v" * 3000}}, "attribute 'q' is 3000 characters (limit 2048)"),
        ({"event_type": "order_placed"}, "event_type order_placed needs the order section"),
        ({"event_type": "add_to_cart"}, "event_type add_to_cart needs the product section"),
        (
            {"event_type": "add_to_cart", "product": {"product_id": ""}},
            "add_to_cart needs product.product_id",
        ),
        ({"event_type": "unsubscribed"}, "needs the consent or message section"),
        ({"event_type": "support_ticket_opened"}, "needs the support section"),
        (
            {"event_type": "consent_changed", "consent": {"channel": "email", "status": "UNKNOWN"}},
            "consent_changed needs consent.status opted_in or opted_out",
        ),
        (
            {"event_type": "consent_changed", "consent": {"channel": "fax", "status": "opted_in"}},
            "consent.channel 'fax' is not an action channel",
        ),
        (
            {"event_type": "message_replied", "message": {"reply_text": None}},
            "message_replied needs message.reply_text",
        ),
        (
            {"event_type": "message_impression", "message": {"journey_id": "j"}},
            "message_impression needs message.action_id",
        ),
        (
            {"event_type": "order_placed", "order": {"order_id": "o", "total": None}},
            "order: order_id and total are required",
        ),
    ],
)
def test_invalid_records_are_rejected_with_a_precise_reason(
    changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError) as info:
        normalise_event(event(**changes), NOW, source_channel="web")
    assert reason in str(info.value)


def test_oversized_record_is_rejected_before_anything_else() -> None:
    limits = IngestLimits(max_record_bytes=100)
    with pytest.raises(ValidationError, match=r"record is 101 bytes \(limit 100\)"):
        normalise_event(event(), NOW, record_size=101, limits=limits)
    normalise_event(event(), NOW, record_size=100, limits=limits)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"event_type": "custom.quiz_completed"},
        {"event_time": NOW + timedelta(minutes=4)},
        {"event_type": "order_placed", "order": ORDER, "channel": "web"},
        {"event_type": "unsubscribed", "message": {"action_id": "a-1"}},
        {"event_type": "category_view", "product": {"product_id": "", "category": "shoes"}},
        {"identities": {"anonymous_id": "a-1"}},
    ],
)
def test_valid_records_pass(changes: dict[str, Any]) -> None:
    ev = normalise_event(event(**changes), NOW, source_channel="web")
    assert ev.event_id == "e-1"


def test_normalisation_of_identifiers_and_types() -> None:
    ev = normalise_event(
        event(
            event_id=" e-9 ",
            event_type=" order_placed ",
            event_time=int((NOW - timedelta(minutes=1)).timestamp() * 1000),
            identities={
                "customer_id": " c-1 ",
                "email": " Ann@Example.COM ",
                "phone": "0033 6 12-34 56 78",
            },
            order=ORDER,
        ),
        NOW,
    )
    assert ev.event_id == "e-9"
    assert ev.event_type == "order_placed"
    assert ev.identities.customer_id == "c-1"
    assert ev.identities.email == "ann@example.com"
    assert ev.identities.phone == "+33612345678"
    assert ev.event_time == NOW - timedelta(minutes=1)
    assert ev.order is not None and ev.order.total.currency == "EUR"


def test_reasons_never_contain_contact_points() -> None:
    for identities in ({"email": "secret@@example.com"}, {"phone": "+0 secret 123"}):
        with pytest.raises(ValidationError) as info:
            normalise_event(event(identities=identities), NOW)
        assert "secret" not in str(info.value)


def test_every_demo_event_is_valid() -> None:
    codec = AvroCodec(registry=None, framing="single_object")
    events = demo_events(customers=30, seed=5, start=NOW - timedelta(days=1))
    for e in events:
        record = codec.decode(codec.encode("CustomerEvent", e, "t"), "CustomerEvent", "t")
        later = max(NOW, e["event_time"])
        assert normalise_event(record, later, source_channel=e["channel"]).event_id == e["event_id"]


def provisional_customer_id(e: CustomerEvent) -> str:
    """The id the live identity hop gives a visitor known by no customer id."""
    return resolve_event(identifier_keys(e.identities)[0], None).customer_id


def test_provisional_ids_are_stable_and_free_of_personal_data() -> None:
    anon = normalise_event(event(identities={"anonymous_id": "a-1", "email": "x@y.io"}), NOW)
    assert provisional_customer_id(anon) == "anon:anonymous_id:a-1"
    by_mail = normalise_event(event(identities={"email": "X@y.io"}), NOW)
    key = provisional_customer_id(by_mail)
    assert key.startswith("anon:email:") and "y.io" not in key
    again = normalise_event(event(identities={"email": "x@Y.io "}), NOW)
    assert provisional_customer_id(again) == key


def test_dead_letter_record_fits_the_schema_and_keeps_the_original() -> None:
    codec = AvroCodec(registry=None, framing="single_object")
    record = dead_letter(
        key=b"c-1",
        value=b"\x00\x00\x00\x00\x2a garbage",
        headers=[("trace", b"abc"), ("source", "pos-7"), ("empty", None)],
        source_topic="events.web",
        source_partition=3,
        source_offset=42,
        error=SerializationError("unknown schema id 42"),
        failed_at=NOW,
        worker="w-1",
    )
    decoded = codec.decode(codec.encode("DeadLetter", record, "t"), "DeadLetter", "t")
    assert decoded["error_class"] == "SerializationError"
    assert decoded["reason"] == "unknown schema id 42"
    assert decoded["value"] == b"\x00\x00\x00\x00\x2a garbage"
    assert decoded["headers"] == [
        {"key": "trace", "value": b"abc"},
        {"key": "source", "value": b"pos-7"},
        {"key": "empty", "value": None},
    ]
    assert (decoded["source_topic"], decoded["source_partition"], decoded["source_offset"]) == (
        "events.web",
        3,
        42,
    )
    assert decoded["failed_at"] == NOW


def test_dead_letter_cuts_a_value_that_would_not_fit_a_kafka_message() -> None:
    big = b"x" * (MAX_DEAD_LETTER_VALUE_BYTES + 10)
    record = dead_letter(
        key=None,
        value=big,
        headers={"h": b"1"},
        source_topic="events.web",
        source_partition=0,
        source_offset=1,
        error=ValidationError("record is 921610 bytes (limit 65536)"),
        failed_at=NOW,
    )
    assert len(record["value"]) == MAX_DEAD_LETTER_VALUE_BYTES
    assert record["reason"].startswith("record is 921610 bytes")
    assert f"of {len(big)} bytes" in record["reason"]
    assert record["headers"] == [{"key": "h", "value": b"1"}]


class _Registry:
    """A schema registry that fails every call with an HTTP status (-1: no response)."""

    def __init__(self, status: int) -> None:
        self.status = status

    def register_schema(self, subject: str, schema: Any) -> int:
        error = RuntimeError(f"registry says {self.status}")
        error.http_status_code = self.status  # type: ignore[attr-defined]
        raise error


def _letter() -> dict[str, Any]:
    return dead_letter(
        key=b"c-1",
        value=b"garbage",
        headers=None,
        source_topic="actions.email",
        source_partition=0,
        source_offset=7,
        error=SerializationError("unknown framing"),
        failed_at=NOW,
        worker="sender-email",
    )


@pytest.mark.parametrize("status", [-1, 503])
def test_a_dead_letter_is_still_written_while_the_registry_is_down(status: int) -> None:
    codec = AvroCodec(registry=_Registry(status), framing="confluent")
    encoded = encode_dead_letter(codec, _letter(), "dead-letters")
    decoded = codec.decode_single_object(encoded, "DeadLetter")
    assert decoded["value"] == b"garbage" and decoded["worker"] == "sender-email"


def test_a_dead_letter_the_registry_refuses_is_an_error_not_a_fallback() -> None:
    codec = AvroCodec(registry=_Registry(409), framing="confluent")
    with pytest.raises(SerializationError, match="cannot register DeadLetter"):
        encode_dead_letter(codec, _letter(), "dead-letters")


def test_a_dead_letter_uses_the_codec_framing() -> None:
    codec = AvroCodec(registry=None, framing="single_object")
    letter = _letter()
    assert encode_dead_letter(codec, letter, "t") == codec.encode_single_object(
        "DeadLetter", letter
    )
