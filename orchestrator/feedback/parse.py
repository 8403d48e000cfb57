"""Provider callbacks, verified and turned into Tutti's records (pure: no I/O).

Three shapes are accepted (docs/channels/callbacks.md):

- **generic** JSON, signed like Tutti's own webhooks (``Tutti-Signature: t=..,v1=HMAC-SHA256``
  over ``"<t>." + body`` with ``feedback.secret``): ``{"events": [{"id", "type", "action_id",
  "customer_id", "channel", "occurred_at", "reason"?, "url"?}]}``;
- **Mailgun**-style event webhook (an SMTP relay's): JSON ``{"signature": {"timestamp", "token",
  "signature"}, "event-data": {...}}``, HMAC-SHA256 of ``timestamp + token`` with
  ``feedback.mailgun_signing_key``; Tutti's ids ride in ``user-variables``
  (``tutti_action_id``, ``tutti_customer_id``) — set them as custom variables when sending;
- **Twilio**-style SMS status callback: a form POST (``MessageSid``, ``MessageStatus``,
  ``ErrorCode``...), ``X-Twilio-Signature`` = base64 HMAC-SHA1 of the full callback URL followed
  by the sorted form fields, with ``feedback.twilio_auth_token``; Tutti's ids in the callback
  URL's query (``?action_id=..&customer_id=..``).

Each callback becomes a :class:`Feedback`: a delivery receipt (delivered, bounced, failed) for
``feedback.delivery``, or a customer event (``message_opened``, ``message_clicked``, and a
complaint as a marketing opt-out ``consent_changed``) for ``events.<channel>``. Ids are derived
from the provider's event id, so a callback the provider retries produces the same records and
the worker applies them once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from orchestrator.engine.timeutil import to_datetime
from orchestrator.senders.model import DeliveryReceipt
from orchestrator.senders.signing import SignatureError, verify
from orchestrator.vocabulary import ACTION_CHANNELS

__all__ = [
    "CallbackError",
    "Feedback",
    "from_generic",
    "from_mailgun",
    "from_twilio",
    "twilio_signature",
]

Kind = Literal["delivered", "bounced", "failed", "complained", "opened", "clicked"]
#: Callbacks older than this are refused (a replayed capture, not a retry).
MAX_AGE_S = 24 * 3600


class CallbackError(ValueError):
    """A callback that is not accepted; ``status`` is the HTTP answer (401 forged, 400 bad)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Feedback:
    """One provider event about one action."""

    provider: str
    event_id: str  # the provider's id of this event: the key of idempotence
    kind: Kind
    action_id: str
    customer_id: str
    channel: str
    occurred_at: datetime
    reason: str | None = None
    provider_message_id: str | None = None
    url: str | None = None

    def receipt(self) -> dict[str, Any] | None:
        """The DeliveryReceipt record, for delivered / bounced / failed."""
        if self.kind not in ("delivered", "bounced", "failed"):
            return None
        return DeliveryReceipt(
            action_id=self.action_id,
            customer_id=self.customer_id,
            channel=self.channel,
            journey_id=None,
            status=self.kind,
            occurred_at_ms=int(self.occurred_at.timestamp() * 1000),
            reason=self.reason,
            provider=self.provider,
            provider_message_id=self.provider_message_id,
        ).to_record()

    def event(self) -> dict[str, Any] | None:
        """The CustomerEvent record, for opened / clicked / complained."""
        if self.kind not in ("opened", "clicked", "complained"):
            return None
        base: dict[str, Any] = {
            "event_id": f"cb-{self.provider}-{self.event_id}",
            "event_time": self.occurred_at,
            "channel": self.channel if self.channel != "in_app" else "app",
            "identities": {"customer_id": self.customer_id},
            "message": {
                "action_id": self.action_id,
                "provider_message_id": self.provider_message_id,
            },
        }
        if self.kind == "complained":
            # A spam complaint: no more marketing on that channel (RFC 8058's spirit).
            consent = {
                "channel": self.channel,
                "purpose": "marketing",
                "status": "opted_out",
                "source": f"{self.provider}_complaint",
            }
            return {**base, "event_type": "consent_changed", "consent": consent}
        attributes = {"url": self.url[:2048]} if self.url else {}
        event_type = "message_opened" if self.kind == "opened" else "message_clicked"
        return {**base, "event_type": event_type, "attributes": attributes}


def _required(d: Mapping[str, Any], name: str, where: str) -> str:
    value = d.get(name)
    if not isinstance(value, str) or not value:
        raise CallbackError(f"{where}: {name} is missing")
    return value


def _channel(value: Any, where: str) -> str:
    if value not in ACTION_CHANNELS:
        raise CallbackError(f"{where}: channel {value!r} is not an action channel")
    return str(value)


def _fresh(at: datetime, now: float, where: str) -> datetime:
    if now - at.timestamp() > MAX_AGE_S:
        raise CallbackError(f"{where}: the event is more than a day old")
    return at


