"""What a decision sends: Avro Action records to the per-channel action topics (keyed by
customer id) and JourneyOutcome records to the outcomes topic (keyed by journey id).

Pure apart from encoding, so the worker's agent stays "decode, decide, save, emit" and tests can
check the records without a broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.codec import AvroCodec
from orchestrator.engine.decision import Decision
from orchestrator.topics import Topics

__all__ = ["Outbound", "decision_records"]


@dataclass(frozen=True, slots=True)
class Outbound:
    """One record to send. ``headers``: the worker's internal signal kind, where it has one."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def decision_records(decision: Decision, topics: Topics, codec: AvroCodec) -> list[Outbound]:
    """Actions first (they are what customers notice), then outcomes."""
    out: list[Outbound] = []
    for action in decision.actions:
        topic = topics.actions(action.channel)
        out.append(
            Outbound(
                topic,
                action.customer_id.encode(),
                codec.encode("Action", action.to_record(), topic),
            )
        )
    for outcome in decision.outcomes:
        topic = topics.outcomes
        out.append(
            Outbound(
                topic,
                outcome.journey_id.encode(),
                codec.encode("JourneyOutcome", outcome.to_record(), topic),
            )
        )
    return out
