"""The customer agent: the one reader of every customer-keyed record, deciding for each.

It reads the inbound channel topics (``events.<channel>``) and the customer topic
(``tutti.customer-events``: events resolved by the identity hop, wake-ups, receipts, operator
commands, merges), all co-partitioned: same partition count, murmur2 on the customer id, so
partition *p* of each is owned by the worker that owns partition *p* of the ``customers`` table.

- An inbound event is decoded and validated once (agents.ingest). Keyed by a customer id and on
  the partition murmur2 picks for it (the common case), it is decided right here, with no extra
  hop. Without a customer id it takes the identity hop (agents.identity); on another partition
  (a producer on CRC32 defaults, such as librdkafka's) it is re-keyed through the customer topic
  - never decided against the wrong partition's table - and counted
  (``tutti_worker_events_rerouted_total``).
- Every journey signal goes to the decide step (agents.journey.JourneyStep): load the state,
  ``decide``, write the state once with its outbox, send the records. Identity links and product
  interest are noted in the same step, and only when their index must change.
- A record for a customer id merged away is forwarded to the survivor (tables.aliases).
- Merges take two hops on the customer topic: ``merge`` (keyed by the absorbed id: a provisional
  profile, or the greater id of two known customers) sends the absorbed profile as ``absorb`` to
  the survivor's partition, deletes it and leaves an alias; ``absorb`` folds it in
  (``merge_states``), once (``merged_from``). The deletion and the alias are written only once
  the ``absorb`` record is acknowledged by Kafka, and the ``merge`` record is committed only
  after them (its ack is held: :class:`Moves`): a worker killed in between finds the profile
  still there when the ``merge`` is redelivered and sends it again (the survivor takes it
  once), where deleting first lost the profile for good. Until then the agent routes the
  absorbed id's records as if the alias were written (``CustomerAgent.moving``). The batch
  does not wait for the acknowledgement: the deletions are written at the start of a later
  batch, or by a timer when the stream is quiet, or when partitions are revoked (after the
  producer's flush). Awaiting a producer flush in every batch with a merge cost 20-30 ms of
  the p99 event-to-action latency on a live mix (seventeenth session, docs/worker.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from faust import current_event

from agents.bundles import bundle_sends
from agents.faust_workarounds import (
    as_current_event,
    commit_floor,
    hold_ack,
    send_direct_changelogs,
    take_batches,
)
from agents.ingest import DeadLettered, route_with_retry
from agents.journey import CRASH_AFTER_STATE_WRITE, JOURNEY_SIGNALS
from agents.signals import (
    ABSORB_HEADERS,
    EVENT_HEADERS,
    INTEREST_HEADERS,
    LINK_HEADERS,
    OUTCOME_HEADERS,
    SIGNAL_ABSORB,
    SIGNAL_EVENT,
    SIGNAL_FORGET,
    SIGNAL_HEADER,
    SIGNAL_MERGE,
    SIGNAL_WAKEUP,
    signal_kind,
)
from agents.watermarks import customer_inputs
from agents.worker import INGEST_CHANNELS, HeldSend, TuttiWorker
from orchestrator.catalog import encode_interest, interests_from_state
from orchestrator.consent import consent_note
from orchestrator.engine.state import CustomerState, merge_states
from orchestrator.errors import TuttiError
from orchestrator.identity import for_survivor, redirect_merge
from orchestrator.partitioning import partition_for
from orchestrator.vocabulary import ACTION_CHANNELS
from tables.codec import decode_state, encode_state

__all__ = ["CustomerAgent", "register_customer_agent"]

log = logging.getLogger(__name__)

#: Records decided per batch at most; how long a batch waits to fill is ``worker.batch_within_ms``
#: (the latency a quiet stream pays: a lone event waits this long at most).
BATCH_MAX: Final = 500

#: How often a quiet agent writes the merges whose ``absorb`` records were acknowledged.
MOVES_EVERY_S: Final = 0.1

#: Fault injection for the merge crash test (tests/integration/worker/test_identity_merge.py):
#: the worker commits, then dies just before deleting this absorbed id. Never set in production.
CRASH_BEFORE_MOVE: Final = os.environ.get("TUTTI_TEST_CRASH_BEFORE_MOVE") or None


@dataclass
class Moves:
    """One batch's merges: (merge record's event, absorbed id, survivor) each, and how many
    of the ``absorb`` records carrying the profiles Kafka has not acknowledged yet.

    Each merge record's ack is held (agents.faust_workarounds.hold_ack) until its deletion and
    alias are written, so its offset is committed only after them."""

    entries: list[tuple[Any, str, str]] = field(default_factory=list)
    unacknowledged: int = 0
    #: The headers of this batch's ``absorb`` records: one list, so the batch's sends tell
    #: them by identity from an ``absorb`` merely forwarded to a survivor (equal headers).
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: list(ABSORB_HEADERS))

    def delivered(self) -> None:
        self.unacknowledged -= 1


class CustomerAgent:
    """What the agent does with each record; ``worker.journeys`` is the decide step."""

    def __init__(self, worker: TuttiWorker) -> None:
        self.worker = worker
        self.topics = worker.topics
        self.partitions = worker.settings.topics.partitions
        self.channel_of = {worker.topics.events(c): c for c in INGEST_CHANNELS}
        self.encodings_ready = False
        #: The merges not written yet: absorbed id -> survivor; this batch's (None: none yet),
        #: then the earlier batches' in order, written once their ``absorb`` records are
        #: acknowledged (:meth:`write_moves`).
        self.moving: dict[str, str] = {}
        self.moves: Moves | None = None
        self.unwritten: deque[Moves] = deque()
        #: The stream the agent iterates: a held merge record is acked on it.
        self.stream: Any = None
        #: Partitions are being revoked: the timer leaves the merges to the revocation.
        self.revoking = False
        #: The topics whose records a batch sends bundled (agents.bundles).
        self.bundled = frozenset(
            {worker.topics.identity, worker.topics.product_interest, worker.topics.analytics_feed}
        )
        #: Records whose deferred write was made, while what it keeps is being sent, and the
        #: commit floors worked out at a version of the deferred writes (commit_floors).
        self.releasing: list[Any] = []
        self._floors: dict[Any, int] = {}
        self._floors_for = -1
        #: A batch is being decided; when the last one ended (monotonic): see ``settle``.
        self.busy = False
        self.idle_since = time.monotonic()

    async def on_batch(self, events: Sequence[Any]) -> None:
        """Decide a batch of records in arrival order (so per customer and partition), each as
        Faust's current event; then write each customer's state once, then send.

        The batch's state writes and sends are held (TuttiWorker.holding): a customer signalled
        several times is encoded and written once, with an outbox entry per source record, and
        nothing is sent before the writes that keep it (tables.outbox) are made. Faust acks the
        batch's records after this returns; its commit flushes the producer first.
        """
        self.busy = True
        try:
            await self._decide_batch(events)
        finally:
            self.busy = False
            self.idle_since = time.monotonic()

    async def settle(self, quiet: float, limit: float) -> bool:
        """Wait until no batch is being decided and none has begun for ``quiet`` seconds (at
        most ``limit``); False when the limit ran out.

        Called when partitions are revoked: Faust does not wait for this agent then (the app
        runs with ``stream_wait_empty=False``, as the analytics agent holds its acks), and
        the batch being gathered (``take_batches``) is handed over after it. The batch in
        progress, and the one gathered after it, would otherwise write customer states and
        send after the partitions moved: a changelog record landing after the new owner's
        (restored later, it loses the events that owner applied) and a state cached past the
        assignment (issue 13, scenario 6: an event lost when a worker joined and another was
        SIGKILLed). Faust stops feeding the channel at the revocation (flow control, and
        ``take_batches`` skips what it takes then), so the last batch is gathered within
        ``batch_within_ms``."""
        deadline = time.monotonic() + limit
        while self.busy or time.monotonic() - self.idle_since < quiet:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(quiet / 4)
        return True

    async def _decide_batch(self, events: Sequence[Any]) -> None:
        worker = self.worker
        if not self.encodings_ready:
            await self.prepare_encodings()
        if self.unwritten:
            await self.write_moves()
        with worker.holding() as held:
            for ev in events:
                with as_current_event(ev):
                    try:
                        await self.on_record(ev.message)
                    except Exception as exc:  # a bug: keep the record, never stop the batch
                        log.exception("customer agent: %s failed", _where(ev.message))
                        await self.to_dead_letters(ev.message, exc)
            flushed = worker.customers.flush(as_current_event)
        self.releasing = flushed.release  # no commit past them until what they keep is sent
        await send_direct_changelogs(worker.app)  # the writes before what they keep is sent
        step = worker.journeys
        if step.crash_after_writes:
            await step.crash_for_test()
        moves, self.moves = self.moves, None
        # What waited for a deferred write goes first: a customer's records stay in order.
        await self.send_held([*flushed.send, *held], moves)
        self.releasing = []
        if moves is not None:
            self.unwritten.append(moves)
        if step.inputs is not None:  # the wake-up timer's watermarks (agents.watermarks)
            step.inputs.processed(ev.message for ev in events)

    async def send_held(self, held: list[HeldSend], moves: Moves | None = None) -> None:
        """Send a batch's records (or those that waited for deferred writes), in order, those
        to the internal topics bundled (agents.bundles); ``moves``: the batch's merges, whose
        ``absorb`` records report their delivery."""
        worker = self.worker
        # The analytics agent counts the outcomes from a copy of them, bundled (agents.analytics).
        outcomes, feed = self.topics.outcomes, self.topics.analytics_feed
        held += [
            (feed, key, value, list(OUTCOME_HEADERS)) for t, key, value, _ in held if t == outcomes
        ]
        absorbs = moves.headers if moves is not None and moves.unacknowledged else None
        for topic, key, value, headers in bundle_sends(held, self.bundled, self.partitions):
            if absorbs is not None and headers is absorbs:
                assert moves is not None
                await worker.send(topic, key, value, headers, delivered=moves.delivered)
            else:
                await worker.send(topic, key, value, headers)

    async def write_moves(self, revoked: bool = False) -> None:
        """The merged-away profiles whose ``absorb`` records Kafka acknowledged: deleted, their
        ids made aliases, then their merge records acked - so no crash can lose a profile, and
        no commit covers a merge before its deletion is written.

        ``revoked``: every merge is written (the producer was flushed just before, so every
        ``absorb`` is acknowledged) before the partitions move; the merge records stay unacked
        and the next owner reads them again, which only writes the same alias once more."""
        ready: list[Moves] = []
        unwritten = self.unwritten
        while unwritten and (revoked or unwritten[0].unacknowledged <= 0):
            ready.append(unwritten.popleft())
        if not ready:
            return
        customers, aliases = self.worker.customers, self.worker.aliases
        for moves in ready:
            for source, absorbed, survivor in moves.entries:
                if absorbed == CRASH_BEFORE_MOVE and not revoked:
                    await self.crash_before_move()
                with as_current_event(source):
                    customers.delete(absorbed)
                    aliases.record(absorbed, survivor)
        self.moving = {absorbed: to for moves in unwritten for _, absorbed, to in moves.entries}
        await send_direct_changelogs(self.worker.app)
        if revoked:
            return
        if self.worker.deferred_writes is not None:  # deferred writes the deletions replaced
            self.releasing, unsent = self.worker.deferred_writes.take_released()
            await self.send_held(unsent)
            self.releasing = []
        for moves in ready:
            for source, _, _ in moves.entries:
                await self.stream.ack(source)

    async def write_moves_while_quiet(self) -> None:
        """The timer's turn (every :data:`MOVES_EVERY_S`): a quiet stream starts no batch that
        would write the acknowledged merges, or the deferred states that are due, and let
        their offsets be committed."""
        if self.busy or self.revoking:
            return
        if self.unwritten:
            await self.write_moves()
        if self.worker.deferred_writes:
            flushed = self.worker.customers.write_deferred(as_current_event, time.monotonic())
            if flushed.written:
                self.releasing = flushed.release
                await send_direct_changelogs(self.worker.app)
                await self.send_held(flushed.send)
                self.releasing = []

    async def write_all_deferred(self) -> None:
        """Every deferred state written and what waited for it sent (partitions are being
        revoked, no batch is running). Their records may be uncommitted, as a batch's since
        the last commit are: the next owner reads them again, finds each already decided (the
        state's recent event ids) and sends its outbox entry again (tables.outbox)."""
        if self.worker.deferred_writes:
            flushed = self.worker.customers.write_deferred(as_current_event)
            await send_direct_changelogs(self.worker.app)
            await self.send_held(flushed.send)

    def commit_floors(self) -> dict[Any, int]:
        """Per topic-partition, the lowest offset of a record whose state is not written yet
        (deferred, or taken back into the batch being decided) or whose write's records are
        still being sent: no offset commit reaches it (faust_workarounds.commit_floor). A
        record a deferred write is made for is acked with its batch, as any other; this is
        what keeps it uncommitted, asked once per partition at each commit."""
        deferred = self.worker.deferred_writes
        if deferred is None:
            return {}
        if self._floors_for == deferred.version and not self.releasing:
            return self._floors
        floors: dict[Any, int] = {}
        pending = self.worker.pending_writes
        groups = [entry.held for entry in deferred.entries.values()]
        if pending is not None:
            groups += pending.held.values()
        groups += [deferred.released, self.releasing]
        for events in groups:
            for ev in events:
                message = ev.message
                tp, offset = message.tp, message.offset
                if offset < floors.get(tp, offset + 1):
                    floors[tp] = offset
        self._floors, self._floors_for = floors, deferred.version
        return floors

    async def crash_before_move(self) -> None:
        """Fault injection (CRASH_BEFORE_MOVE): commit what can be committed, then die with the
        absorbed profile sent and acknowledged but not deleted, its merge record held."""
        log.critical("TUTTI_TEST_CRASH_BEFORE_MOVE: committing, then exiting before a deletion")
        await self.worker.app.consumer.commit()
        os._exit(70)

    async def prepare_encodings(self) -> None:
        """Register the schemas of what decisions send (Confluent framing) before the first
        batch, off the event loop, retrying while the registry is unreachable: encoding inside
        a batch then never waits on the registry (AvroCodec.prepare_encoding)."""
        targets = [("Action", self.topics.actions(c)) for c in ACTION_CHANNELS]
        targets.append(("JourneyOutcome", self.topics.outcomes))
        delay = 0.5
        while True:
            try:
                for schema_name, topic in targets:
                    await self.worker.codec.prepare_encoding(schema_name, topic)
                self.encodings_ready = True
                return
            except Exception as exc:
                log.warning(
                    "customer agent: cannot register the action schemas yet (%s: %s); retrying "
                    "in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def on_record(self, msg: Any) -> None:
        channel = self.channel_of.get(msg.topic)
        if channel is not None:
            await self.on_inbound(channel, msg)
        else:
            await self.on_customer_record(msg)

    # -- inbound channel records ---------------------------------------------------------------
    async def on_inbound(self, channel: str, msg: Any) -> None:
        worker = self.worker
        outcome = await route_with_retry(worker, channel, msg)
        if isinstance(outcome, DeadLettered):
            worker.metrics.dead_lettered("ingest", outcome.error_class)
            log.info(
                "dead-lettered %s[%d]@%d: %s: %s",
                msg.topic,
                msg.partition,
                msg.offset,
                outcome.error_class,
                outcome.reason,
            )
            await worker.send(self.topics.dead_letters, outcome.key, outcome.value)
            return
        worker.metrics.event_ingested(channel, outcome.event.event_type)
        if outcome.via_identity:
            await worker.send(self.topics.identity, outcome.key, outcome.value, list(EVENT_HEADERS))
            return
        customer_id = outcome.key.decode()
        if partition_for(outcome.key, self.partitions) != msg.partition:
            # Not this partition's customer: its state lives elsewhere. Re-keyed through the
            # customer topic; its identity links go now (all of them: the profile that would
            # tell which are new is on another partition).
            worker.metrics.event_rerouted(channel)
            await worker.send(
                self.topics.customer_events, outcome.key, outcome.value, list(EVENT_HEADERS)
            )
            for identifier, customer in outcome.links:
                await worker.send(self.topics.identity, identifier, customer, list(LINK_HEADERS))
            return
        survivor = self.survivor(customer_id)
        if survivor is not None:
            await self.forward(msg, SIGNAL_EVENT, customer_id, survivor, outcome.record)
            return
        await worker.journeys.handle(
            msg, SIGNAL_EVENT, customer_id, outcome.event, links=outcome.links
        )

    # -- the customer topic --------------------------------------------------------------------
    async def on_customer_record(self, msg: Any) -> None:
        worker = self.worker
        kind = signal_kind(msg)
        if kind == SIGNAL_FORGET and msg.key:
            # The customer an absorbed id points to was erased: the alias goes too.
            worker.aliases.forget(bytes(msg.key).decode(), bytes(msg.value or b"").decode())
            return
        survivor = self.survivor(bytes(msg.key).decode()) if msg.key else None
        if survivor is not None:
            try:
                await self.forward(msg, kind, bytes(msg.key).decode(), survivor)
            except (TuttiError, ValueError) as exc:
                await self.to_dead_letters(msg, exc)
            return
        if kind in JOURNEY_SIGNALS:
            assert kind is not None
            await worker.journeys.handle(msg, kind)
            return
        worker.metrics.passed_to_profile(kind)
        try:
            if not msg.key:
                raise ValueError("record without a customer id key")
            customer_id = bytes(msg.key).decode()
            if kind == SIGNAL_MERGE:
                await self.merge_away(msg, customer_id, bytes(msg.value).decode())
            elif kind == SIGNAL_ABSORB:
                await self.absorb(msg, customer_id, decode_state(msg.value))
            else:
                raise ValueError(f"unknown signal kind {kind!r}")
        except (TuttiError, ValueError) as exc:  # ValueError: UnicodeDecodeError too
            await self.to_dead_letters(msg, exc)

    def survivor(self, customer_id: str) -> str | None:
        """Where a merged-away id's records go: the merges not written yet, then the aliases
        table.

        A customer whose decoded state is in the cache is no alias, and the table is not read
        (a miss in the aliases table was 2 % of a drain's main thread: Faust's table read, a
        RocksDB lookup, for almost every record). The cache only takes a state after this
        check (or the views' own, agents.views) said "no alias", or from a write for the
        customer itself; an id becomes an alias only in ``write_moves``, which deletes its
        state (dropped from the cache) first; and the cache is cleared when partitions move.
        So a cached id has no alias - even when a crash left an absorbed profile's state next
        to its alias, which only the aliases table's answer keeps unreachable.
        """
        moved = self.moving.get(customer_id)
        if moved is not None:
            return moved
        worker = self.worker
        if customer_id in worker.state_cache:
            return None
        return worker.aliases.survivor(customer_id)

    async def merge_away(self, msg: Any, customer_id: str, survivor: str) -> None:
        """The profile moves to the survivor, then disappears (:meth:`write_moves`); its id
        stays an alias."""
        if survivor == customer_id:
            return
        if self.moves is None:
            self.moves = Moves()
        moves = self.moves
        customers = self.worker.customers
        absorbed = customers.load(customer_id)
        customers.write_with_batch(customer_id)  # its deletion must find nothing deferred
        if absorbed is not None:
            await self.worker.send(
                self.topics.customer_events,
                survivor.encode(),
                encode_state(absorbed),
                moves.headers,
            )
            moves.unacknowledged += 1
            self.worker.journeys.note_write(msg.partition, None, customer_id)
        self.moving[customer_id] = survivor
        source = current_event()
        hold_ack(source)
        moves.entries.append((source, customer_id, survivor))
        if customer_id == CRASH_AFTER_STATE_WRITE:  # the merge crash test, never in production
            self.worker.journeys.crash_after_writes = True

    async def absorb(self, msg: Any, customer_id: str, absorbed: CustomerState) -> None:
        customers = self.worker.customers
        found, outbox = customers.load_record(customer_id)
        state = found or CustomerState(customer_id=customer_id)
        if absorbed.customer_id in state.merged_from:
            # Redelivered: the merged state may be written here but not on the changelog yet
            # (killed before the commit's flush); writing it again puts it there. Its consent
            # record may not have left either: sent again, every key as changed now (a later
            # withdrawal time only holds back actions decided before it: orchestrator.consent).
            customers.save(state, outbox)
            await self.send_consent(None, state)
            return
        merged = merge_states(state, absorbed)
        customers.save(merged, outbox)  # keep the decide step's outbox
        self.worker.journeys.note_write(msg.partition, merged, customer_id)
        # Consent merged in (the absorbed profile's newer withdrawal) reaches the senders too.
        await self.send_consent(state, merged)
        # The absorbed profile's product interest follows it (an anonymous visitor's views).
        for interest in interests_from_state(absorbed, customer_id, datetime.now(UTC)):
            await self.worker.send(
                self.topics.product_interest,
                interest.product_id.encode(),
                encode_interest(interest),
                list(INTEREST_HEADERS),
            )

    async def send_consent(self, before: CustomerState | None, after: CustomerState) -> None:
        note = consent_note(before, after, datetime.now(UTC), self.topics.consent)
        if note is not None:
            await self.worker.send(note.topic, note.key, note.value)

    async def forward(
        self,
        msg: Any,
        kind: bytes | None,
        absorbed: str,
        survivor: str,
        record: dict[str, Any] | None = None,
    ) -> None:
        """A record for a customer id that was merged away: on to the profile that has it."""
        if kind == SIGNAL_WAKEUP:
            return  # the absorbed enrolments' wake-ups moved with the profile
        worker = self.worker
        value = bytes(msg.value or b"")
        key = survivor
        if kind == SIGNAL_MERGE:
            # "absorbed and X are one person": so are the survivor and X (None: already done).
            redirected = redirect_merge(absorbed, survivor, value.decode())
            if redirected is None:
                return
            keep, gone = redirected
            key, value = gone, keep.encode()
        elif kind == SIGNAL_EVENT:
            if record is None:
                record = worker.codec.decode(value, "CustomerEvent", msg.topic)
            value = worker.codec.encode_single_object(
                "CustomerEvent", for_survivor(record, absorbed, survivor)
            )
        headers = [(SIGNAL_HEADER, kind)] if kind is not None else None
        await worker.send(self.topics.customer_events, key.encode(), value, headers)

    async def to_dead_letters(self, msg: Any, exc: Exception) -> None:
        # Ingest and resolve only forward valid records: this is a bug or a foreign producer.
        log.error(
            "customer agent: cannot use %s[%d]@%d: %s: %s",
            msg.topic,
            msg.partition,
            msg.offset,
            type(exc).__name__,
            exc,
        )
        value = self.worker.dead_letter_value(msg, exc, datetime.now(UTC))
        await self.worker.send(self.topics.dead_letters, msg.key, value)


def _where(msg: Any) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


def register_customer_agent(worker: TuttiWorker) -> CustomerAgent:
    """The agent on every channel topic and the customer topic (concurrency 1: Faust can
    commit past an in-flight record with more, faust-streaming #606)."""
    handler = CustomerAgent(worker)
    names = customer_inputs(worker.topics)  # the timer's watermarks cover the same topics
    source = worker.app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=worker.settings.topics.partitions,
    )

    within = worker.settings.worker.batch_within_ms / 1000

    async def decide(stream: Any) -> None:
        handler.stream = stream
        async for events in take_batches(stream, BATCH_MAX, within):
            await handler.on_batch(events)

    decide.__name__ = decide.__qualname__ = "decide"
    worker.app.agent(source, name="decide", concurrency=1)(decide)

    async def write_acknowledged_moves() -> None:
        await handler.write_moves_while_quiet()

    worker.app.timer(MOVES_EVERY_S, name="write_acknowledged_moves")(write_acknowledged_moves)
    if worker.deferred_writes is not None:
        commit_floor(worker.app, handler.commit_floors)  # no commit past an unwritten state
    return handler
