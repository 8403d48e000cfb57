"""The analytics agent: journey outcomes (keyed by journey id) counted in memory per partition and
written to the `journey_stats` table at most once per commit interval.

What it reads: the analytics feed (``tutti.analytics-feed``), not the outcomes topic. The customer
agent sends every outcome twice - to the outcomes topic, for everyone, and a copy to the feed,
bundled per batch and journey partition (agents.bundles): one delivery per bundle instead of one
per outcome. Reading the outcomes topic itself cost 0.58 deliveries per inbound event on the
benchmark stream; with the feed the worker drained it about 1.5 times faster (`tutti bench`).
The copies are made from what the batch sends, so an outbox resend after a crash re-sends them too.

Table `journey_stats`: journey id -> :class:`orchestrator.analytics.JourneyStats` counters, where
each enrolment in the journey is now (hashed customer id -> arm and step, for "waiting now") and the
offset (in the feed partition) of the last feed record counted into them, compressed (format 4;
format 3 values, written before the positions were kept, load with none: enrolments count as
waiting from their next step outcome on; format 2 values, counted from the outcomes topic, keep
their counters and drop their offset). The positions are in the same value as the counters so
one write keeps both, and a replay or a crash never leaves them apart. `tutti report`
reads the outcomes topic with the same fold; `GET /journeys/stats` shows the journeys this worker
owns.

Counting: each outcome adds to the journey's counters in a :class:`PartitionTally` (one per feed
partition) and its event is *held*, not acked (``stream.noack()``). When the partition's flush is
due - its last flush is a commit interval old (Faust's ``broker_commit_interval``) - every journey
counted since is written once, then the held events are acked, so Faust commits their offsets only
after the write that holds their counts (its commit flushes the producer, hence the changelog,
first). A table write goes to the changelog partition of the event being processed: the flush runs
with one of the partition's own held events as the current event, and the feed is keyed by journey
id (a bundle by its first journey's: all of its journeys share the partition) and co-partitioned
with the table, so every journey a tally holds belongs there.

The tail: when a partition goes quiet, a timer (every half interval) flushes the tallies whose
flush is due, with their last held event as Faust's current event
(agents.faust_workarounds.as_current_event): no extra record is produced, counts show in the
table within about 1.5 intervals, and the partition's offsets are committed at the next commit.

What a crash loses: nothing that was counted. Held events are not committed, so the next owner
reads them again; a record at or below the journey's stored offset was counted already and is
skipped (all the outcomes a bundle holds share its offset). A decision the journey agent re-emits after a crash (same outcome id at a new offset, from
its outbox) is caught by the outcome ids seen lately in the partition (memory only, up to
2 * :data:`RECENT_IDS_PER_GENERATION` per partition); records replayed at or below the stored
offset still teach their ids. Caught: a copy whose original this owner saw within that window -
while it kept running, and after a restart or rebalance whenever the original was not committed
yet (it is replayed before its copy). An original is committed only by a Faust commit after the
flush that wrote it, and that commit also covers the decision that emitted it, which the customer
agent acks as soon as its batch's sends are handed to the producer; a committed decision is not
re-emitted. Not caught (counted twice): a copy arriving more than the window's number of
outcomes after its original, or one whose decision's batch was still waiting on a full producer
buffer when a commit covered the already-flushed original, with the crash before the next commit.

Revocation: counts not yet written are dropped with their held events (never acked: the new owner
reads them again). Holding acks needs ``stream_wait_empty=False`` (agents.app), or a rebalance
would wait for these events forever.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import orjson

from agents.bundles import messages_of
from agents.faust_workarounds import as_current_event
from agents.worker import TuttiWorker
from orchestrator.analytics import JourneyStats
from orchestrator.engine.membership import SEGMENT_JOURNEY_PREFIX
from orchestrator.errors import SerializationError

__all__ = [
    "JOURNEY_STATS_TABLE",
    "RECENT_IDS_PER_GENERATION",
    "STATS_FORMAT",
    "JourneyTally",
    "OutcomeTallies",
    "PartitionTally",
    "RecentIds",
    "StatsFlush",
    "decode_stats",
    "encode_stats",
    "register_analytics",
]

log = logging.getLogger(__name__)

JOURNEY_STATS_TABLE: Final = "journey_stats"
#: The first byte of a stored value: zlib-compressed orjson of the counters, the positions and
#: the last offset. The positions hold a 64-bit customer key per enrolment in the journey
#: (about 11 bytes each compressed, at most orchestrator.analytics.MAX_POSITIONS of them). Values written before it (zlib JSON with up to 1,000 recent
#: outcome ids, no format byte: their first byte is zlib's 0x78) are still read.
STATS_FORMAT: Final = 4
_FORMAT_BYTE: Final = bytes([STATS_FORMAT])
#: Format 3: orjson of the counters and the last offset, uncompressed, no positions.
_FORMAT_3_BYTE: Final = bytes([3])
#: Format 2: as 3, with the offset of the last outcome counted in the outcomes topic (read before
#: the analytics feed: the counters are kept, the offset is not).
_FORMAT_2_BYTE: Final = bytes([2])
#: Outcome ids remembered per partition to catch a re-emitted decision: two generations of
#: this many (memory only; a few MB per partition at most).
RECENT_IDS_PER_GENERATION: Final = 5000

#: Fault hooks for the crash tests (tests/integration/worker/test_analytics_live.py), never set
#: in production, each naming a customer: the worker is SIGKILLed as soon as an outcome of that
#: customer is counted (before the flush that would write it; the decision that emitted it is
#: most likely not committed yet, so the restart re-emits it), or at the flush of the partition
#: that counted it, once the writes reached Kafka and before the held events are acked.
CRASH_BEFORE_STATS_FLUSH: Final = os.environ.get("TUTTI_TEST_CRASH_BEFORE_STATS_FLUSH") or None
CRASH_AFTER_STATS_WRITE: Final = os.environ.get("TUTTI_TEST_CRASH_AFTER_STATS_WRITE") or None

E = TypeVar("E")


def encode_stats(stats: JourneyStats, offset: int) -> bytes:
    """A stored value: counters only (no outcome ids) and the last outcome offset counted."""
    doc = {
        "journey_id": stats.journey_id,
        "arms": stats.arms,  # dataclasses: orjson writes their fields
        "versions": stats.versions,
        "positions": stats.grouped_positions(),
        "positions_overflow": stats.positions_overflow,
        "last_offset": offset,
    }
    # Level 1: the customer ids of the positions compress well even at the fastest level.
    return _FORMAT_BYTE + zlib.compress(orjson.dumps(doc), 1)


def decode_stats(data: bytes) -> tuple[JourneyStats, int]:
    """A stored value (either format) as stats and the last offset counted (-1: none). Values of
    the old format bring their recent outcome ids in ``stats.recent_ids``."""
    if data[:1] == _FORMAT_BYTE:
        doc: Mapping[str, Any] = orjson.loads(zlib.decompress(data[1:]))
        offset = int(doc.get("last_offset", -1))
    elif data[:1] == _FORMAT_3_BYTE:
        doc = orjson.loads(data[1:])
        offset = int(doc.get("last_offset", -1))
    elif data[:1] == _FORMAT_2_BYTE:
        # Counted from the outcomes topic itself: its offset means nothing in the feed.
        doc = orjson.loads(data[1:])
        offset = -1
    else:
        doc = json.loads(zlib.decompress(data))
        offset = -1
    return JourneyStats.from_dict(doc), offset


class RecentIds:
    """Outcome ids seen lately: two generations of sets, the older dropped when the newer is
    full, so between ``generation`` and twice as many ids are remembered at O(1) per id."""

    def __init__(self, generation: int = RECENT_IDS_PER_GENERATION) -> None:
        self.generation = generation
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def __contains__(self, outcome_id: object) -> bool:
        return outcome_id in self._current or outcome_id in self._previous

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def add(self, outcome_id: str) -> None:
        if len(self._current) >= self.generation:
            self._previous, self._current = self._current, set()
        self._current.add(outcome_id)


@dataclass
class JourneyTally:
    """A journey's counters as stored plus what was counted since, and the last offset counted."""

    stats: JourneyStats
    offset: int = -1
    #: The offset of the feed record whose outcomes are being counted (None: none since load).
    counting: int | None = None


