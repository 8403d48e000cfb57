"""Stored customer state: compact, versioned, and an older record always loads."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.engine.enrollment_status import EnrollmentStatus
from orchestrator.engine.state import (
    CartLine,
    ConsentRecord,
    CustomerState,
    Enrollment,
    ProductView,
)
from orchestrator.errors import SerializationError
from tables.codec import FORMAT_JSON, FORMAT_ZLIB_JSON, decode_state, encode_state, state_digest
from tables.customers import CustomerTable

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

#: Exactly what a format-1 writer with a much smaller CustomerState stored (never regenerate).
OLD_RECORD = (
    b'\x01{"customer_id":"c-old","schema_version":1,"event_counts":{"page_view":2},'
    b'"consent":{"email:marketing":{"status":"opted_in","at":"2025-01-02T03:04:05Z"}},'
    b'"field_from_the_future":[1,2,3]}'
)


def rich_state() -> CustomerState:
    state = CustomerState(customer_id="c-1")
    state.identities = {"email": ["ann@example.com"], "anonymous_id": ["a-1"]}
    state.consent["email:marketing"] = ConsentRecord("opted_in", T0, "signup form")
    state.cart["p-1"] = CartLine(2, T0, "Trail Runner", "shoes", 12900, "EUR")
    state.recent_views = [ProductView(f"p-{i}", T0 + timedelta(minutes=i)) for i in range(30)]
    state.recent_event_ids = [f"e-{i}" for i in range(200)]
    state.event_counts = {"product_view": 30, "add_to_cart": 1}
    state.open_tickets = {"tk-1": T0}
    return state


def test_round_trip_keeps_everything() -> None:
    for state in (CustomerState(customer_id="c-0"), rich_state()):
        assert decode_state(encode_state(state)) == state


def test_an_enrolment_status_is_stored_as_its_word_and_loads_as_the_enum() -> None:
    state = rich_state()
    state.enrollments = [
        Enrollment("enr-1", "promo", 1, T0, "message", EnrollmentStatus.HELD, due_at=T0)
    ]
    stored = encode_state(state)
    assert b'"status":"held"' in stored
    assert decode_state(stored).enrollments[0].status is EnrollmentStatus.HELD


def test_large_states_are_compressed_and_typical_ones_are_not() -> None:
    typical = encode_state(rich_state())
    assert typical[0] == FORMAT_JSON  # a few KB: plain JSON is cheaper to write and read
    large = rich_state()
    large.recent_event_ids = [f"event-{i:06d}-{'x' * 40}" for i in range(400)]
    packed = encode_state(large)
    assert packed[0] == FORMAT_ZLIB_JSON
    assert len(packed) < len(zlib.decompress(packed[1:])) / 3
    assert decode_state(packed) == large


def test_records_load_into_equal_states_through_the_fast_and_the_tolerant_path() -> None:
    state = rich_state()
    assert decode_state(encode_state(state)) == state
    # An older writer's looser value (a number as a string) takes the tolerant path.
    doc = state.to_dict()
    doc["commerce"]["orders_online"] = str(doc["commerce"]["orders_online"])
    loose = bytes([FORMAT_JSON]) + json.dumps(doc).encode()
    assert decode_state(loose) == state


@pytest.mark.parametrize(
    "data", [OLD_RECORD, bytes([FORMAT_ZLIB_JSON]) + zlib.compress(OLD_RECORD[1:])]
)
def test_a_record_written_by_an_older_worker_still_loads(data: bytes) -> None:
    state = decode_state(data)
    assert state.customer_id == "c-old"
    assert state.event_counts == {"page_view": 2}
    assert state.consent["email:marketing"].status == "opted_in"
    assert state.consent["email:marketing"].at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert state.cart == {} and state.recent_event_ids == []  # defaults for unknown fields


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty value"),
        (b"\x07{}", "unknown format 7"),
        (b"\x01{not json", "format 1) is corrupt"),
        (b"\x02garbage", "format 2) is corrupt"),
        (b'\x01{"schema_version":1}', "no customer_id"),
        (b"\x01[1,2]", "no customer_id"),
    ],
)
def test_unreadable_records_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(SerializationError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_state(data)


def test_digest_depends_on_content_not_on_format() -> None:
    state = rich_state()
    assert state_digest(decode_state(encode_state(state))) == state_digest(state)
    state.event_counts["page_view"] = 1
    assert state_digest(state) != state_digest(rich_state())


class CountingTable(dict[str, bytes]):
    writes = 0

    def __setitem__(self, key: str, value: bytes) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_customer_table_loads_saves_and_deletes() -> None:
    raw = CountingTable()
    table = CustomerTable(raw)
    assert table.load("c-1") is None
    assert table.load_or_new("c-1") == CustomerState(customer_id="c-1")
    table.save(rich_state())
    assert raw.writes == 1
    assert table.load("c-1") == rich_state()
    table.delete("c-1")
    table.delete("c-1")
    assert table.load("c-1") is None
