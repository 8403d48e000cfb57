"""Provider callbacks parsed and verified (orchestrator.feedback.parse): the generic JSON, a
Mailgun-style event webhook, a Twilio-style status callback; forged or stale ones refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest

from orchestrator.feedback.parse import (
    CallbackError,
    from_generic,
    from_mailgun,
    from_twilio,
    twilio_signature,
)
from orchestrator.senders.signing import signature_header

SECRET = "feedback-generic-secret-0123456789abcdef"
NOW = time.time()


def generic(*events: dict[str, object]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def item(kind: str, **over: object) -> dict[str, object]:
    return {
        "id": f"evt-{kind}",
        "type": kind,
        "action_id": "act-1",
        "customer_id": "c-1",
        "channel": "email",
        "occurred_at": datetime.fromtimestamp(NOW - 60, UTC).isoformat(),
        **over,
    }


def test_generic_events_become_receipts_and_events_with_stable_ids() -> None:
    body = generic(
        item("delivered"),
        item("bounced", reason="550 user unknown"),
        item("clicked", url="https://s/x"),
        item("complained"),
    )
    sig = signature_header(SECRET, body, int(NOW))
    parsed = from_generic(body, sig, SECRET, now=NOW)
    assert [f.kind for f in parsed] == ["delivered", "bounced", "clicked", "complained"]
    delivered, bounced, clicked, complained = parsed
    receipt = delivered.receipt()
    assert receipt is not None
    assert (receipt["receipt_id"], receipt["status"], receipt["provider"]) == (
        "act-1:delivered",
        "delivered",
        "generic",
    )
    assert bounced.receipt()["reason"] == "550 user unknown"  # type: ignore[index]
    click = clicked.event()
    assert click is not None and click["event_type"] == "message_clicked"
    assert (
        click["event_id"] == "cb-generic-evt-clicked" and click["message"]["action_id"] == "act-1"
    )
    opt_out = complained.event()
    assert opt_out is not None and opt_out["event_type"] == "consent_changed"
    assert opt_out["consent"] == {
        "channel": "email",
        "purpose": "marketing",
        "status": "opted_out",
        "source": "generic_complaint",
    }
    # The provider retries: the same records, so the worker applies them once.
    again = from_generic(body, sig, SECRET, now=NOW + 5)
    assert [f.receipt() or f.event() for f in again] == [f.receipt() or f.event() for f in parsed]


@pytest.mark.parametrize(
    ("body", "sig", "status", "words"),
    [
        (generic(item("delivered")), "t=1,v1=00", 401, "signature refused"),
        (generic(item("delivered")), None, 401, "signature refused"),
        (b"[]", "sign", 400, '{"events"'),
        (generic(item("exploded")), "sign", 400, "type 'exploded'"),
        (generic(item("delivered", channel="fax")), "sign", 400, "channel 'fax'"),
        (
            generic(item("delivered", occurred_at="2020-01-01T00:00:00Z")),
            "sign",
            400,
            "more than a day old",
        ),
    ],
)
def test_generic_refusals(body: bytes, sig: str | None, status: int, words: str) -> None:
    if sig == "sign":
        sig = signature_header(SECRET, body, int(NOW))
    with pytest.raises(CallbackError, match=words) as err:
        from_generic(body, sig, SECRET, now=NOW)
    assert err.value.status == status


MAILGUN_KEY = "key-mailgun-signing-0123456789"


def mailgun(event: str, **data: object) -> bytes:
    ts, token = str(int(NOW)), "tok-123"
    sig = hmac.new(MAILGUN_KEY.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    event_data = {
        "id": f"mg-{event}",
        "event": event,
        "timestamp": NOW - 30,
        "user-variables": {"tutti_action_id": "act-9", "tutti_customer_id": "c-9"},
        "message": {"headers": {"message-id": "<act-9@shop.example>"}},
        **data,
    }
    return json.dumps(
        {"signature": {"timestamp": ts, "token": token, "signature": sig}, "event-data": event_data}
    ).encode()


def test_mailgun_shapes() -> None:
    [bounce] = from_mailgun(
        mailgun(
            "failed",
            severity="permanent",
            **{"delivery-status": {"code": 550, "description": "mailbox unavailable"}},
        ),
        MAILGUN_KEY,
        now=NOW,
    )
    assert (bounce.kind, bounce.reason, bounce.provider_message_id) == (
        "bounced",
        "550 mailbox unavailable",
        "<act-9@shop.example>",
    )
    [soft] = from_mailgun(mailgun("failed", severity="temporary"), MAILGUN_KEY, now=NOW)
    assert soft.kind == "failed"
    [opened] = from_mailgun(mailgun("opened"), MAILGUN_KEY, now=NOW)
    assert opened.event()["event_type"] == "message_opened"  # type: ignore[index]
    with pytest.raises(CallbackError) as err:
        from_mailgun(mailgun("opened"), "another-key", now=NOW)
    assert err.value.status == 401
    with pytest.raises(CallbackError, match="not one Tutti uses"):
        from_mailgun(mailgun("stored"), MAILGUN_KEY, now=NOW)


TOKEN = "twilio-auth-token-0123"
URL = "https://hooks.shop.example/callbacks/twilio?action_id=act-7&customer_id=c-7"


def test_twilio_status_callbacks() -> None:
    form = {
        "MessageSid": "SM123",
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
        "To": "+33611223344",
    }
    [item_] = from_twilio(
        URL,
        form,
        {"action_id": "act-7", "customer_id": "c-7"},
        twilio_signature(TOKEN, URL, form),
        TOKEN,
        now=NOW,
    )
    assert (item_.kind, item_.channel, item_.reason, item_.event_id) == (
        "bounced",
        "sms",
        "twilio error 30003",
        "SM123:undelivered",
    )
    queued = {**form, "MessageStatus": "queued"}
    assert from_twilio(URL, queued, {}, twilio_signature(TOKEN, URL, queued), TOKEN, now=NOW) == []
    with pytest.raises(CallbackError) as err:
        from_twilio(URL + "&x=1", form, {}, twilio_signature(TOKEN, URL, form), TOKEN, now=NOW)
    assert err.value.status == 401