@dataclass(frozen=True)
class StatsFlush(Generic[E]):
    """What one flush of a partition does: the table writes, then the acks of the held events."""

    partition: int
    writes: list[tuple[str, bytes]]
    acks: list[E]


@dataclass
class PartitionTally(Generic[E]):
    """One outcomes partition's journeys, the events counted since its last flush (held, not
    acked) and the outcome ids it saw lately. Pure: the agent feeds it and does the I/O."""

    partition: int
    flushed_at: float
    journeys: dict[str, JourneyTally] = field(default_factory=dict)
    held: list[E] = field(default_factory=list)
    dirty: set[str] = field(default_factory=set)
    recent: RecentIds = field(default_factory=RecentIds)

    def journey(self, journey_id: str, stored: Callable[[], bytes | None]) -> JourneyTally:
        """The journey's tally; loaded from its stored value (``stored()``) on first use."""
        tally = self.journeys.get(journey_id)
        if tally is None:
            value = stored()
            if value:
                loaded, offset = decode_stats(value)
                for outcome_id in loaded.recent_ids:  # an old-format value: its ids still count
                    self.recent.add(outcome_id)
                stats = JourneyStats(
                    loaded.journey_id,
                    loaded.arms,
                    loaded.versions,
                    positions=loaded.positions,
                    positions_overflow=loaded.positions_overflow,
                )
                tally = JourneyTally(stats, offset)
            else:
                tally = JourneyTally(JourneyStats(journey_id))
            self.journeys[journey_id] = tally
        return tally

    def count(
        self,
        journey_id: str,
        outcome: Mapping[str, Any],
        offset: int,
        stored: Callable[[], bytes | None],
    ) -> bool:
        """Count one decoded outcome read at ``offset``. False when it was counted already: at
        or below the stored offset (a replay), or its id was seen lately (a re-emission)."""
        tally = self.journey(journey_id, stored)
        outcome_id = str(outcome["outcome_id"])
        seen = outcome_id in self.recent
        self.recent.add(outcome_id)  # a replayed original still catches its re-emitted copy
        # A feed record (a bundle) holds several outcomes at one offset: the record being
        # counted is not a replay of one counted before.
        if seen or (offset <= tally.offset and offset != tally.counting):
            return False
        if tally.stats.count(outcome):
            tally.offset = tally.counting = offset
            self.dirty.add(journey_id)
        return True

    def hold(self, event: E) -> None:
        """Keep ``event`` unacked until the flush that writes what it counted."""
        self.held.append(event)

    def due(self, now: float, interval: float) -> bool:
        return bool(self.held) and now - self.flushed_at >= interval

    def flush(self, now: float) -> StatsFlush[E]:
        """The writes of every journey counted since the last flush, and the events to ack after
        them; the tally starts its next interval."""
        writes = [
            (j, encode_stats(self.journeys[j].stats, self.journeys[j].offset)) for j in self.dirty
        ]
        acks, self.held = self.held, []
        self.dirty = set()
        self.flushed_at = now
        return StatsFlush(self.partition, writes, acks)


