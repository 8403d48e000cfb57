"""The one place that lists every Kafka topic Tutti reads or writes, and how each is made.

Customer-keyed topics share one partition count so a customer's records co-partition with the
`customers` table; anything keyed otherwise (identifiers, products, journeys) is repartitioned
before it touches customer state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orchestrator.config import TopicSettings
from orchestrator.vocabulary import ACTION_CHANNELS, INBOUND_CHANNELS

__all__ = ["TopicSpec", "Topics"]

KeyedBy = Literal["customer", "identifier", "product", "journey", "channel", "none"]

_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    keyed_by: KeyedBy
    schema: str | None
    purpose: str
    config: dict[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return "compact" in self.config.get("cleanup.policy", "delete")


class Topics:
    """Topic names and specs for one prefix and partition count."""

    def __init__(self, settings: TopicSettings | None = None) -> None:
        self.settings = settings or TopicSettings()
        self._prefix = self.settings.prefix

    def _n(self, name: str) -> str:
        return f"{self._prefix}{name}"

    # -- names -------------------------------------------------------------------------------
    def events(self, channel: str) -> str:
        if channel not in INBOUND_CHANNELS:
            raise ValueError(f"unknown inbound channel {channel!r}")
        return self._n(f"events.{channel}")

    def actions(self, channel: str) -> str:
        if channel not in ACTION_CHANNELS:
            raise ValueError(f"unknown action channel {channel!r}")
        return self._n(f"actions.{channel}")

    @property
    def dead_letters(self) -> str:
        return self._n("events.dlq")

    @property
    def dead_letters_replayed(self) -> str:
        return self._n("events.dlq-replayed")

    @property
    def audit(self) -> str:
        return self._n("tutti.audit")

    @property
    def identity(self) -> str:
        return self._n("tutti.identity")

    @property
    def customer_events(self) -> str:
        return self._n("tutti.customer-events")

    @property
    def product_interest(self) -> str:
        return self._n("tutti.product-interest")

    @property
    def outcomes(self) -> str:
        return self._n("tutti.outcomes")

    @property
    def analytics_feed(self) -> str:
        """The outcomes again, bundled per batch and journey partition, for the analytics
        agent (agents.analytics): one delivery per bundle instead of one per outcome."""
        return self._n("tutti.analytics-feed")

    @property
    def consent(self) -> str:
        """Each customer's consent map when it changes, for the senders (orchestrator.consent)."""
        return self._n("tutti.consent")

    @property
    def delivery_feedback(self) -> str:
        return self._n("feedback.delivery")

    @property
    def control_journeys(self) -> str:
        return self._n("control.journeys")

    @property
    def control_commands(self) -> str:
        return self._n("control.commands")

    # -- specs -------------------------------------------------------------------------------
    def all(self) -> list[TopicSpec]:
        p = self.settings.partitions
        delete_7d = {"cleanup.policy": "delete", "retention.ms": str(7 * _DAY_MS)}
        compact = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
        specs = [
            TopicSpec(
                self.events(c),
                p,
                "customer",
                "CustomerEvent",
                f"inbound {c} events from upstream systems",
                dict(delete_7d),
            )
            for c in INBOUND_CHANNELS
        ]
        specs += [
            TopicSpec(
                self.actions(c),
                p,
                "customer",
                "Action",
                f"{c} actions for the {c} sender",
                dict(delete_7d),
            )
            for c in ACTION_CHANNELS
        ]
        specs += [
            TopicSpec(
                self.dead_letters,
                p,
                "none",
                "DeadLetter",
                "records that failed decoding or validation, with reason and bytes",
                {
                    "cleanup.policy": "delete",
                    "retention.ms": str(self.settings.dlq_retention_days * _DAY_MS),
                },
            ),
            TopicSpec(
                self.audit,
                1,
                "none",
                None,
                "the audit trail: operator commands as issued, and as each worker applied them",
                {
                    "cleanup.policy": "delete",
                    "retention.ms": str(self.settings.audit_retention_days * _DAY_MS),
                },
            ),
            TopicSpec(
                self.dead_letters_replayed,
                1,
                "none",
                None,
                "dead letters already replayed (tutti dlq replay), keyed by their DLQ position",
                {"cleanup.policy": "compact"},
            ),
            TopicSpec(
                self.identity,
                p,
                "identifier",
                "CustomerEvent",
                "events to resolve, keyed by identifier",
                dict(delete_7d),
            ),
            TopicSpec(
                self.customer_events,
                p,
                "customer",
                None,
                "events, wake-ups, merges, feedback and commands keyed by customer id",
                dict(delete_7d),
            ),
            TopicSpec(
                self.product_interest,
                p,
                "product",
                None,
                "product interest updates and catalog events keyed by product id",
                dict(delete_7d),
            ),
            TopicSpec(
                self.outcomes,
                p,
                "journey",
                "JourneyOutcome",
                "journey outcomes for measurement, keyed by journey id",
                dict(delete_7d),
            ),
            TopicSpec(
                self.analytics_feed,
                p,
                "journey",
                None,
                "the outcomes bundled per batch for the analytics agent (internal)",
                dict(delete_7d),
            ),
            TopicSpec(
                self.consent,
                p,
                "customer",
                None,
                "each customer's consent map when it changes, read by every sender (internal)",
                dict(compact),
            ),
            TopicSpec(
                self.delivery_feedback,
                p,
                "customer",
                "DeliveryReceipt",
                "delivery receipts from senders",
                dict(delete_7d),
            ),
            TopicSpec(
                self.control_journeys,
                1,
                "journey",
                None,
                "published journey definitions (a version's first text wins)",
                dict(compact),
            ),
            TopicSpec(
                self.control_commands,
                1,
                "none",
                "ControlCommand",
                "operator commands: pause/resume, kill switches, erase, approve",
                dict(compact),
            ),
        ]
        return specs

    def by_name(self, name: str) -> TopicSpec:
        for spec in self.all():
            if spec.name == name:
                return spec
        raise KeyError(name)
