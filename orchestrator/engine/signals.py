"""What can happen to a customer: the signals `decide` accepts, as frozen domain objects.

`CustomerEvent.from_dict` takes either the fastavro-decoded dict of `schemas/CustomerEvent.avsc`
or the simulator's JSON dict (same field names; event_time as ISO-8601 with offset or epoch
millis), so the live worker and the simulator feed the engine the very same objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from orchestrator.engine.errors import SignalError
from orchestrator.engine.timeutil import to_datetime

__all__ = [
    "CommandKind",
    "ConsentChange",
    "CustomerCommand",
    "CustomerEvent",
    "DeliveryFeedback",
    "Identities",
    "LoyaltyRef",
    "MessageRef",
    "Money",
    "OrderLine",
    "OrderRef",
    "PersonRef",
    "Preferences",
    "ProductRef",
    "Signal",
    "SupportRef",
    "WakeUp",
]


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is None or value == "":
        return None
    return str(value)


def _section(d: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = d.get(key)
    if value is None or type(value) is dict:  # the usual cases, without an ABC check
        return value
    # fastavro may decode a named union branch as a (name, value) tuple when asked to.
    if isinstance(value, tuple) and len(value) == 2:
        value = value[1]
    if not isinstance(value, Mapping):
        raise SignalError(f"field {key!r}: expected an object, got {type(value).__name__}")
    return value


def _enum(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return None if text in ("", "UNKNOWN") else text


@dataclass(frozen=True, slots=True)
class Money:
    """Exact amount: integer minor units and ISO 4217 currency."""

    amount_minor: int
    currency: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Money | None:
        if d is None:
            return None
        try:
            return cls(int(d["amount_minor"]), str(d["currency"]).upper())
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SignalError(f"money: expected amount_minor and currency, got {d!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {"amount_minor": self.amount_minor, "currency": self.currency}


@dataclass(frozen=True, slots=True)
class Identities:
    customer_id: str | None = None
    anonymous_id: str | None = None
    device_id: str | None = None
    email: str | None = None
    phone: str | None = None
    loyalty_card: str | None = None
    push_token: str | None = None

    KINDS = (
        "customer_id",
        "anonymous_id",
        "device_id",
        "email",
        "phone",
        "loyalty_card",
        "push_token",
    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Identities:
        d = d or {}
        return cls(**{k: _opt_str(d, k) for k in cls.KINDS})

    def items(self) -> list[tuple[str, str]]:
        """(kind, value) pairs that are set, in a fixed order."""
        return [(k, v) for k in self.KINDS if (v := getattr(self, k)) is not None]

    def customer_key(self) -> str | None:
        """The key a profile is stored under: the brand's id, else a prefixed anonymous id."""
        if self.customer_id:
            return self.customer_id
        for kind in ("anonymous_id", "device_id", "loyalty_card"):
            value = getattr(self, kind)
            if value:
                return f"{kind}:{value}"
        for kind in ("email", "phone", "push_token"):
            value = getattr(self, kind)
            if value:  # personal data never becomes a key: a digest stands in for it
                return f"{kind}#{hashlib.sha256(value.encode()).hexdigest()[:16]}"
        return None


@dataclass(frozen=True, slots=True)
class ProductRef:
    product_id: str
    category: str | None = None
    name: str | None = None
    price: Money | None = None
    previous_price: Money | None = None
    quantity: int = 1
    image_url: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ProductRef | None:
        if d is None:
            return None
        return cls(
            # category_view events may carry only a category: keep an empty product id.
            product_id=str(d.get("product_id") or ""),
            category=_opt_str(d, "category"),
            name=_opt_str(d, "name"),
            price=Money.from_dict(_section(d, "price")),
            previous_price=Money.from_dict(_section(d, "previous_price")),
            quantity=int(d.get("quantity") or 1),
            image_url=_opt_str(d, "image_url"),
        )


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: str
    quantity: int = 1
    unit_price: Money | None = None