class OutcomeTallies(Generic[E]):
    """The tallies of the outcomes partitions this worker reads."""

    def __init__(self, interval: float, recent_ids: int = RECENT_IDS_PER_GENERATION) -> None:
        self.interval = interval
        self.recent_ids = recent_ids
        self.partitions: dict[int, PartitionTally[E]] = {}

    def partition(self, partition: int, now: float) -> PartitionTally[E]:
        tally = self.partitions.get(partition)
        if tally is None:
            # A first flush after one interval, like every later one.
            tally = PartitionTally(partition, now, recent=RecentIds(self.recent_ids))
            self.partitions[partition] = tally
        return tally

    def due(self, now: float) -> list[PartitionTally[E]]:
        """Tallies whose flush is due (the timer's work when their partition went quiet)."""
        return [t for t in self.partitions.values() if t.due(now, self.interval)]

    def revoke(self, partitions: Iterable[int]) -> int:
        """Forget partitions no longer ours; returns how many held events were dropped (never
        acked, so the partition's next owner reads them again)."""
        dropped = 0
        for partition in partitions:
            tally = self.partitions.pop(partition, None)
            if tally is not None:
                dropped += len(tally.held)
        return dropped

    def stats(self) -> dict[str, JourneyStats]:
        """Every journey's counters as counted here (written or not yet)."""
        return {j: t.stats for p in self.partitions.values() for j, t in p.journeys.items()}


