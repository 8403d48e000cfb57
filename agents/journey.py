"""The decide step of the customer agent: one signal in, one state write, records out.

For every signal on the customer-keyed topic - an event, a wake-up, a delivery receipt, a
per-customer operator command - the agent that owns the customer's partition loads the state,
calls the pure :func:`orchestrator.engine.decide` with the current rules and the processing
time, writes the new state once (or deletes it on erase), tells the wake-up index what the
customer now waits for, and sends the decision's actions and outcomes
(:func:`orchestrator.emit.decision_records`), all in the same stream step.

Redelivery (Faust is at-least-once here) is harmless: the engine returns the very same state
object for an event id it already applied, and then nothing is written or sent; a duplicate or
stale wake-up is a no-op; actions carry deterministic ids the senders deduplicate.

Also here: the forwarder that moves delivery receipts (keyed by customer on
`feedback.delivery`) onto the customer-keyed topic, so every state change has one writer.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from faust.types import TP

from agents.app import TuttiWorker
from agents.control import ControlFollower
from agents.signals import (
    SIGNAL_COMMAND,
    SIGNAL_EVENT,
    SIGNAL_FEEDBACK,
    SIGNAL_FORGET,
    SIGNAL_HEADER,
    SIGNAL_WAKEUP,
    signal_kind,
)
from orchestrator.emit import Outbound, decision_records
from orchestrator.engine import (
    CustomerCommand,
    CustomerEvent,
    CustomerState,
    Decision,
    DeliveryFeedback,
    Signal,
    WakeUp,
    decide,
)
from orchestrator.engine.signals import Identities
from orchestrator.engine.state import next_wakeup_at
from orchestrator.engine.timeutil import to_iso
from orchestrator.erasure import admits, erasure_time
from orchestrator.ingest import identifier_keys
from orchestrator.wakeups import WakeUpIndex
from tables.outbox import Outbox, replay_for, with_entry

__all__ = [
    "JOURNEY_SIGNALS",
    "JourneyStep",
    "StepStats",
    "decode_wakeup",
    "encode_wakeup",
    "identifier_keys_of",
    "journey_summary",
    "register_feedback",
]

log = logging.getLogger(__name__)

#: A customer id whose decisions with actions kill the worker right after the state write
#: (see JourneyStep._crash_for_test). Only the outbox test sets it; never set in production.
CRASH_AFTER_STATE_WRITE: Final = os.environ.get("TUTTI_TEST_CRASH_AFTER_STATE_WRITE") or None

#: The signal kinds the decide step owns; the profile agent hands these to it.
JOURNEY_SIGNALS: Final = frozenset({SIGNAL_EVENT, SIGNAL_WAKEUP, SIGNAL_FEEDBACK, SIGNAL_COMMAND})


def identifier_keys_of(state: CustomerState) -> list[str]:
    """The identities-table keys (personal values hashed) a customer's profile is known by."""
    keys: list[str] = []
    for kind, values in state.identities.items():
        if kind == "customer_id" or kind not in Identities.KINDS:
            continue
        for value in values:
            keys += identifier_keys(Identities(**{kind: value}))
    return list(dict.fromkeys(keys))


def encode_wakeup(wakeup: WakeUp) -> bytes:
    """A wake-up record's value (the key is the customer id)."""
    return json.dumps({"due_at": to_iso(wakeup.due_at), "token": wakeup.token}).encode()


def decode_wakeup(customer_id: str, value: bytes) -> WakeUp:
    doc = json.loads(value)
    return WakeUp.from_dict({"customer_id": customer_id, **doc})


def journey_summary(state: CustomerState) -> dict[str, Any]:
    """What the customer view adds for journeys: enrolments, next wake-up, last decisions."""
    due = next_wakeup_at(state)
    return {
        "active_enrolments": [
            {
                "journey_id": e.journey_id,
                "version": e.version,
                "step_id": e.step_id,
                "status": e.status,
                "variant": e.variant,
                "entered_at": to_iso(e.entered_at),
                "due_at": to_iso(e.due_at) if e.due_at else None,
                "hold_reason": e.hold_reason,
                "pending_action_id": e.pending_action_id,  # what `tutti control approve` takes
            }
            for e in state.enrollments
        ],
        "holdouts": sorted(a.journey_id for a in state.attributions if a.holdout),
        "next_wakeup_at": to_iso(due) if due else None,
        "last_decisions": [
            {
                "at": to_iso(n.at),
                "kind": n.kind,
                "code": n.code,
                "journey_id": n.journey_id,
                "step_id": n.step_id,
                "channel": n.channel,
                "action_id": n.action_id,
                "reason": n.message,
            }
            for n in reversed(state.recent_decisions[-10:])
        ],
    }