@dataclass(frozen=True, slots=True)
class OrderRef:
    order_id: str
    total: Money
    store_id: str | None = None
    items: tuple[OrderLine, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> OrderRef | None:
        if d is None:
            return None
        total = Money.from_dict(_section(d, "total"))
        if not d.get("order_id") or total is None:
            raise SignalError("order: order_id and total are required")
        items = tuple(
            OrderLine(
                product_id=str(i["product_id"]),
                quantity=int(i.get("quantity") or 1),
                unit_price=Money.from_dict(_section(i, "unit_price")),
            )
            for i in (d.get("items") or [])
        )
        return cls(str(d["order_id"]), total, _opt_str(d, "store_id"), items)


@dataclass(frozen=True, slots=True)
class ConsentChange:
    channel: str
    purpose: str | None  # None: the whole channel (e.g. an unsubscribe with no purpose)
    status: str | None
    source: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ConsentChange | None:
        if d is None:
            return None
        if not d.get("channel"):
            raise SignalError("consent.channel is required")
        return cls(
            channel=str(d["channel"]),
            purpose=_enum(d.get("purpose")),
            status=_enum(d.get("status")),
            source=_opt_str(d, "source"),
        )


@dataclass(frozen=True, slots=True)
class SupportRef:
    ticket_id: str
    topic: str | None = None
    severity: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SupportRef | None:
        if d is None:
            return None
        if not d.get("ticket_id"):
            raise SignalError("support.ticket_id is required")
        return cls(str(d["ticket_id"]), _opt_str(d, "topic"), _opt_str(d, "severity"))


@dataclass(frozen=True, slots=True)
class MessageRef:
    action_id: str | None = None
    journey_id: str | None = None
    provider_message_id: str | None = None
    reply_text: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> MessageRef | None:
        if d is None:
            return None
        return cls(
            _opt_str(d, "action_id"),
            _opt_str(d, "journey_id"),
            _opt_str(d, "provider_message_id"),
            _opt_str(d, "reply_text"),
        )


@dataclass(frozen=True, slots=True)
class Preferences:
    time_zone: str | None = None
    language: str | None = None
    quiet_hours_start: str | None = None
    quiet_hours_end: str | None = None
    preferred_channel: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Preferences | None:
        if d is None:
            return None
        return cls(
            _opt_str(d, "time_zone"),
            _opt_str(d, "language"),
            _opt_str(d, "quiet_hours_start"),
            _opt_str(d, "quiet_hours_end"),
            _opt_str(d, "preferred_channel"),
        )


@dataclass(frozen=True, slots=True)
class LoyaltyRef:
    tier: str | None = None
    points: int | None = None
    points_delta: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> LoyaltyRef | None:
        if d is None:
            return None
        points = d.get("points")
        delta = d.get("points_delta")
        return cls(
            _opt_str(d, "tier"),
            None if points is None else int(points),
            None if delta is None else int(delta),
        )


@dataclass(frozen=True, slots=True)
class PersonRef:
    """Who the customer is, as messages name them (the ``person`` section)."""

    first_name: str | None = None
    last_name: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PersonRef | None:
        if d is None:
            return None
        return cls(_opt_str(d, "first_name"), _opt_str(d, "last_name"))


@dataclass(frozen=True, slots=True)
class CustomerEvent:
    """One thing a customer did (or that happened to them), from any channel."""

    event_id: str
    event_time: datetime
    channel: str | None
    event_type: str
    identities: Identities
    product: ProductRef | None = None
    order: OrderRef | None = None
    consent: ConsentChange | None = None
    support: SupportRef | None = None
    message: MessageRef | None = None
    preferences: Preferences | None = None
    loyalty: LoyaltyRef | None = None
    person: PersonRef | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CustomerEvent:
        """Build from a fastavro-decoded record or the simulator's JSON object."""
        try:
            event_id = str(d["event_id"])
            event_type = str(d["event_type"])
            raw_time = d["event_time"]
        except KeyError as exc:
            raise SignalError(f"event: missing required field {exc.args[0]!r}") from exc
        if not event_id or not event_type:
            raise SignalError("event: event_id and event_type must not be empty")
        try:
            event_time = to_datetime(raw_time)
        except ValueError as exc:
            raise SignalError(f"event {event_id}: event_time: {exc}") from exc
        try:
            identities = Identities.from_dict(_section(d, "identities"))
        except (TypeError, ValueError, AttributeError) as exc:
            raise SignalError(f"event {event_id}: identities: {exc}") from exc
        if not identities.items():
            raise SignalError(f"event {event_id}: identities: at least one identifier is required")
        try:
            return cls(
                event_id=event_id,
                event_time=event_time,
                channel=_enum(d.get("channel")),
                event_type=event_type,
                identities=identities,
                product=ProductRef.from_dict(_section(d, "product")),
                order=OrderRef.from_dict(_section(d, "order")),
                consent=ConsentChange.from_dict(_section(d, "consent")),
                support=SupportRef.from_dict(_section(d, "support")),
                message=MessageRef.from_dict(_section(d, "message")),
                preferences=Preferences.from_dict(_section(d, "preferences")),
                loyalty=LoyaltyRef.from_dict(_section(d, "loyalty")),
                person=PersonRef.from_dict(_section(d, "person")),
                attributes={str(k): str(v) for k, v in (d.get("attributes") or {}).items()},
            )
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SignalError(f"event {event_id}: malformed section: {exc}") from exc

    @property
    def customer_key(self) -> str | None:
        return self.identities.customer_key()


@dataclass(frozen=True, slots=True)
class WakeUp:
    """A timer firing for a customer. `token` names the enrolment step (or inactivity check) it
    was scheduled for; a token that no longer matches the state makes the wake-up a no-op."""

    customer_id: str
    due_at: datetime
    token: str

    def to_dict(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "due_at": self.due_at, "token": self.token}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WakeUp:
        try:
            return cls(str(d["customer_id"]), to_datetime(d["due_at"]), str(d["token"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise SignalError(f"wake-up: {exc}") from exc


DeliveryStatus = Literal[
    "sent",
    "delivered",
    "failed",
    "bounced",
    "expired",
    "duplicate_skipped",
    "rejected",
    "suppressed",
]


@dataclass(frozen=True, slots=True)
class DeliveryFeedback:
    """What a sender did with an action (from a `DeliveryReceipt`)."""

    receipt_id: str
    action_id: str
    customer_id: str
    channel: str
    status: str
    occurred_at: datetime
    journey_id: str | None = None
    reason: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DeliveryFeedback:
        try:
            return cls(
                receipt_id=str(d["receipt_id"]),
                action_id=str(d["action_id"]),
                customer_id=str(d["customer_id"]),
                channel=str(d["channel"]),
                status=_enum(d.get("status")) or "unknown",
                occurred_at=to_datetime(d["occurred_at"]),
                journey_id=_opt_str(d, "journey_id"),
                reason=_opt_str(d, "reason"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise SignalError(f"delivery receipt: {exc}") from exc


CommandKind = Literal["erase_customer", "approve_action", "reject_action"]


@dataclass(frozen=True, slots=True)
class CustomerCommand:
    """An operator command about one customer: erase them, approve or reject a held action."""

    command_id: str
    customer_id: str
    kind: CommandKind
    target: str | None = None  # the action id for approve/reject
    issued_by: str = "operator"
    issued_at: datetime | None = None
    reason: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], customer_id: str | None = None) -> CustomerCommand:
        """From a ControlCommand dict; for erase the target is the customer id."""
        kind = _enum(d.get("kind"))
        if kind not in ("erase_customer", "approve_action", "reject_action"):
            raise SignalError(f"command: kind {kind!r} is not a per-customer command")
        target = _opt_str(d, "target")
        cid = customer_id or (target if kind == "erase_customer" else None)
        if not cid:
            raise SignalError(f"command {kind}: the customer id is required")
        issued_at = d.get("issued_at")
        return cls(
            command_id=str(d.get("command_id") or ""),
            customer_id=cid,
            kind=kind,  # type: ignore[arg-type]
            target=target,
            issued_by=str(d.get("issued_by") or "operator"),
            issued_at=None if issued_at is None else to_datetime(issued_at),
            reason=_opt_str(d, "reason"),
        )


Signal = CustomerEvent | WakeUp | DeliveryFeedback | CustomerCommand