class JourneyStatsAgent:
    """The I/O around :class:`OutcomeTallies`: decode, count, write the table, ack, revoke."""

    def __init__(self, worker: TuttiWorker, table: Any) -> None:
        self.worker = worker
        self.table = table
        self.tallies: OutcomeTallies[Any] = OutcomeTallies(
            float(worker.app.conf.broker_commit_interval)
        )
        self.stream: Any = None  # the agent's stream, where held events are acked
        self.armed: set[int] = set()  # partitions that counted CRASH_AFTER_STATS_WRITE's customer

    async def run(self, stream: Any) -> None:
        self.stream = stream = stream.noack()
        partitions = self.worker.settings.topics.partitions
        async for event in stream.events():
            now = time.monotonic()
            tally = self.tallies.partition(event.message.partition, now)
            tally.hold(event)
            try:
                messages = messages_of(event.message, partitions)
            except SerializationError as exc:  # only the customer agent writes the feed: a bug
                log.error("analytics: feed record ignored (%s)", exc)
                messages = []
            for msg in messages:
                await self.worker.codec.prepare_patiently(msg.value, msg.topic, "analytics")
                self._count(tally, msg)
            if tally.due(now, self.tallies.interval):
                await self.flush(tally)

    def _count(self, tally: PartitionTally[Any], msg: Any) -> None:
        try:
            outcome = self.worker.codec.decode(msg.value, "JourneyOutcome", msg.topic)
            journey_id = str(outcome["journey_id"])
            tally.count(journey_id, outcome, msg.offset, lambda: self.table.get(journey_id))
        except Exception as exc:  # one bad record must not stop the counting
            log.warning("analytics: outcome at %d ignored (%s)", msg.offset, exc)
            return
        if CRASH_BEFORE_STATS_FLUSH and outcome.get("customer_id") == CRASH_BEFORE_STATS_FLUSH:
            self._crash_for_test("with an outcome counted, before the stats flush")
        if CRASH_AFTER_STATS_WRITE and outcome.get("customer_id") == CRASH_AFTER_STATS_WRITE:
            self.armed.add(tally.partition)

    async def flush(self, tally: PartitionTally[Any]) -> None:
        """Write what ``tally`` counted, then ack its held events. The writes go to the
        partition of its last held event (Faust takes the current event's), which is its own."""
        if not tally.held:
            return
        batch = tally.flush(time.monotonic())
        with as_current_event(batch.acks[-1]):
            for journey_id, value in batch.writes:
                self.table[journey_id] = value  # one changelog record per journey per flush
        if CRASH_AFTER_STATS_WRITE and tally.partition in self.armed:
            await self.worker.app.producer.flush()  # the writes reach the changelog
            self._crash_for_test("after the stats write, before the acks")
        for event in batch.acks:
            await self.stream.ack(event)

    async def flush_quiet(self) -> int:
        """The timer's part: flush partitions no event came to flush; returns how many."""
        if getattr(self.worker.app, "rebalancing", False):
            return 0  # the revoke drops them; the new assignment replays them
        due = self.tallies.due(time.monotonic())
        for tally in due:
            await self.flush(tally)
        return len(due)

    def revoke(self, partitions: Iterable[int]) -> None:
        dropped = self.tallies.revoke(partitions)
        if dropped:
            log.info(
                "analytics: %d outcomes not yet written dropped with their partitions", dropped
            )

    def _crash_for_test(self, when: str) -> None:
        log.critical("analytics fault hook: SIGKILL %s", when)
        os.kill(os.getpid(), signal.SIGKILL)


