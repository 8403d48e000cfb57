"""Profile agent on the customer-keyed topic: load the state, apply the event, save it once.

Faust is at-least-once in practice, so the update is idempotent: the state keeps the ids of the
recent events it applied (the engine's own `decide` does the same) and a redelivered event
changes nothing and writes nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from agents.app import TuttiWorker
from agents.ingest import SIGNAL_EVENT, SIGNAL_HEADER
from orchestrator.engine.profile import apply_event, lifecycle_stage
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import MAX_EVENT_IDS, CustomerState
from orchestrator.ingest import dead_letter

__all__ = ["register_profile", "update_profile"]

log = logging.getLogger(__name__)


def update_profile(state: CustomerState, event: CustomerEvent, now: datetime) -> bool:
    """Apply ``event`` to ``state`` in place unless it was applied already. True if applied."""
    if event.event_id in state.recent_event_ids:
        return False
    state.recent_event_ids.append(event.event_id)
    del state.recent_event_ids[:-MAX_EVENT_IDS]
    apply_event(state, event)
    state.lifecycle_stage = lifecycle_stage(state, now)
    return True


def _signal_kind(message: Any) -> bytes | None:
    raw = message.headers or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    for key, value in pairs:
        if key == SIGNAL_HEADER:
            return bytes(value) if value is not None else None
    return None


def register_profile(worker: TuttiWorker) -> None:
    source = worker.topic(worker.topics.customer_events)
    dead_letters = worker.topic(worker.topics.dead_letters)
    customers = worker.customers

    async def profile(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            # Events, wake-ups, receipts and per-customer commands: decide + write + emit.
            if worker.journeys is not None and await worker.journeys.handle(msg):
                continue
            now = datetime.now(UTC)
            try:
                kind = _signal_kind(msg)
                if kind != SIGNAL_EVENT:
                    raise ValueError(f"unknown signal kind {kind!r} on {msg.topic}")
                if not msg.key:
                    raise ValueError("record without a customer id key")
                customer_id = bytes(msg.key).decode()
                record = worker.codec.decode(msg.value, "CustomerEvent", msg.topic)
                event = CustomerEvent.from_dict(record)
                state = customers.load_or_new(customer_id)
            except Exception as exc:
                # Ingest only forwards valid records: this is a bug or a foreign producer.
                log.exception("profile: cannot use %s[%d]@%d", msg.topic, msg.partition, msg.offset)
                letter = dead_letter(
                    key=msg.key,
                    value=msg.value,
                    headers=msg.headers or [],
                    source_topic=msg.topic,
                    source_partition=msg.partition,
                    source_offset=msg.offset,
                    error=exc,
                    failed_at=now,
                    worker=worker.name,
                )
                value = worker.codec.encode_single_object("DeadLetter", letter)
                await dead_letters.send(key=msg.key, value=value)
                continue
            if update_profile(state, event, now):
                customers.save(state)  # one changelog record per applied event

    profile.__name__ = profile.__qualname__ = "profile"
    worker.app.agent(source, name="profile", concurrency=1)(profile)
