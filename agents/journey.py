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

from agents.control import ControlFollower
from agents.faust_workarounds import committed_offset, input_positions
from agents.signals import (
    FORGET_HEADERS,
    INTEREST_HEADERS,
    LINK_HEADERS,
    SIGNAL_COMMAND,
    SIGNAL_EVENT,
    SIGNAL_FEEDBACK,
    SIGNAL_HEADER,
    SIGNAL_WAKEUP,
)
from agents.watermarks import InputWatermarks
from agents.worker import TuttiWorker
from orchestrator.audit import audit_record, encode_audit
from orchestrator.catalog import encode_interest, interests_to_note, products_of
from orchestrator.consent import consent_note
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
from orchestrator.engine.state import next_wakeup_at
from orchestrator.engine.timeutil import to_iso
from orchestrator.erasure import admits, erasure_time
from orchestrator.identity import identifier_keys_of, links_to_assert
from orchestrator.wakeups import WakeUpIndex
from tables.outbox import Outbox, replay_for, with_entry

__all__ = [
    "JOURNEY_SIGNALS",
    "JourneyStep",
    "StepStats",
    "decode_wakeup",
    "encode_wakeup",
    "journey_summary",
    "register_feedback",
]

log = logging.getLogger(__name__)

#: A customer id whose decisions with actions (or whose merge into another profile) kill the
#: worker right after the batch's state writes (see JourneyStep.crash_for_test). Only the
#: outbox and merge crash tests set it; never set in production.
CRASH_AFTER_STATE_WRITE: Final = os.environ.get("TUTTI_TEST_CRASH_AFTER_STATE_WRITE") or None

#: The worker's exit status when a batch's decisions for a customer, decided again, fail
#: (JourneyStep._decide_again; sysexits EX_SOFTWARE).
EXIT_DECIDED_DIFFERENTLY: Final = 70

#: The signal kinds the decide step owns; the profile agent hands these to it.
JOURNEY_SIGNALS: Final = frozenset({SIGNAL_EVENT, SIGNAL_WAKEUP, SIGNAL_FEEDBACK, SIGNAL_COMMAND})
#: Signals whose value is an upstream record, in the registry's framing when so configured.
_REGISTRY_FRAMED: Final = frozenset({SIGNAL_EVENT, SIGNAL_FEEDBACK, SIGNAL_COMMAND})


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
        # Segment id -> when the customer entered it (engine/membership.py).
        "segments": {sid: to_iso(at) for sid, at in sorted(state.segments.items())},
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
    #: Wake-up records met before their partition's inputs were read up to them (a crash, a
    #: rebalance): handed back to the timer.
    early_wakeups: int = 0
    #: Held writes rebuilt after a decision in place failed (JourneyStep._decide_again).
    decided_again: int = 0