_GENERIC_KINDS = ("delivered", "bounced", "failed", "complained", "opened", "clicked")


def from_generic(
    body: bytes, signature: str | None, secret: str, now: float | None = None
) -> list[Feedback]:
    now = time.time() if now is None else now
    try:
        verify(secret, signature, body, now=now)
    except SignatureError as exc:
        raise CallbackError(f"signature refused: {exc}", 401) from None
    try:
        doc = json.loads(body)
        items = doc["events"]
        if not isinstance(items, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CallbackError('expected {"events": [...]} JSON') from None
    out = []
    for n, item in enumerate(items):
        where = f"events[{n}]"
        if not isinstance(item, Mapping):
            raise CallbackError(f"{where}: expected an object")
        kind = item.get("type")
        if kind not in _GENERIC_KINDS:
            raise CallbackError(f"{where}: type {kind!r} is not one of {', '.join(_GENERIC_KINDS)}")
        try:
            at = to_datetime(item.get("occurred_at"))
        except ValueError as exc:
            raise CallbackError(f"{where}: occurred_at: {exc}") from None
        out.append(
            Feedback(
                "generic",
                _required(item, "id", where),
                kind,
                _required(item, "action_id", where),
                _required(item, "customer_id", where),
                _channel(item.get("channel"), where),
                _fresh(at, now, where),
                item.get("reason"),
                item.get("provider_message_id"),
                item.get("url"),
            )
        )
    return out


_MAILGUN_KINDS: dict[str, Kind] = {
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "complained": "complained",
}


def from_mailgun(body: bytes, signing_key: str, now: float | None = None) -> list[Feedback]:
    now = time.time() if now is None else now
    try:
        doc = json.loads(body)
        sig = doc["signature"]
        data = doc["event-data"]
        timestamp, token, given = str(sig["timestamp"]), str(sig["token"]), str(sig["signature"])
    except (ValueError, KeyError, TypeError):
        raise CallbackError('expected Mailgun JSON with "signature" and "event-data"') from None
    expected = hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), given):
        raise CallbackError("signature refused: not signed with feedback.mailgun_signing_key", 401)
    try:
        if abs(now - float(timestamp)) > 300:
            raise CallbackError("signature refused: timestamp older than 5 minutes", 401)
    except ValueError:
        raise CallbackError("signature refused: bad timestamp", 401) from None
    where = "event-data"
    event = data.get("event")
    variables = data.get("user-variables") or {}
    kind: Kind | None = _MAILGUN_KINDS.get(str(event))
    reason = None
    if event == "failed":
        permanent = data.get("severity") == "permanent"
        kind = "bounced" if permanent else "failed"
        status = data.get("delivery-status") or {}
        reason = (
            f"{status.get('code', '')} {status.get('description') or status.get('message') or ''}".strip()[
                :500
            ]
            or None
        )
    if kind is None:
        raise CallbackError(f"{where}: event {event!r} is not one Tutti uses")
    try:
        at = datetime.fromtimestamp(float(data["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError):
        raise CallbackError(f"{where}: timestamp is missing") from None
    message = (data.get("message") or {}).get("headers") or {}
    return [
        Feedback(
            "mailgun",
            _required(data, "id", where),
            kind,
            _required(variables, "tutti_action_id", f"{where}.user-variables"),
            _required(variables, "tutti_customer_id", f"{where}.user-variables"),
            "email",
            _fresh(at, now, where),
            reason,
            message.get("message-id"),
            data.get("url"),
        )
    ]


def twilio_signature(auth_token: str, url: str, form: Mapping[str, str]) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 of the URL and the sorted form fields."""
    payload = url + "".join(f"{k}{form[k]}" for k in sorted(form))
    mac = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


_TWILIO_KINDS: dict[str, Kind] = {
    "delivered": "delivered",
    "undelivered": "bounced",
    "failed": "failed",
}


def from_twilio(
    url: str,
    form: Mapping[str, str],
    query: Mapping[str, str],
    signature: str | None,
    auth_token: str,
    now: float | None = None,
) -> list[Feedback]:
    """``url``: the full callback URL as Twilio called it (scheme, host, path and query)."""
    now = time.time() if now is None else now
    if not signature or not hmac.compare_digest(twilio_signature(auth_token, url, form), signature):
        raise CallbackError("signature refused: X-Twilio-Signature does not match", 401)
    status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    kind = _TWILIO_KINDS.get(status)
    if kind is None:
        return []  # queued, sending, sent: nothing the profile needs
    where = "callback"
    channel = "whatsapp" if str(form.get("To", "")).startswith("whatsapp:") else "sms"
    code = form.get("ErrorCode")
    sid = _required(form, "MessageSid", where)
    return [
        Feedback(
            "twilio",
            f"{sid}:{status}",
            kind,
            _required(query, "action_id", f"{where} URL"),
            _required(query, "customer_id", f"{where} URL"),
            channel,
            datetime.fromtimestamp(now, UTC),
            f"twilio error {code}" if code else None,
            sid,
        )
    ]
