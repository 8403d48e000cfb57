"""The sender's domain records: the Action it reads and the DeliveryReceipt it writes.

Decoded Avro dicts become frozen records here, at the edge, with times as epoch milliseconds
so that the loop, the providers and the tests never juggle datetimes and time zones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["Action", "DeliveryReceipt", "DeliveryStatus", "SendResult", "receipt_id", "to_ms"]

DeliveryStatus = Literal[
    "sent", "delivered", "failed", "bounced", "expired", "duplicate_skipped", "rejected"
]


def to_ms(value: Any) -> int:
    """Epoch milliseconds from what fastavro hands back for timestamp-millis (datetime or int)."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def _enum(value: Any) -> str:
    return str(value) if value is not None else "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Action:
    """A message to deliver (schemas/Action.avsc). ``destination`` is personal data: never log."""

    action_id: str
    customer_id: str
    channel: str
    journey_id: str
    template_id: str
    created_at_ms: int
    not_before_ms: int
    expires_at_ms: int
    journey_version: int = 1
    step_id: str = ""
    variant: str | None = None
    offer_id: str | None = None
    destination: str | None = None
    locale: str | None = None
    priority: int = 0
    category: str = "UNKNOWN"
    requires_approval: bool = False
    reason: str = ""
    payload: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Action:
        return cls(
            action_id=str(record["action_id"]),
            customer_id=str(record["customer_id"]),
            channel=_enum(record.get("channel")),
            journey_id=str(record["journey_id"]),
            journey_version=int(record.get("journey_version", 1)),
            step_id=str(record.get("step_id", "")),
            variant=record.get("variant"),
            template_id=str(record["template_id"]),
            offer_id=record.get("offer_id"),
            destination=record.get("destination"),
            locale=record.get("locale"),
            priority=int(record.get("priority", 0)),
            category=_enum(record.get("category")),
            requires_approval=bool(record.get("requires_approval", False)),
            created_at_ms=to_ms(record["created_at"]),
            not_before_ms=to_ms(record["not_before"]),
            expires_at_ms=to_ms(record["expires_at"]),
            reason=str(record.get("reason", "")),
            payload=dict(record.get("payload") or {}),
        )

    def to_record(self) -> dict[str, Any]:
        """The Avro-shaped dict (used by tests, the benchmark and the simulator)."""
        return {
            "action_id": self.action_id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "journey_id": self.journey_id,
            "journey_version": self.journey_version,
            "step_id": self.step_id,
            "variant": self.variant,
            "template_id": self.template_id,
            "offer_id": self.offer_id,
            "destination": self.destination,
            "locale": self.locale,
            "priority": self.priority,
            "category": self.category,
            "requires_approval": self.requires_approval,
            "created_at": self.created_at_ms,
            "not_before": self.not_before_ms,
            "expires_at": self.expires_at_ms,
            "reason": self.reason,
            "payload": dict(self.payload),
        }


@dataclass(frozen=True, slots=True)
class SendResult:
    """What a provider says when it accepted a message."""

    provider_message_id: str | None = None


def receipt_id(action_id: str, status: str) -> str:
    """Deterministic: a re-emitted receipt (after a crash) carries the same id, so readers dedupe."""
    return f"{action_id}:{status}"


@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """What the sender did with one action (schemas/DeliveryReceipt.avsc)."""

    action_id: str
    customer_id: str
    channel: str
    journey_id: str | None
    status: DeliveryStatus
    occurred_at_ms: int
    reason: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    attempts: int = 1
    latency_ms: int | None = None

    @property
    def receipt_id(self) -> str:
        return receipt_id(self.action_id, self.status)

    @classmethod
    def for_action(
        cls, action: Action, status: DeliveryStatus, occurred_at_ms: int, **extra: Any
    ) -> DeliveryReceipt:
        return cls(
            action_id=action.action_id,
            customer_id=action.customer_id,
            channel=action.channel,
            journey_id=action.journey_id,
            status=status,
            occurred_at_ms=occurred_at_ms,
            **extra,
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "receipt_id": self.receipt_id,
            "action_id": self.action_id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "journey_id": self.journey_id,
            "status": self.status,
            "reason": self.reason,
            "provider": self.provider,
            "provider_message_id": self.provider_message_id,
            "attempts": self.attempts,
            "latency_ms": self.latency_ms,
            "occurred_at": self.occurred_at_ms,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeliveryReceipt:
        return cls(
            action_id=str(record["action_id"]),
            customer_id=str(record["customer_id"]),
            channel=str(record["channel"]),
            journey_id=record.get("journey_id"),
            status=record["status"],
            occurred_at_ms=to_ms(record["occurred_at"]),
            reason=record.get("reason"),
            provider=record.get("provider"),
            provider_message_id=record.get("provider_message_id"),
            attempts=int(record.get("attempts", 1)),
            latency_ms=record.get("latency_ms"),
        )