def register_analytics(worker: TuttiWorker) -> Any:
    app = worker.app
    if app.conf.stream_wait_empty:
        raise RuntimeError(
            "the analytics agent holds its acks until its counts are written: create the app "
            "with stream_wait_empty=False (agents.app.create_app), or a rebalance waits forever"
        )
    table = app.Table(
        JOURNEY_STATS_TABLE,
        key_type=str,
        value_type=bytes,
        partitions=worker.settings.topics.partitions,
        help="journey id -> JourneyStats counters (orjson) and the last outcome offset counted",
    )
    agent = JourneyStatsAgent(worker, table)
    source = worker.topic(worker.topics.analytics_feed)

    async def analytics(stream: Any) -> None:
        await agent.run(stream)

    analytics.__name__ = analytics.__qualname__ = "analytics"
    app.agent(source, name="analytics", concurrency=1)(analytics)

    async def flush_journey_stats() -> None:
        try:
            await agent.flush_quiet()
        except Exception:
            log.exception("analytics: flush of quiet partitions failed; retrying next tick")

    flush_journey_stats.__name__ = flush_journey_stats.__qualname__ = "flush_journey_stats"
    app.timer(agent.tallies.interval / 2, name="flush_journey_stats")(flush_journey_stats)

    @app.on_partitions_revoked.connect
    async def forget_journey_counts(sender: Any, revoked: Any, **kwargs: Any) -> None:
        feed = worker.topics.analytics_feed
        agent.revoke(tp.partition for tp in revoked if tp.topic == feed)

    def local_stats() -> dict[str, JourneyStats]:
        """Counters of the journeys whose outcome partitions this worker owns: as stored, or as
        counted here since (not yet written)."""
        prefix = SEGMENT_JOURNEY_PREFIX  # segments' counters: segment_sizes below
        stats = {j: decode_stats(v)[0] for j, v in table.items() if not j.startswith(prefix)}
        stats.update((j, s) for j, s in agent.tallies.stats().items() if not j.startswith(prefix))
        return stats

    worker.journey_stats = local_stats  # the dashboard's counts (agents.ui)

    def segment_sizes() -> dict[str, int]:
        """Members of the segments whose outcome partition this worker owns: each segment's
        ``segment:<id>`` counters (entered minus exited), as stored or counted here since."""
        prefix = SEGMENT_JOURNEY_PREFIX
        stats = {k: decode_stats(v)[0] for k, v in table.items() if k.startswith(prefix)}
        stats.update((k, s) for k, s in agent.tallies.stats().items() if k.startswith(prefix))
        return {k[len(prefix) :]: s.active for k, s in stats.items()}

    worker.metrics.segments.source = segment_sizes  # tutti_segment_members{segment}

    async def segment_sizes_view(view: Any, request: Any) -> Any:
        """``GET /segments/sizes``: members per segment counted on this worker (no customer
        ids); `tutti segments size` adds up every worker's."""
        return view.json(segment_sizes())

    app.page("/segments/sizes", name="segment_sizes")(segment_sizes_view)

    async def journey_stats(view: Any, request: Any) -> Any:
        """Counters of the journeys whose outcome partitions this worker owns."""
        body = {}
        for journey_id, s in local_stats().items():
            body[journey_id] = s.summary()
        return view.json(body)

    app.page("/journeys/stats", name="journey_stats")(journey_stats)

    async def journey_stats_full(view: Any, request: Any) -> Any:
        """The same journeys' whole counters (positions as hashed customer keys included), for
        the other workers' dashboards (agents.ui): behind the API token."""
        from agents.views import bearer_authorised

        token = worker.settings.worker.api_token
        if not token or not bearer_authorised(token, request.headers.get("Authorization")):
            return view.json({"error": "missing or wrong bearer token"}, status=401)
        return view.json({j: s.to_dict() for j, s in local_stats().items()})

    app.page("/journeys/stats/full", name="journey_stats_full")(journey_stats_full)
    return table