@dataclass
class StepStats:
    """Counters for logs and the benchmark (the Prometheus metrics: agents.metrics)."""

    signals: int = 0
    writes: int = 0
    erased: int = 0
    actions: int = 0
    outcomes: int = 0
    dead_letters: int = 0
    decide_seconds: float = 0.0
    handle_seconds: float = 0.0  # decide + state write + sends
    send_seconds: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)


class JourneyStep:
    """Everything the customer agent needs to run `decide` on one message."""

    def __init__(self, worker: TuttiWorker, control: ControlFollower, index: WakeUpIndex) -> None:
        self.worker = worker
        self.control = control
        self.index = index
        self.stats = StepStats()
        self._dead_letters = worker.topic(worker.topics.dead_letters)

    def parse(self, kind: bytes, customer_id: str, msg: Any) -> Signal:
        codec, topics = self.worker.codec, self.worker.topics
        if kind == SIGNAL_EVENT:
            return CustomerEvent.from_dict(codec.decode(msg.value, "CustomerEvent", msg.topic))
        if kind == SIGNAL_WAKEUP:
            return decode_wakeup(customer_id, bytes(msg.value))
        if kind == SIGNAL_FEEDBACK:
            receipt = codec.decode(msg.value, "DeliveryReceipt", topics.delivery_feedback)
            return DeliveryFeedback.from_dict(receipt)
        if kind == SIGNAL_COMMAND:
            command = codec.decode(msg.value, "ControlCommand", topics.control_commands)
            return CustomerCommand.from_dict(command, customer_id)
        raise ValueError(f"signal kind {kind!r} is not the decide step's")

    async def handle(self, msg: Any) -> bool:
        """Apply one customer-topic message if it is a journey signal. False: not ours."""
        kind = signal_kind(msg)
        if kind not in JOURNEY_SIGNALS:
            self.worker.metrics.passed_to_profile(kind)
            return False
        assert kind is not None
        await self.control.wait_ready()
        now = datetime.now(UTC)
        try:
            if not msg.key:
                raise ValueError("record without a customer id key")
            customer_id = bytes(msg.key).decode()
            signal = self.parse(kind, customer_id, msg)
            customers = self.worker.customers
            state, outbox = customers.load_record(customer_id)
            replay = replay_for(outbox, msg.partition, msg.offset)
            if replay is not None:
                # Redelivered after a crash between the state write and the sends: send what
                # was decided then, decide nothing (tables.outbox).
                await self._resend(replay.records)
                return True
            erasing = erasure_time(signal, now)
            erasures = self.worker.erasures
            erased_at = erasures.erased_at(customer_id) if state is None or erasing else None
            if erasing is not None and (erased_at is None or erasing > erased_at):
                erasures.record(customer_id, erasing)
            if not admits(state, signal, erased_at):
                # Nothing may bring a gone customer's profile back (orchestrator.erasure): a
                # late receipt, wake-up or command, a catalog fan-out, an event from before
                # the erasure.
                log.debug("decide: %s for an unknown customer skipped", kind.decode())
                return True
            if isinstance(signal, WakeUp):
                now = max(now, signal.due_at)  # a worker clock behind the one that fired it
            started = time.perf_counter()
            decision = decide(state, signal, now, self.control.rules)
            decided_in = time.perf_counter() - started
            self.stats.decide_seconds += decided_in
        except Exception as exc:
            await self._dead_letter(msg, exc, now)
            return True
        # Counted with the state write (commit's first await comes after it): the timer may
        # recount the partition from the table while the records are being sent.
        self.worker.metrics.enrolments.change(msg.partition, state, decision.state)
        await self.commit(
            msg.partition, customer_id, state, decision, offset=msg.offset, outbox=outbox
        )
        handled_in = time.perf_counter() - started
        self.stats.handle_seconds += handled_in
        self.stats.signals += 1
        self.stats.by_kind[kind.decode()] = self.stats.by_kind.get(kind.decode(), 0) + 1
        self.worker.metrics.decided(kind.decode(), signal, decision, decided_in, handled_in)
        return True

    async def commit(
        self,
        partition: int,
        customer_id: str,
        previous: CustomerState | None,
        decision: Decision,
        *,
        offset: int = -1,
        outbox: Outbox = (),
    ) -> None:
        """Write the state once (or erase it), index its wake-ups, send actions and outcomes.

        The records to send are stored with the state, in the same write, under the source
        record's ``offset`` (tables.outbox): a crash after the write cannot lose them.
        """
        customers = self.worker.customers
        records = decision_records(decision, self.worker.topics, self.worker.codec)
        if decision.state is None:
            if previous is not None:
                customers.delete(customer_id)  # the changelog gets a tombstone
                self.stats.erased += 1
                # The identities table and the product interest index (keyed by identifier
                # and by product, other partitions) are told too.
                from agents.catalog import forget_interest

                await forget_interest(self.worker, previous)
                identity = self.worker.topic(self.worker.topics.identity)
                known_as = "\n".join([customer_id, *previous.merged_from]).encode()
                for key in identifier_keys_of(previous):
                    await identity.send(
                        key=key.encode(),
                        value=known_as,
                        headers=[(SIGNAL_HEADER, SIGNAL_FORGET)],
                        force=True,
                    )
                # The ids merged into this customer keep an alias to it (tables.aliases).
                customer_topic = self.worker.topic(self.worker.topics.customer_events)
                for absorbed in previous.merged_from:
                    await customer_topic.send(
                        key=absorbed.encode(),
                        value=customer_id.encode(),
                        headers=[(SIGNAL_HEADER, SIGNAL_FORGET)],
                        force=True,
                    )
            self.index.update(partition, None, customer_id)
        elif decision.state is not previous or records:
            committed = self._committed_offset(partition)
            kept = with_entry(outbox, datetime.now(UTC), partition, offset, records, committed)
            customers.save(decision.state, kept)
            self.stats.writes += 1
            self.index.update(partition, decision.state)
            if decision.actions and customer_id == CRASH_AFTER_STATE_WRITE:
                await self._crash_for_test()
        started = time.perf_counter()
        await self._resend(records)
        self.stats.send_seconds += time.perf_counter() - started
        self.stats.actions += len(decision.actions)
        self.stats.outcomes += len(decision.outcomes)

    def log_stats(self) -> None:
        st = self.stats
        if st.signals:
            log.info(
                "decide: %d signals %s, %d writes, %d actions, %d outcomes, %d dead letters; "
                "%.2f ms decide, %.2f ms sending, %.2f ms decide+write+send per signal",
                st.signals,
                st.by_kind,
                st.writes,
                st.actions,
                st.outcomes,
                st.dead_letters,
                1000 * st.decide_seconds / st.signals,
                1000 * st.send_seconds / st.signals,
                1000 * st.handle_seconds / st.signals,
            )

    def _committed_offset(self, partition: int) -> int | None:
        """The offset the group committed for the customer topic's ``partition`` (the next one
        a restart would read), from Faust's own record of its commits; None if unknown."""
        consumer = getattr(self.worker.app, "_consumer", None)
        committed = getattr(consumer, "_committed_offset", None)
        if committed is None:
            return None
        value = committed.get(TP(self.worker.topics.customer_events, partition))
        return None if value is None else int(value)

    async def _resend(self, records: Iterable[Outbound]) -> None:
        for out in records:
            # force: publish now, not at the next commit (Faust's attachments would hold it
            # up to broker_commit_interval); the commit still flushes the producer first.
            await self.worker.topic(out.topic).send(key=out.key, value=out.value, force=True)

    async def _crash_for_test(self) -> None:
        """Fault injection for tests/integration/worker/test_outbox_live.py: die the worst
        way - the new state durable in the changelog, the decision's records never sent."""
        log.critical("TUTTI_TEST_CRASH_AFTER_STATE_WRITE: exiting after the state write")
        await self.worker.app.producer.flush()
        os._exit(70)

    def note_write(self, partition: int, state: CustomerState | None, customer_id: str) -> None:
        """Another writer of the customers table (a profile merge) changed a customer: keep
        the wake-up index in step (None: the customer was deleted)."""
        self.index.update(partition, state, customer_id)

    async def _dead_letter(self, msg: Any, exc: Exception, now: datetime) -> None:
        log.warning(
            "decide: %s[%d]@%d dead-lettered (%s)",
            msg.topic,
            msg.partition,
            msg.offset,
            type(exc).__name__,
        )
        value = self.worker.dead_letter_value(msg, exc, now, stage="decide")
        await self._dead_letters.send(key=msg.key, value=value, force=True)
        self.stats.dead_letters += 1


def register_feedback(worker: TuttiWorker) -> None:
    """Forward delivery receipts to the customer-keyed topic (one writer per customer)."""
    source = worker.topic(worker.topics.delivery_feedback)
    customer_events = worker.topic(worker.topics.customer_events)

    async def route_feedback(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            try:
                receipt = worker.codec.decode(msg.value, "DeliveryReceipt", msg.topic)
                customer = str(receipt["customer_id"])
            except Exception as exc:
                log.warning("feedback: undecodable receipt at %d (%s)", msg.offset, exc)
                continue
            await customer_events.send(
                key=customer.encode(),
                value=msg.value,
                headers=[(SIGNAL_HEADER, SIGNAL_FEEDBACK)],
                force=True,
            )

    route_feedback.__name__ = route_feedback.__qualname__ = "route_feedback"
    worker.app.agent(source, name="route_feedback", concurrency=1)(route_feedback)
