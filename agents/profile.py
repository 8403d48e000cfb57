"""Profile agent on the customer-keyed topic: load the state, apply the signal, save it once.

Faust is at-least-once in practice, so every update is idempotent: the state keeps the ids of
the recent events it applied (the engine's own `decide` does the same), so a redelivered event
changes nothing and writes nothing; a merge is recorded in ``merged_from`` and never applied
twice. Merges take two hops on this topic: ``merge`` (keyed by the absorbed id: a provisional
profile, or the greater id of two known customers) sends the absorbed profile as ``absorb`` to
the surviving customer's partition, deletes it, and leaves an alias (tables.aliases): any later
record keyed by the absorbed id - an upstream system still sending it, a receipt, an operator
command, a merge with a third profile - is forwarded to the survivor.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from agents.app import TuttiWorker
from agents.identity import merge_pair
from agents.signals import (
    SIGNAL_ABSORB,
    SIGNAL_EVENT,
    SIGNAL_FORGET,
    SIGNAL_HEADER,
    SIGNAL_MERGE,
    SIGNAL_WAKEUP,
    signal_kind,
)
from orchestrator.catalog import CATALOG_EVENT_TYPES
from orchestrator.engine.profile import apply_event, lifecycle_stage
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import MAX_EVENT_IDS, CustomerState, merge_states
from orchestrator.errors import TuttiError
from tables.codec import decode_state, encode_state

__all__ = ["for_survivor", "register_profile", "update_profile"]

log = logging.getLogger(__name__)

ABSORB = [(SIGNAL_HEADER, SIGNAL_ABSORB)]
MERGE = [(SIGNAL_HEADER, SIGNAL_MERGE)]


def for_survivor(record: dict[str, Any], absorbed: str, survivor: str) -> dict[str, Any]:
    """An event record sent to an absorbed id, rewritten for the profile that absorbed it.

    A catalog event fanned out to the absorbed id carries the derived event id
    ``<catalog event id>:<absorbed id>`` (orchestrator.catalog.fan_out); it becomes the id the
    survivor's own fan-out gets, so the survivor hears of one price drop once, not twice.
    """
    event_id = str(record["event_id"])
    suffix = f":{absorbed}"
    if record.get("event_type") in CATALOG_EVENT_TYPES and event_id.endswith(suffix):
        event_id = event_id[: -len(suffix)] + f":{survivor}"
    identities = {**(record.get("identities") or {}), "customer_id": survivor}
    return {**record, "event_id": event_id, "identities": identities}


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
    aliases = worker.aliases

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

    async def forward(msg: Any, kind: bytes | None, absorbed: str, survivor: str) -> None:
        """A record for a customer id that was merged away: on to the profile that has it."""
        if kind == SIGNAL_WAKEUP:
            return  # the absorbed enrolments' wake-ups moved with the profile
        value = bytes(msg.value or b"")
        key = survivor
        if kind == SIGNAL_MERGE:
            # "absorbed and X are one person": so are the survivor and X.
            other = value.decode()
            if other in (survivor, absorbed):
                return  # already done (links keep re-asserting an absorbed id)
            keep, gone = merge_pair(survivor, other)
            key, value = gone, keep.encode()
        elif kind == SIGNAL_EVENT:
            record = worker.codec.decode(value, "CustomerEvent", msg.topic)
            value = worker.codec.encode_single_object(
                "CustomerEvent", for_survivor(record, absorbed, survivor)
            )
        headers = [(SIGNAL_HEADER, kind)] if kind is not None else []
        await customer_events.send(key=key.encode(), value=value, headers=headers)

    async def profile(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            kind = signal_kind(msg)
            if kind == SIGNAL_FORGET and msg.key:
                # The customer an absorbed id points to was erased: the alias goes too.
                aliases.forget(bytes(msg.key).decode(), bytes(msg.value or b"").decode())
                continue
            survivor = aliases.survivor(msg.key) if msg.key else None
            if survivor is not None:
                try:
                    await forward(msg, kind, bytes(msg.key).decode(), survivor)
                except (TuttiError, ValueError) as exc:
                    await to_dead_letters(msg, exc, datetime.now(UTC))
                continue
            # Events, wake-ups, receipts and per-customer commands: decide + write + emit.
            if worker.journeys is not None and await worker.journeys.handle(msg):
                continue
            now = datetime.now(UTC)
            try:
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
                    # The profile moves to the survivor, then disappears; its id stays an alias.
                    survivor = bytes(msg.value).decode()
                    if survivor == customer_id:
                        continue
                    absorbed = customers.load(customer_id)
                    if absorbed is not None:
                        await customer_events.send(
                            key=survivor.encode(), value=encode_state(absorbed), headers=ABSORB
                        )
                        customers.delete(customer_id)
                        if worker.journeys is not None:  # its wake-ups move with it
                            worker.journeys.note_write(msg.partition, None, customer_id)
                    aliases.record(customer_id, survivor)
                elif kind == SIGNAL_ABSORB:
                    absorbed = decode_state(msg.value)
                    found, outbox = customers.load_record(customer_id)
                    state = found or CustomerState(customer_id=customer_id)
                    if absorbed.customer_id not in state.merged_from:
                        merged = merge_states(state, absorbed)
                        customers.save(merged, outbox)  # keep the decide step's outbox
                        if worker.journeys is not None:  # the absorbed enrolments' wake-ups
                            worker.journeys.note_write(msg.partition, merged, customer_id)
                else:
                    raise ValueError(f"unknown signal kind {kind!r}")
            except (TuttiError, ValueError) as exc:  # ValueError: UnicodeDecodeError too
                await to_dead_letters(msg, exc, now)

    profile.__name__ = profile.__qualname__ = "profile"
    worker.app.agent(source, name="profile", concurrency=1)(profile)
