"""Profile agent on the customer-keyed topic: load the state, apply the signal, save it once.

Faust is at-least-once in practice, so every update is idempotent: the state keeps the ids of
the recent events it applied (the engine's own `decide` does the same), so a redelivered event
changes nothing and writes nothing; a merge is recorded in ``merged_from`` and never applied
twice. Merges take two hops on this topic: ``merge`` (keyed by the provisional id) sends the
provisional profile as ``absorb`` to the surviving customer's partition and deletes it there.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from agents.app import TuttiWorker
from agents.signals import SIGNAL_ABSORB, SIGNAL_EVENT, SIGNAL_HEADER, SIGNAL_MERGE, signal_kind
from orchestrator.engine.profile import apply_event, lifecycle_stage
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import MAX_EVENT_IDS, CustomerState, merge_states
from orchestrator.errors import TuttiError
from tables.codec import decode_state, encode_state

__all__ = ["register_profile", "update_profile"]

log = logging.getLogger(__name__)

ABSORB = [(SIGNAL_HEADER, SIGNAL_ABSORB)]


def update_profile(state: CustomerState, event: CustomerEvent, now: datetime) -> bool:
    """Apply ``event`` to ``state`` in place unless it was applied already. True if applied."""
    if event.event_id in state.recent_event_ids:
        return False
    state.recent_event_ids.append(event.event_id)
    del state.recent_event_ids[:-MAX_EVENT_IDS]
    apply_event(state, event)
    state.lifecycle_stage = lifecycle_stage(state, now)
    return True


def register_profile(worker: TuttiWorker) -> None:
    source = worker.topic(worker.topics.customer_events)
    dead_letters = worker.topic(worker.topics.dead_letters)
    customer_events = worker.topic(worker.topics.customer_events)
    customers = worker.customers

    async def to_dead_letters(msg: Any, exc: Exception, now: datetime) -> None:
        # Ingest and resolve only forward valid records: this is a bug or a foreign producer.
        log.error(
            "profile: cannot use %s[%d]@%d: %s: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            type(exc).__name__,
            exc,
        )
        await dead_letters.send(key=msg.key, value=worker.dead_letter_value(msg, exc, now))

    async def profile(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            # Events, wake-ups, receipts and per-customer commands: decide + write + emit.
            if worker.journeys is not None and await worker.journeys.handle(msg):
                continue
            now = datetime.now(UTC)
            try:
                kind = signal_kind(msg)
                if not msg.key:
                    raise ValueError("record without a customer id key")
                customer_id = bytes(msg.key).decode()
                if kind == SIGNAL_EVENT:
                    record = worker.codec.decode(msg.value, "CustomerEvent", msg.topic)
                    event = CustomerEvent.from_dict(record)
                    state = customers.load_or_new(customer_id)
                    if update_profile(state, event, now):
                        customers.save(state)  # one changelog record per applied event
                elif kind == SIGNAL_MERGE:
                    # A provisional profile moves to its customer, then disappears.
                    survivor = bytes(msg.value).decode()
                    absorbed = customers.load(customer_id)
                    if absorbed is not None and survivor != customer_id:
                        await customer_events.send(
                            key=survivor.encode(), value=encode_state(absorbed), headers=ABSORB
                        )
                        customers.delete(customer_id)
                        if worker.journeys is not None:  # its wake-ups move with it
                            worker.journeys.note_write(msg.partition, None, customer_id)
                elif kind == SIGNAL_ABSORB:
                    absorbed = decode_state(msg.value)
                    state = customers.load_or_new(customer_id)
                    if absorbed.customer_id not in state.merged_from:
                        merged = merge_states(state, absorbed)
                        customers.save(merged)
                        if worker.journeys is not None:  # the absorbed enrolments' wake-ups
                            worker.journeys.note_write(msg.partition, merged, customer_id)
                else:
                    raise ValueError(f"unknown signal kind {kind!r}")
            except (TuttiError, ValueError) as exc:  # ValueError: UnicodeDecodeError too
                await to_dead_letters(msg, exc, now)

    profile.__name__ = profile.__qualname__ = "profile"
    worker.app.agent(source, name="profile", concurrency=1)(profile)