class ConditionErrorLog:
    """Logs condition errors (explanation ``condition_error``: a journey condition that could
    not be evaluated on a profile) at most once per journey every ``every`` seconds: a journey
    that does not fit thousands of profiles would otherwise flood the log. The metric
    (``tutti_worker_journey_errors_total``) counts every one."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.unlogged: dict[str, int] = {}

    def note(self, decision: Decision) -> None:
        for e in decision.explanations:
            if e.code != "condition_error":
                continue
            journey = e.journey_id or ""
            at = time.monotonic()
            if at - self.last.get(journey, -self.every) < self.every:
                self.unlogged[journey] = self.unlogged.get(journey, 0) + 1
                continue
            self.last[journey] = at
            more = self.unlogged.pop(journey, 0)
            log.warning(
                "journey %s v%s, customer %s: %s%s",
                journey,
                e.journey_version,
                e.customer_id,
                e.message,
                f" ({more} more for this journey since the last report)" if more else "",
            )


class JourneyStep:
    """Everything the customer agent needs to run `decide` on one signal."""

    def __init__(
        self,
        worker: TuttiWorker,
        control: ControlFollower,
        index: WakeUpIndex,
        inputs: InputWatermarks | None = None,
    ) -> None:
        self.worker = worker
        self.control = control
        self.index = index
        #: Where the customer agent records each batch it processed (the timer's watermarks).
        self.inputs = inputs
        self.stats = StepStats()
        self.condition_errors = ConditionErrorLog()
        #: Set by the fault hook (CRASH_AFTER_STATE_WRITE): the batch dies once its writes are made.
        self.crash_after_writes = False

    def parse(self, kind: bytes, customer_id: str, msg: Any) -> Signal:
        codec, topics = self.worker.codec, self.worker.topics
        if kind == SIGNAL_EVENT:
            record = codec.decode(msg.value, "CustomerEvent", msg.topic)
            if not (record.get("identities") or {}).get("customer_id"):
                # Resolved by the identity hop: the customer is the key (agents.identity sends
                # the event as it came, not decoded and re-encoded to write the id in).
                record["identities"] = {
                    **(record.get("identities") or {}),
                    "customer_id": customer_id,
                }
            return CustomerEvent.from_dict(record)
        if kind == SIGNAL_WAKEUP:
            return decode_wakeup(customer_id, bytes(msg.value))
        if kind == SIGNAL_FEEDBACK:
            receipt = codec.decode(msg.value, "DeliveryReceipt", topics.delivery_feedback)
            return DeliveryFeedback.from_dict(receipt)
        if kind == SIGNAL_COMMAND:
            command = codec.decode(msg.value, "ControlCommand", topics.control_commands)
            return CustomerCommand.from_dict(command, customer_id)
        raise ValueError(f"signal kind {kind!r} is not the decide step's")

    async def handle(
        self,
        msg: Any,
        kind: bytes,
        customer_id: str | None = None,
        signal: Signal | None = None,
        links: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """Decide one journey signal: ``msg`` is the source record (its position keys the
        outbox); ``customer_id`` and ``signal`` when the caller decoded them already (an
        inbound event decided straight from its channel topic), else from ``msg``; ``links``:
        the identity links the event carries (only those new to the profile are sent)."""
        await self.control.wait_ready()
        if signal is None and kind in _REGISTRY_FRAMED:
            # A schema id new to this process is fetched off the event loop (never per record).
            await self.worker.codec.prepare_patiently(msg.value, msg.topic, "decide")
        now = datetime.now(UTC)
        try:
            if customer_id is None:
                if not msg.key:
                    raise ValueError("record without a customer id key")
                customer_id = bytes(msg.key).decode()
            if signal is None:
                signal = self.parse(kind, customer_id, msg)
            customers = self.worker.customers
            state, outbox = customers.load_record(customer_id)
            replay = replay_for(outbox, msg.partition, msg.offset, msg.topic)
            if replay is not None:
                # Redelivered after a crash between the state write and the sends: send what
                # was decided then, decide nothing (tables.outbox). The state is written again:
                # the crash may have come before its changelog record left (local RocksDB is
                # ahead of the changelog then), and another worker restores from the changelog.
                if state is not None:
                    customers.save(state, outbox)
                await self._resend(replay.records)
                return
            if isinstance(signal, WakeUp) and state is not None and self._early(msg, signal, now):
                # Fired before a crash or by a partition's previous owner, and this worker has
                # not read the partition's inputs up to it yet (agents.watermarks). Back to
                # the timer, which fires it again once they are read.
                self.index.update(msg.partition, state)
                self.stats.early_wakeups += 1
                if self.stats.early_wakeups & (self.stats.early_wakeups - 1) == 0:  # 1, 2, 4...
                    log.info(
                        "wake-up records met before their partition's inputs were read up to "
                        "them, handed back to the timer: %d so far",
                        self.stats.early_wakeups,
                    )
                return
            notes = self._profile_notes(customer_id, state, signal, links)
            erasing = erasure_time(signal, now)
            erasures = self.worker.erasures
            erased_at = erasures.erased_at(customer_id) if state is None or erasing else None
            if erasing is not None and (erased_at is None or erasing > erased_at):
                erasures.record(customer_id, erasing)
            if not admits(state, signal, erased_at):
                # Nothing may bring a gone customer's profile back (orchestrator.erasure): a
                # late receipt, wake-up or command, a catalog fan-out, an event from before
                # the erasure.
                await self._resend(notes)
                return
            if isinstance(signal, WakeUp):
                now = max(now, signal.due_at)  # a worker clock behind the one that fired it
                arrived = signal.due_at
            else:
                arrived = _record_time(msg, now)
            started = time.perf_counter()
            # An event decides on the state itself, not a copy (copying a 10 KB state was
            # ~30 us), when nothing else holds it but the state cache - the customer's first
            # signal in this batch - or when the batch's held write for the customer is made
            # of decisions alone, which can be decided again should this one fail half way.
            owned = (
                state is not None
                and isinstance(signal, CustomerEvent)
                and (
                    not customers.pending_for(customer_id)
                    or customers.decided_in_batch(customer_id) is not None
                )
            )
            previous: Any = _Before.of(state) if owned and state is not None else state
            rules = self.control.rules
            try:
                # Arbitration windows close on when the signal reached the pipeline, not on
                # this clock: a backlog is grouped as the simulator groups it.
                decision = decide(state, signal, now, rules, arrived_at=arrived, owned=owned)
            except Exception:
                if owned and customers.pending_for(customer_id):
                    self._decide_again(customer_id)  # the held write as it was
                elif owned:  # half changed: the next signal reads the stored state again
                    customers.forget_cached(customer_id)
                raise
            decided_in = time.perf_counter() - started
            self.stats.decide_seconds += decided_in
            self.condition_errors.note(decision)
        except Exception as exc:
            await self._dead_letter(msg, exc, now)
            return
        if isinstance(signal, CustomerCommand):
            # The audit trail's acknowledgement, sent with the decision's records.
            notes = [*notes, self._acknowledgement(signal, customer_id, decision)]
        # A consent change goes to the senders too (rare: a record only when it changed), in
        # the outbox with the state, so it is never lost to a crash (orchestrator.consent).
        if change := consent_note(previous, decision.state, now, self.worker.topics.consent):
            notes = [*notes, change]
        # Counted with the state write (commit's first await comes after it): the timer may
        # recount the partition from the table while the records are being sent.
        self.worker.metrics.enrolments.change(msg.partition, previous, decision.state)
        await self.commit(
            msg,
            customer_id,
            previous,
            decision,
            outbox=outbox,
            notes=notes,
            decided=(signal, now, rules, arrived),
        )
        handled_in = time.perf_counter() - started
        self.stats.handle_seconds += handled_in
        self.stats.signals += 1
        label = kind.decode()
        self.stats.by_kind[label] = self.stats.by_kind.get(label, 0) + 1
        self.worker.metrics.decided(label, signal, decision, decided_in, handled_in)

    def _decide_again(self, customer_id: str) -> None:
        """The customer's held write rebuilt after a decision on it in place failed half way:
        the batch's earlier decisions for the customer, decided again from the stored state
        with the inputs they had. The engine is deterministic (orchestrator.engine: no clock,
        no unseeded randomness), so this is the state those decisions held, whose actions
        are on their way. Should that fail, the process stops at once (as the fail-stop store
        does, agents.faust_workarounds): an exception would only crash the agent, and Faust
        would acknowledge the batch on the way out, its held writes never made."""
        customers = self.worker.customers
        steps = customers.decided_in_batch(customer_id) or []
        try:
            state, _ = customers.stored_record(customer_id)
            for signal, now, rules, arrived in steps:
                owned = state is not None and isinstance(signal, CustomerEvent)
                state = decide(state, signal, now, rules, arrived_at=arrived, owned=owned).state
            if state is None:
                raise ValueError("no state after them")
        except Exception as exc:
            log.critical(
                "%d decisions of this batch for one customer could not be decided again after "
                "the next one failed (%s: %s); stopping now, before the batch is written or "
                "acknowledged: its records are read again from the last commit",
                len(steps),
                type(exc).__name__,
                exc,
            )
            logging.shutdown()  # the message must reach the log before the process is gone
            os._exit(EXIT_DECIDED_DIFFERENTLY)
        customers.replace_held(state)
        self.stats.decided_again += 1

    def _early(self, msg: Any, wakeup: WakeUp, now: datetime) -> bool:
        """A wake-up record fired under another claim on its partition than this worker's
        timer holds, due after how far this worker has processed the partition's inputs (the
        record itself counted). One our timer fired passed that gate when it fired."""
        if self.inputs is None or self.inputs.fired_here(msg.partition, msg.headers):
            return False
        positions = input_positions(self.worker.app)
        return not self.inputs.reached_for(msg, wakeup.due_at, now, *positions)

    def _acknowledgement(
        self, command: CustomerCommand, customer_id: str, decision: Decision
    ) -> Outbound:
        """``applied`` on the audit trail: what the command did to this customer."""
        done = {"approve_action": "approved", "reject_action": "rejected"}.get(command.kind)
        if command.kind == "erase_customer":
            outcome = "erased: profile, identity links, product interest and wake-ups removed"
        elif decision.actions:
            outcome = f"{done}: sent {', '.join(a.action_id for a in decision.actions)}"
        else:
            codes = sorted({e.code for e in decision.explanations}) or ["nothing pending"]
            outcome = f"{done}: {', '.join(codes)}"
        record = audit_record(
            "applied",
            command.kind,
            command.target or customer_id,
            outcome,
            command_id=command.command_id,
            worker=f"{self.worker.name}:{self.worker.settings.worker.web_port}",
        )
        key, value = encode_audit(record)
        return Outbound(self.worker.topics.audit, key, value)

    def _profile_notes(
        self,
        customer_id: str,
        state: CustomerState | None,
        signal: Signal,
        links: tuple[tuple[bytes, bytes], ...],
    ) -> list[Outbound]:
        """What an event tells the identity and product-interest indexes that they do not know
        yet: identity links new to the profile (orchestrator.identity.links_to_assert) and product
        interest the index would not ignore (orchestrator.catalog.interests_to_note)."""
        if not isinstance(signal, CustomerEvent):
            return []
        topics = self.worker.topics
        notes = [
            Outbound(topics.identity, identifier, customer, LINK_HEADERS)
            for identifier, customer in links_to_assert(links, signal.event_type, state)
        ]
        notes += [
            Outbound(
                topics.product_interest,
                interest.product_id.encode(),
                encode_interest(interest),
                INTEREST_HEADERS,
            )
            for interest in interests_to_note(signal, customer_id, state)
        ]
        return notes

    async def commit(
        self,
        msg: Any,
        customer_id: str,
        previous: CustomerState | _Before | None,
        decision: Decision,
        *,
        outbox: Outbox = (),
        notes: list[Outbound] | None = None,
        decided: tuple[Signal, datetime, Any, datetime] | None = None,
    ) -> None:
        """Write the state once (or erase it), index its wake-ups, send actions and outcomes.

        The records to send (``notes`` first: identity links and product interest, then the
        decision's actions and outcomes) are stored with the state, in the same write, under
        the source record's position (tables.outbox): a crash after the write cannot lose them.
        ``decided``: the decision's inputs (signal, clock, rules, arrival), kept with a held
        write (:meth:`_decide_again`).
        """
        customers = self.worker.customers
        records = [
            *(notes or ()),
            *decision_records(decision, self.worker.topics, self.worker.codec),
        ]
        partition = msg.partition
        if decision.state is None:
            if previous is not None:
                assert isinstance(previous, CustomerState)  # only an event's state is owned
                customers.delete(customer_id)  # the changelog gets a tombstone
                self.stats.erased += 1
                records += self._erasure_records(customer_id, previous)
                if previous.consent:  # the consent topic keeps no id of an erased customer
                    for gone in (customer_id, *previous.merged_from):
                        await self.worker.send(self.worker.topics.consent, gone.encode(), None)
            self.index.update(partition, None, customer_id)
        elif decision.state is not previous or records:
            # Journey outcomes alone may wait for a deferred write (tables.customers.
            # DeferredWrites), sent once it is made; anything else goes with this batch.
            later: list[Outbound] = []
            if records and customers.defers:
                outcomes = self.worker.topics.outcomes
                if all(out.topic == outcomes for out in records):
                    later, records = records, []
            kept = with_entry(
                outbox,
                datetime.now(UTC),
                partition,
                msg.offset,
                later or records,
                self._committed_offset,
                topic=msg.topic,
            )
            customers.save(
                decision.state,
                kept,
                decided=decided,
                sends=bool(records),
                later=[(o.topic, o.key, o.value, list(o.headers) or None) for o in later],
            )
            self.stats.writes += 1
            self.index.update(partition, decision.state)
            if decision.actions and customer_id == CRASH_AFTER_STATE_WRITE:
                self.crash_after_writes = True
                if customers.pending is None:  # not in a batch: the write is made already
                    await self.crash_for_test()
        started = time.perf_counter()
        await self._resend(records)
        self.stats.send_seconds += time.perf_counter() - started
        self.stats.actions += len(decision.actions)
        self.stats.outcomes += len(decision.outcomes)

    def _erasure_records(self, customer_id: str, previous: CustomerState) -> list[Outbound]:
        """An erased customer's identities, product interests and aliases are dropped too:
        the identities table and the product interest index (keyed by identifier and by
        product, other partitions) are told; the ids merged into this customer keep an alias
        to it (tables.aliases), which the customer agent drops."""
        topics = self.worker.topics
        known_as = "\n".join([customer_id, *previous.merged_from]).encode()
        records = [
            Outbound(topics.identity, key.encode(), known_as, FORGET_HEADERS)
            for key in identifier_keys_of(previous)
        ]
        records += [
            Outbound(
                topics.product_interest, product.encode(), customer_id.encode(), FORGET_HEADERS
            )
            for product in products_of(previous)
        ]
        records += [
            Outbound(
                topics.customer_events, absorbed.encode(), customer_id.encode(), FORGET_HEADERS
            )
            for absorbed in previous.merged_from
        ]
        return records

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

    def _committed_offset(self, topic: str, partition: int) -> int | None:
        """The offset the group committed for a source topic's ``partition``."""
        return committed_offset(self.worker.app, topic, partition)

    async def _resend(self, records: Iterable[Outbound]) -> None:
        # No awaited round trip per record: the producer batches them, and the next offset
        # commit flushes the producer before it commits (agents.producer).
        for out in records:
            await self.worker.send(out.topic, out.key, out.value, list(out.headers) or None)

    async def crash_for_test(self) -> None:
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
        await self.worker.send(self.worker.topics.dead_letters, msg.key, value)
        self.stats.dead_letters += 1


@dataclass(frozen=True)
class _Before:
    """What the worker reads of a state after deciding on it in place (``decide(owned=True)``):
    its consent (records are replaced, never changed, so a shallow copy keeps them) for the
    consent topic, and its enrolments' journeys for the enrolment gauge."""

    consent: dict[str, Any]
    enrollments: tuple[Any, ...]

    @classmethod
    def of(cls, state: CustomerState) -> _Before:
        return cls(dict(state.consent), tuple(state.enrollments))


def _record_time(msg: Any, now: datetime) -> datetime:
    """When the record reached Kafka (its timestamp, in seconds), at most ``now``."""
    stamp = getattr(msg, "timestamp", None)
    if not stamp:
        return now
    at = datetime.fromtimestamp(stamp, UTC)
    return at if at < now else now


def register_feedback(worker: TuttiWorker) -> None:
    """Forward delivery receipts to the customer-keyed topic (one writer per customer)."""
    source = worker.topic(worker.topics.delivery_feedback)
    customer_events = worker.topic(worker.topics.customer_events)

    async def route_feedback(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            # Off the event loop, and never dropped for a registry outage.
            await worker.codec.prepare_patiently(msg.value, msg.topic, "feedback")
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
