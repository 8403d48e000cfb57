"""Stored customer state: compact, versioned, and an older record always loads."""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.engine.enrollment_status import EnrollmentStatus
from orchestrator.engine.state import (
    CartLine,
    ChannelEngagement,
    ConsentRecord,
    CustomerState,
    DecisionNote,
    Enrollment,
    JourneyHistory,
    Loyalty,
    OrderRecord,
    ProductView,
    SendRecord,
    StepVisit,
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


def every_record_state() -> CustomerState:
    """A state holding one of each record kind the engine stores."""
    state = rich_state()
    state.recent_views = state.recent_views[:2]
    state.recent_event_ids = state.recent_event_ids[:2]
    state.enrollments = [
        Enrollment(
            "enr-1",
            "promo",
            1,
            T0,
            "message",
            EnrollmentStatus.HELD,
            due_at=T0,
            trigger={"event_id": "e-1"},
            history=[StepVisit(T0, "message", "held")],
        )
    ]
    state.recent_decisions = [DecisionNote(T0, "sent", "sent", "the only allowed channel", "promo")]
    state.send_log = [SendRecord("a-1", T0, "email", "marketing", "promo")]
    state.engagement["email"] = ChannelEngagement(sends=1, opens=1, last_engaged_at=T0)
    state.journeys["promo"] = JourneyHistory(T0, None, 1, 1)
    state.commerce.recent_orders = [OrderRecord("o-1", T0, 2500)]
    state.loyalty = Loyalty("gold", points=10)
    return state


#: What the engine's dataclasses stored for every_record_state() before its records became
#: msgspec Structs (thirty-third session): a worker of either writes what the other reads.
DATACLASS_ERA_RECORD = (
    b'\x01{"customer_id":"c-1","schema_version":1,'
    b'"identities":{"email":["ann@example.com"],"anonymous_id":["a-1"]},"undeliverable":[],'
    b'"consent":{"email:marketing":{"status":"opted_in","at":"2026-03-01T12:00:00Z",'
    b'"source":"signup form"}},"preferences":{"time_zone":null,"language":null,'
    b'"quiet_hours_start":null,"quiet_hours_end":null,"preferred_channel":null,'
    b'"updated_at":null},"person":{"first_name":null,"last_name":null,"updated_at":null},'
    b'"attributes":{},"lifecycle_stage":"new","commerce":{"orders_online":0,'
    b'"orders_store":0,"revenue_minor":0,"currency":null,"returns":0,"returned_minor":0,'
    b'"first_order_at":null,"last_order_at":null,"last_order_id":null,'
    b'"last_order_total_minor":0,"order_ids":[],"checkout_started_at":null,'
    b'"recent_orders":[{"order_id":"o-1","at":"2026-03-01T12:00:00Z","total_minor":2500}]},'
    b'"cart":{"p-1":{"quantity":2,"added_at":"2026-03-01T12:00:00Z","name":"Trail Runner",'
    b'"category":"shoes","unit_price_minor":12900,"currency":"EUR","image_url":null}},'
    b'"cart_updated_at":null,"recent_views":[{"product_id":"p-0",'
    b'"at":"2026-03-01T12:00:00Z","category":null,"name":null,"image_url":null},'
    b'{"product_id":"p-1","at":"2026-03-01T12:01:00Z","category":null,"name":null,'
    b'"image_url":null}],"recent_categories":[],"wishlist":[],"last_search":null,'
    b'"app_installed":false,"last_store_visit_at":null,"loyalty":{"tier":"gold",'
    b'"previous_tier":null,"points":10,"enrolled_at":null,"tier_changed_at":null},'
    b'"open_tickets":{"tk-1":"2026-03-01T12:00:00Z"},"resolved_tickets":{},'
    b'"last_ticket_resolved_at":null,"engagement":{"email":{"sends":1,"delivered":0,'
    b'"opens":1,"clicks":0,"bounces":0,"last_engaged_at":"2026-03-01T12:00:00Z","hours":[0,'
    b'0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}},"send_log":[{"action_id":"a-1",'
    b'"at":"2026-03-01T12:00:00Z","channel":"email","category":"marketing",'
    b'"journey_id":"promo","offer_id":null}],"offers_in_flight":[],"placements":{},'
    b'"arbitration_closes_at":null,"enrollments":[{"enrollment_id":"enr-1",'
    b'"journey_id":"promo","version":1,"entered_at":"2026-03-01T12:00:00Z",'
    b'"step_id":"message","status":"held","due_at":"2026-03-01T12:00:00Z","seq":0,'
    b'"variant":null,"step_due_since":null,"sto_done":false,"hold_reason":null,'
    b'"pending_action_id":null,"approved_by":null,"engaged":false,'
    b'"trigger":{"event_id":"e-1"},"action_ids":[],"history":[{"at":"2026-03-01T12:00:00Z",'
    b'"step_id":"message","what":"held"}]}],'
    b'"journeys":{"promo":{"last_entered_at":"2026-03-01T12:00:00Z","last_exited_at":null,'
    b'"times_entered":1,"last_version":1,"last_exit_reason":null}},"attributions":[],'
    b'"timers":{},"segments":{},"event_counts":{"product_view":30,"add_to_cart":1},'
    b'"recent_event_ids":["e-0","e-1"],"recent_decisions":[{"at":"2026-03-01T12:00:00Z",'
    b'"kind":"sent","code":"sent","message":"the only allowed channel",'
    b'"journey_id":"promo","step_id":null,"channel":null,"action_id":null}],'
    b'"merged_from":[],"first_seen_at":null,"last_activity_at":null,"last_event_at":null}'
)


def test_the_stored_json_is_what_the_dataclass_records_wrote_byte_for_byte() -> None:
    stored = encode_state(every_record_state())
    assert stored == DATACLASS_ERA_RECORD
    assert decode_state(DATACLASS_ERA_RECORD) == every_record_state()


def test_records_of_scalars_only_are_left_out_of_the_collector_s_walks() -> None:
    import gc

    state = every_record_state()
    scalar_only = [
        state.recent_views[0],
        state.recent_decisions[0],
        state.send_log[0],
        state.commerce.recent_orders[0],
        state.consent["email:marketing"],
        state.enrollments[0].history[0],
    ]
    assert not any(gc.is_tracked(r) for r in scalar_only)
    assert gc.is_tracked(state)  # it holds lists and dicts: a cycle through them is still found
    copy = state.clone()
    assert copy == state and copy.enrollments[0] is not state.enrollments[0]
    assert copy.recent_views[0] is state.recent_views[0]  # immutable records are shared


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
