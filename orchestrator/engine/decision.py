"""What `decide` returns: the new state, actions due now, wake-ups, outcomes and explanations.

`Action.to_record()` and `Outcome.to_record()` give dicts whose keys are exactly the fields of
`schemas/Action.avsc` and `schemas/JourneyOutcome.avsc` (timestamps as aware datetimes, which
fastavro writes as timestamp-millis). `Action.from_record()` is the way back, for the senders,
which read the same `Action` type the engine writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from orchestrator.engine.signals import Money, WakeUp
from orchestrator.engine.state import CustomerState
from orchestrator.engine.timeutil import to_iso

__all__ = [
    "REASON_CODES",
    "Action",
    "Decision",
    "Explanation",
    "ExplanationKind",
    "Outcome",
    "OutcomeKind",
    "stable_id",
]

#: Every reason code an explanation can carry (docs/journeys.md explains each).
REASON_CODES = (
    "sent",
    "frequency_cap",
    "quiet_hours",
    "no_consent",
    "unreachable",
    "ticket_open",
    "suppressed_after_purchase",
    "kill_switch",
    "journey_paused",
    "offer_in_flight",
    "lost_arbitration",
    "expired",
    "holdout",
    "send_time",
    "awaiting_approval",
    "rejected",
    "erased",
    "condition_error",
)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(value: Any) -> datetime:
    """What fastavro hands back for timestamp-millis (an aware datetime, or epoch ms as an int)
    as an aware UTC datetime; ints are converted exactly, to the millisecond. (A naive datetime
    is read as local time, as ``datetime.timestamp()`` does.)"""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    try:
        return _EPOCH + timedelta(milliseconds=int(value))
    except OverflowError as exc:
        raise ValueError(f"epoch millis {value!r} out of range") from exc


def _enum(value: Any) -> str:
    return str(value) if value is not None else "UNKNOWN"


def stable_id(*parts: object) -> str:
    """A deterministic id from its parts (sha256; never `hash()`, never the clock)."""
    text = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Action:
    """A message to send now; maps 1:1 onto schemas/Action.avsc."""

    action_id: str
    customer_id: str
    channel: str
    journey_id: str
    journey_version: int
    step_id: str
    template_id: str
    category: str
    created_at: datetime
    not_before: datetime
    expires_at: datetime
    reason: str
    variant: str | None = None
    offer_id: str | None = None
    destination: str | None = None  # personal data: never logged, never in explanations
    locale: str | None = None
    priority: int = 0
    requires_approval: bool = False
    payload: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Action:
        """An Action from a decoded schemas/Action.avsc record (timestamps as datetimes or epoch
        ms, enums as str). Fields an older writer may have left out take their defaults: version
        1, empty step and reason, category UNKNOWN, priority 0, no approval, empty payload."""
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
            created_at=_instant(record["created_at"]),
            not_before=_instant(record["not_before"]),
            expires_at=_instant(record["expires_at"]),
            reason=str(record.get("reason", "")),
            payload=dict(record.get("payload") or {}),
        )

    def to_record(self) -> dict[str, Any]:
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
            "created_at": self.created_at,
            "not_before": self.not_before,
            "expires_at": self.expires_at,
            "reason": self.reason,
            "payload": dict(self.payload),
        }


#: ``deferred``: a due send was moved on (quiet hours, lost arbitration, send-time choice) or
#: held (an open ticket, a paused journey, an operator's approval), with the reason code.
#: ``segment_entered`` / ``segment_exited``: the customer joined or left a segment (journey id
#: ``segment:<id>``; engine/membership.py), counted by analytics into the segment's size.
OutcomeKind = Literal[
    "entered",
    "step",
    "sent",
    "suppressed",
    "deferred",
    "converted",
    "exited",
    "segment_entered",
    "segment_exited",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """Something that happened to an enrolment; maps 1:1 onto schemas/JourneyOutcome.avsc."""

    outcome_id: str
    journey_id: str
    journey_version: int
    customer_id: str
    kind: OutcomeKind
    occurred_at: datetime
    step_id: str | None = None
    variant: str | None = None
    holdout: bool = False
    channel: str | None = None
    action_id: str | None = None
    reason: str | None = None
    revenue: Money | None = None

    def to_record(self) -> dict[str, Any]:
        return {
            "outcome_id": self.outcome_id,
            "journey_id": self.journey_id,
            "journey_version": self.journey_version,
            "customer_id": self.customer_id,
            "kind": self.kind,
            "step_id": self.step_id,
            "variant": self.variant,
            "holdout": self.holdout,
            "channel": self.channel,
            "action_id": self.action_id,
            "reason": self.reason,
            "revenue": None if self.revenue is None else self.revenue.to_dict(),
            "occurred_at": self.occurred_at,
        }


ExplanationKind = Literal["sent", "suppressed", "deferred", "held", "info"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why something was (or was not) sent. Never contains personal data."""

    customer_id: str
    kind: ExplanationKind
    code: str
    message: str
    at: datetime
    journey_id: str | None = None
    journey_version: int | None = None
    step_id: str | None = None
    channel: str | None = None
    action_id: str | None = None
    until: datetime | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "kind": self.kind,
            "code": self.code,
            "message": self.message,
            "at": to_iso(self.at),
            "journey_id": self.journey_id,
            "journey_version": self.journey_version,
            "step_id": self.step_id,
            "channel": self.channel,
            "action_id": self.action_id,
            "until": None if self.until is None else to_iso(self.until),
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The result of one `decide` call. `state is None` means: delete the customer."""

    customer_id: str
    state: CustomerState | None
    actions: tuple[Action, ...] = ()
    wakeups: tuple[WakeUp, ...] = ()
    outcomes: tuple[Outcome, ...] = ()
    explanations: tuple[Explanation, ...] = ()

    @property
    def suppressions(self) -> tuple[Explanation, ...]:
        return tuple(e for e in self.explanations if e.kind == "suppressed")
