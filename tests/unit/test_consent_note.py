"""The consent records the decide step publishes for the senders (orchestrator.consent)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.consent import (
    ConsentSnapshot,
    consent_key,
    consent_note,
    decode_consent,
    withheld_by,
)
from orchestrator.engine.profile import set_consent
from orchestrator.engine.state import CustomerState

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _state(**consent: str) -> CustomerState:
    state = CustomerState(customer_id="cust-1")
    for key, status in consent.items():
        channel, purpose = key.split("_")
        set_consent(state, channel, purpose, status, T0, "test")
    return state


def test_no_record_when_consent_did_not_change() -> None:
    before = _state(email_marketing="opted_in")
    after = before.clone()
    after.preferences.time_zone = "Europe/Paris"  # another change: no consent record
    assert consent_note(before, after, T0, "tutti.consent") is None
    assert consent_note(before, before, T0, "tutti.consent") is None
    assert consent_note(None, CustomerState(customer_id="new"), T0, "tutti.consent") is None


def test_a_withdrawal_publishes_the_whole_map_with_the_changed_key_and_processing_time() -> None:
    before = _state(email_marketing="opted_in", sms_marketing="opted_in")
    after = before.clone()
    # The event says it happened an hour ago; what counts is when the worker applied it.
    set_consent(after, "sms", "marketing", "opted_out", T0 - timedelta(hours=1), "stop")
    set_consent(after, "sms", "marketing", "opted_out", T0 + timedelta(seconds=1), "stop")
    noted = T0 + timedelta(minutes=5)
    out = consent_note(before, after, noted, "p.tutti.consent")
    assert out is not None
    assert (out.topic, out.key) == ("p.tutti.consent", b"cust-1")
    doc = json.loads(out.value)
    assert doc == {
        "noted_at": int(noted.timestamp() * 1000),
        "consent": {"email:marketing": "opted_in", "sms:marketing": "opted_out"},
        "changed": ["sms:marketing"],
    }
    snapshot = decode_consent(out.key, out.value)
    assert snapshot == ConsentSnapshot(
        "cust-1",
        doc["noted_at"],
        {"email:marketing": "opted_in", "sms:marketing": "opted_out"},
        frozenset({"sms:marketing"}),
    )
    assert "@" not in out.value.decode()  # ids and statuses only, no contact point


def test_a_first_consent_on_a_new_profile_is_published() -> None:
    out = consent_note(None, _state(email_marketing="opted_out"), T0, "tutti.consent")
    assert out is not None
    assert decode_consent(out.key, out.value).changed == {"email:marketing"}  # type: ignore[union-attr]


def test_an_erasure_is_left_to_the_erasure_branch_and_a_tombstone_decodes_to_none() -> None:
    assert consent_note(_state(email_marketing="opted_out"), None, T0, "tutti.consent") is None
    assert decode_consent(b"cust-1", None) is None


@pytest.mark.parametrize(
    "key, value",
    [(None, b"{}"), (b"c", b"not json"), (b"c", b'{"consent": {}}'), (b"c", b"[1]")],
)
def test_a_bad_record_is_a_value_error(key: bytes | None, value: bytes) -> None:
    with pytest.raises(ValueError):
        decode_consent(key, value)


def test_the_purpose_rule_is_the_engines() -> None:
    assert consent_key("email", "marketing") == "email:marketing"
    assert consent_key("email", "transactional") == "email:transactional"
    assert consent_key("sms", "service") == "sms:transactional"  # service rides on transactional


def test_withheld_when_withdrawn_at_or_after_the_decision() -> None:
    assert withheld_by(1000, 1000)
    assert withheld_by(1001, 1000)
    assert not withheld_by(999, 1000)  # the engine knew of it: a re-grant came in between
    assert not withheld_by(None, 1000)
