"""The Avro contract at the engine's edge: fastavro-decoded events become the same domain
objects as the simulator's JSON, and actions/outcomes encode against their schemas."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine import (
    Action,
    CustomerEvent,
    DeliveryFeedback,
    JourneyError,
    SignalError,
    decide,
    load_rules,
)

from .factories import T0, contactable, event, journey_rules, send_journey

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def schema(name: str) -> Any:
    return fastavro.parse_schema(json.loads((SCHEMAS / f"{name}.avsc").read_text()))


def roundtrip(name: str, record: dict[str, Any]) -> Any:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema(name), record)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, schema(name))


SIMULATOR_JSON = {
    "event_id": "e-1",
    "event_time": "2026-03-02T10:00:00+01:00",
    "channel": "store",
    "event_type": "order_placed",
    "identities": {"customer_id": "c1", "loyalty_card": "L-9"},
    "order": {
        "order_id": "o-1",
        "total": {"amount_minor": 1999, "currency": "EUR"},
        "store_id": "paris-01",
        "items": [{"product_id": "p1", "quantity": 2}],
    },
    "attributes": {"till": "4"},
}


def test_a_fastavro_decoded_event_equals_the_simulator_json() -> None:
    from_json = CustomerEvent.from_dict(SIMULATOR_JSON)
    avro_record = {**SIMULATOR_JSON, "event_time": from_json.event_time}
    decoded = roundtrip("CustomerEvent", avro_record)
    assert CustomerEvent.from_dict(decoded) == from_json
    assert from_json.event_time == T0 and from_json.order is not None
    assert from_json.order.items[0].quantity == 2


def test_epoch_millis_are_accepted() -> None:
    millis = int(T0.timestamp() * 1000)
    assert CustomerEvent.from_dict({**SIMULATOR_JSON, "event_time": millis}).event_time == T0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_time": "2026-03-02T10:00:00"}, "offset"),
        ({"identities": {}}, "at least one identifier"),
        ({"event_id": ""}, "must not be empty"),
        ({"order": {"order_id": "o"}}, "order"),
    ],
)
def test_a_bad_event_raises_a_signal_error_saying_why(change: dict[str, Any], message: str) -> None:
    with pytest.raises(SignalError, match=message):
        CustomerEvent.from_dict({**SIMULATOR_JSON, **change})


def test_actions_and_outcomes_encode_against_their_schemas() -> None:
    d = decide(
        contactable(), event("custom.go"), T0, journey_rules(send_journey(send_extra=", offer: X"))
    )
    (action,) = d.actions
    back = roundtrip("Action", action.to_record())
    assert back["action_id"] == action.action_id and back["not_before"] == T0
    assert back["offer_id"] == "X" and back["category"] == "marketing"
    for outcome in d.outcomes:
        assert roundtrip("JourneyOutcome", outcome.to_record())["kind"] == outcome.kind


def test_the_action_a_sender_decodes_is_the_action_the_engine_wrote() -> None:
    d = decide(
        contactable(), event("custom.go"), T0, journey_rules(send_journey(send_extra=", offer: X"))
    )
    (action,) = d.actions
    assert Action.from_record(roundtrip("Action", action.to_record())) == action
    # Epoch millis (what a writer without logical types hands over) are exact, in UTC.
    ms = {k: int(getattr(action, k).timestamp()) * 1000 + 7 for k in ("created_at", "expires_at")}
    as_ints = Action.from_record({**action.to_record(), **ms, "not_before": 0})
    assert as_ints.created_at == datetime.fromtimestamp(ms["created_at"] / 1000, tz=UTC)
    assert as_ints.created_at.microsecond % 1000 == 0 and as_ints.created_at.tzinfo is UTC
    assert as_ints.not_before == datetime(1970, 1, 1, tzinfo=UTC)
    assert Action.from_record(roundtrip("Action", as_ints.to_record())) == as_ints


def test_an_action_record_from_an_older_writer_takes_the_defaults() -> None:
    action = Action.from_record(
        {
            "action_id": "a1",
            "customer_id": "c1",
            "channel": None,
            "journey_id": "j",
            "template_id": "t",
            "created_at": T0,
            "not_before": T0,
            "expires_at": T0,
        }
    )
    assert (action.journey_version, action.step_id, action.reason) == (1, "", "")
    assert (action.channel, action.category, action.priority) == ("UNKNOWN", "UNKNOWN", 0)
    assert not action.requires_approval and action.payload == {} and action.variant is None


def test_a_decoded_delivery_receipt_is_feedback() -> None:
    record = {
        "receipt_id": "a1:delivered",
        "action_id": "a1",
        "customer_id": "c1",
        "channel": "email",
        "status": "delivered",
        "occurred_at": T0,
    }
    fb = DeliveryFeedback.from_dict(roundtrip("DeliveryReceipt", record))
    assert (fb.status, fb.occurred_at) == ("delivered", T0)


def test_every_bad_file_of_a_directory_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("id: a\n")
    (tmp_path / "b.yaml").write_text("id: b\nversion: 1\nname: B\ncategory: nope\n")
    with pytest.raises(JourneyError) as err:
        load_rules(tmp_path)
    text = str(err.value)
    assert "a.yaml:1" in text and "b.yaml:4: category" in text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _set(d: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(d))
    node = out
    for key in path[:-1]:
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            return out
        node = nxt
    node[path[-1]] = value
    return out


FIELD_PATHS = [
    ["event_id"],
    ["event_time"],
    ["channel"],
    ["event_type"],
    ["identities"],
    ["identities", "customer_id"],
    ["order"],
    ["order", "total"],
    ["order", "items"],
    ["order", "total", "amount_minor"],
    ["attributes"],
    ["product"],
    ["consent"],
    ["preferences"],
    ["loyalty"],
    ["support"],
    ["message"],
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELD_PATHS), json_values)
def test_any_malformed_event_is_a_signal_error_never_a_crash(path: list[str], value: Any) -> None:
    d = _set(SIMULATOR_JSON, path, value)
    with contextlib.suppress(SignalError):
        CustomerEvent.from_dict(d)


def test_a_profile_keyed_by_email_alone_never_exposes_the_address() -> None:
    ev = CustomerEvent.from_dict({**SIMULATOR_JSON, "identities": {"email": "ana@example.com"}})
    key = ev.customer_key
    assert key is not None and key.startswith("email#") and "ana" not in key
    d = decide(None, ev, T0, journey_rules(send_journey()))
    assert d.state is not None and d.state.customer_id == key
