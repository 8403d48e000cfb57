"""The sender's domain records: the DeliveryReceipt it writes, and the provider's SendResult.

The Action it reads is the engine's own (:class:`orchestrator.engine.decision.Action`, built
from the decoded Avro dict by ``Action.from_record``): one type from decision to delivery. The
sender works in epoch milliseconds (its clock, the dedupe store, the receipts); :func:`to_ms`
turns an action's datetimes into them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.engine.decision import Action
from orchestrator.engine.signals import DeliveryStatus  # one list of receipt statuses

__all__ = ["DeliveryReceipt", "DeliveryStatus", "SendResult", "receipt_id", "to_ms"]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(value: Any) -> int:
    """Epoch milliseconds from a datetime (an Action's times, what fastavro hands back for
    timestamp-millis) or an int. Aware datetimes are converted exactly, as fastavro does."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return int(value.timestamp() * 1000)
        return (value - _EPOCH) // _MS
    return int(value)


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
