"""The analytics agent without Kafka: the per-partition tally (counting, idempotence by offset,
re-emitted outcomes, flush selection, revocation), the stored format old and new, and the agent's
flush order (writes on the partition's own event, then acks) with a fake table and stream."""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from agents.analytics import (
    STATS_FORMAT,
    JourneyStatsAgent,
    OutcomeTallies,
    PartitionTally,
    RecentIds,
    decode_stats,
    encode_stats,
)
from agents.signals import OUTCOME_HEADERS
from orchestrator.analytics import JourneyStats
from orchestrator.codec import AvroCodec
from orchestrator.partitioning import partition_for

CODEC = AvroCodec(registry=None, framing="single_object")


def outcome(oid: str, kind: str = "entered", journey: str = "j", **extra: Any) -> dict[str, Any]:
    return {
        "outcome_id": oid,
        "journey_id": journey,
        "journey_version": 1,
        "customer_id": f"c-{oid}",
        "kind": kind,
        "holdout": False,
        "variant": None,
        **extra,
    }


def nothing_stored() -> bytes | None:
    return None


def fold(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What `tutti report` computes over the topic: each outcome id once."""
    stats: dict[str, JourneyStats] = {}
    for r in records:
        stats.setdefault(r["journey_id"], JourneyStats(r["journey_id"])).apply(r)
    return {j: counters(s) for j, s in stats.items()}


def counters(stats: JourneyStats) -> dict[str, Any]:
    d = stats.to_dict()
    d.pop("recent_ids")
    return d


# -- the stored value ---------------------------------------------------------------------------


def test_a_stored_value_holds_counters_and_offset_only_and_is_versioned() -> None:
    stats = JourneyStats("j")
    for n in range(1000):
        stats.apply(outcome(f"o-{n}", "sent", channel="email"))
    value = encode_stats(stats, 4242)
    assert value[0] == STATS_FORMAT
    assert len(value) < 300  # no outcome ids: the old value was ~20 KB for the same journey
    back, offset = decode_stats(value)
    assert offset == 4242
    assert counters(back) == counters(stats)
    assert back.recent_ids == []


def test_a_value_of_the_old_format_is_read_and_its_ids_still_deduplicate() -> None:
    old = JourneyStats("j")
    old.apply(outcome("o-1"))
    doc = old.to_dict() | {"last_offset": 7}
    value = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 6)  # as written before
    stats, offset = decode_stats(value)
    # Its offset was in the outcomes topic, not the analytics feed counted now: not kept.
    assert (offset, stats.arms["treated"].entered, stats.recent_ids) == (-1, 1, ["o-1"])

    tally: PartitionTally[str] = PartitionTally(0, 0.0)
    assert not tally.count("j", outcome("o-1"), 9, lambda: value)  # re-emitted after the upgrade
    assert tally.count("j", outcome("o-2"), 10, lambda: value)
    assert tally.journeys["j"].stats.arms["treated"].entered == 2
    assert tally.journeys["j"].stats.recent_ids == []  # not carried into the new format


def test_a_value_counted_from_the_outcomes_topic_keeps_its_counters_not_its_offset() -> None:
    import orjson

    old = JourneyStats("j")
    old.apply(outcome("o-1"))
    doc = {"journey_id": "j", "arms": old.arms, "versions": old.versions, "last_offset": 900}
    value = bytes([2]) + orjson.dumps(doc)  # format 2, as written before the analytics feed
    stats, offset = decode_stats(value)
    assert (offset, stats.arms["treated"].entered) == (-1, 1)
    tally: PartitionTally[str] = PartitionTally(0, 0.0)
    assert tally.count("j", outcome("o-2"), 3, lambda: value)  # feed offset 3 < 900: counted


# -- counting -----------------------------------------------------------------------------------


def test_every_outcome_of_one_feed_record_counts_and_its_replay_counts_none() -> None:
    tally: PartitionTally[str] = PartitionTally(0, 0.0)
    store: dict[str, bytes] = {}
    bundle = [outcome(f"o-{n}") for n in range(3)]
    assert all(tally.count("j", o, 5, lambda: store.get("j")) for o in bundle)
    store.update(tally.flush(1.0).writes)
    again: PartitionTally[str] = PartitionTally(0, 0.0)  # restarted: nothing in memory
    assert not any(again.count("j", o, 5, lambda: store.get("j")) for o in bundle)
    assert again.journeys["j"].stats.arms["treated"].entered == 3
    assert again.count("j", outcome("o-9"), 6, lambda: store.get("j"))


def test_counts_are_kept_in_memory_and_the_store_is_read_once_per_journey() -> None:
    reads: list[str] = []

    def stored() -> bytes | None:
        reads.append("j")
        return None

    tally: PartitionTally[str] = PartitionTally(0, 0.0)
    assert tally.count("j", outcome("1"), 0, stored)
    assert tally.count("j", outcome("2", "sent", channel="push"), 1, stored)
    assert tally.count(
        "j", outcome("3", "converted", revenue={"amount_minor": 500, "currency": "EUR"}), 2, stored
    )
    arm = tally.journeys["j"].stats.arms["treated"]
    assert (arm.entered, arm.sent, arm.converted, arm.revenue_minor) == (1, 1, 1, {"EUR": 500})
    assert reads == ["j"]
    assert tally.journeys["j"].offset == 2


@pytest.mark.parametrize(
    ("stored_offset", "offset", "counted"),
    [
        (10, 9, False),  # replayed after a crash: counted into the stored value already
        (10, 10, False),  # the last record the stored value counted
        (10, 11, True),  # the first record after it
        (-1, 0, True),  # nothing stored yet
    ],
)
def test_a_record_at_or_below_the_stored_offset_is_not_counted_again(
    stored_offset: int, offset: int, counted: bool
) -> None:
    stats = JourneyStats("j")
    stats.apply(outcome("before"))
    value = encode_stats(stats, stored_offset)
    tally: PartitionTally[str] = PartitionTally(0, 0.0)
    assert tally.count("j", outcome("x"), offset, lambda: value) is counted
    assert tally.journeys["j"].stats.arms["treated"].entered == 1 + counted


def test_a_re_emitted_outcome_is_skipped_even_when_its_original_was_only_replayed() -> None:
    stats = JourneyStats("j")
    stats.apply(outcome("a"))
    value = encode_stats(stats, 5)  # "a" at offset 5 was counted and written before a crash
    tally: PartitionTally[str] = PartitionTally(0, 0.0)
    assert not tally.count("j", outcome("a"), 5, lambda: value)  # the replay, below the offset
    assert not tally.count("j", outcome("a"), 8, lambda: value)  # the decide step's re-emission
    assert tally.count("j", outcome("b"), 9, lambda: value)
    assert not tally.count("j", outcome("b"), 12, lambda: value)  # re-emitted while running
    assert tally.journeys["j"].stats.arms["treated"].entered == 2


def test_recent_ids_are_bounded_to_two_generations() -> None:
    recent = RecentIds(generation=3)
    for n in range(7):
        recent.add(str(n))
    assert len(recent) <= 6
    assert "6" in recent and "3" in recent
    assert "0" not in recent and "2" not in recent


# -- flushing -----------------------------------------------------------------------------------


def test_a_flush_writes_each_journey_counted_since_once_then_acks_every_held_event() -> None:
    tally: PartitionTally[str] = PartitionTally(3, flushed_at=0.0)
    for n, (journey, kind) in enumerate(
        [("a", "entered"), ("b", "entered"), ("a", "sent"), ("a", "step"), ("c", "step")]
    ):
        tally.hold(f"ev-{n}")
        tally.count(journey, outcome(str(n), kind, journey, channel="email"), n, nothing_stored)
    tally.hold("ev-undecodable")  # held and acked like the others
    assert not tally.due(now=1.0, interval=2.8)
    assert tally.due(now=2.8, interval=2.8)

    batch = tally.flush(now=2.8)
    assert batch.partition == 3
    written = {journey: decode_stats(value) for journey, value in batch.writes}
    assert len(batch.writes) == len(written) == 3  # steps count too (the funnel)
    assert written["a"][1] == 3  # the last counted offset of "a": its step
    assert (written["a"][0].arms["treated"].entered, written["a"][0].arms["treated"].sent) == (1, 1)
    assert written["b"][1] == 1
    assert written["c"][1] == 4 and written["c"][0].arms["treated"].steps == {"unspecified": 1}
    assert batch.acks == ["ev-0", "ev-1", "ev-2", "ev-3", "ev-4", "ev-undecodable"]
    assert not tally.due(now=100.0, interval=2.8)  # nothing held
    assert tally.flush(now=100.0).writes == []


def test_each_partition_writes_only_the_journeys_counted_from_its_own_records() -> None:
    tallies: OutcomeTallies[str] = OutcomeTallies(interval=2.8)
    for partition, journey, offset in [(0, "a", 0), (1, "b", 0), (0, "a", 1), (1, "c", 1)]:
        tally = tallies.partition(partition, now=0.0)
        tally.hold(f"{partition}/{offset}")
        tally.count(journey, outcome(f"{journey}{offset}", journey=journey), offset, nothing_stored)
    assert tallies.due(now=1.0) == []
    first, second = tallies.due(now=3.0)
    assert {j for j, _ in first.flush(3.0).writes} == {"a"}
    assert {j for j, _ in second.flush(3.0).writes} == {"b", "c"}
    assert tallies.due(now=100.0) == []
    assert set(tallies.stats()) == {"a", "b", "c"}


def test_revoked_partitions_drop_their_counts_and_the_new_owner_replays_them_exactly() -> None:
    records = [outcome(str(n), journey="j") for n in range(6)]
    store: dict[str, bytes] = {}
    tallies: OutcomeTallies[int] = OutcomeTallies(interval=2.8)
    tally = tallies.partition(0, now=0.0)
    for offset, record in enumerate(records[:3]):
        tally.hold(offset)
        tally.count("j", record, offset, lambda: store.get("j"))
    store.update(tally.flush(now=3.0).writes)  # offsets 0-2 written (acked, maybe committed)
    for offset, record in enumerate(records[3:], start=3):
        tally.hold(offset)
        tally.count("j", record, offset, lambda: store.get("j"))
    assert tallies.revoke([0, 5]) == 3  # 3-5 were never acked
    assert tallies.partitions == {}

    # The next owner reads from the last commit; say offsets 1-2 were not committed either.
    new_owner: OutcomeTallies[int] = OutcomeTallies(interval=2.8)
    tally = new_owner.partition(0, now=0.0)
    for offset, record in enumerate(records[1:], start=1):
        tally.hold(offset)
        tally.count("j", record, offset, lambda: store.get("j"))
    store.update(tally.flush(now=3.0).writes)
    stats, offset = decode_stats(store["j"])
    assert (stats.arms["treated"].entered, offset) == (6, 5)


@pytest.mark.parametrize("seed", range(30))
def test_crashes_at_any_point_lose_nothing_and_count_nothing_twice(seed: int) -> None:
    """A partition's records, flushed at random points, committed at random points after an
    ack, the worker crashing at random points: the stored counters end equal to the fold.

    Re-emitted decisions (a copy of an outcome a few records after its original) are never
    separated by a commit: the decide step's source record is committed with the original's
    offset or earlier, and a committed source record is not re-emitted (agents.analytics)."""
    rng = random.Random(seed)
    kinds = ["entered", "sent", "exited", "step"]
    records = [
        outcome(f"{seed}-{n}", rng.choice(kinds), rng.choice("abc"), channel="email")
        for n in range(300)
    ]
    for n in sorted(rng.sample(range(len(records) - 10), 15), reverse=True):
        records.insert(n + rng.randint(1, 8), dict(records[n]))
    first: dict[str, int] = {}
    copies: list[tuple[int, int]] = []  # (original, copy) positions
    for position, record in enumerate(records):
        if record["outcome_id"] in first:
            copies.append((first[record["outcome_id"]], position))
        first.setdefault(record["outcome_id"], position)

    store: dict[str, bytes] = {}
    committed, acked, position, crashes = 0, 0, 0, 0
    tally: PartitionTally[int] = PartitionTally(0, 0.0)
    while position < len(records) or tally.held:
        if position < len(records):
            record = records[position]
            tally.hold(position)
            journey = record["journey_id"]
            tally.count(journey, record, position, lambda j=journey: store.get(j))
            position += 1
        if rng.random() < 0.1 or position == len(records):
            batch = tally.flush(now=0.0)
            store.update(batch.writes)
            acked = batch.acks[-1] + 1 if batch.acks else acked
        if rng.random() < 0.05 and not any(o < acked <= c for o, c in copies):
            committed = acked
        if rng.random() < 0.02 and crashes < 4:  # memory lost; read again from the commit
            crashes += 1
            tally, position, acked = PartitionTally(0, 0.0), committed, committed
    stored = {j: counters(decode_stats(v)[0]) for j, v in store.items()}
    assert stored == fold(records)


# -- the agent's I/O, with a fake table and stream ---------------------------------------------


class Event:
    def __init__(
        self, partition: int, offset: int, value: bytes, headers: Any = OUTCOME_HEADERS
    ) -> None:
        self.message = SimpleNamespace(
            partition=partition,
            offset=offset,
            key=b"",
            value=value,
            headers=list(headers),
            topic="tutti.analytics-feed",
        )


class FakeTable(dict[str, bytes]):
    """Records the partition of Faust's current event at every write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int]] = []

    def __setitem__(self, key: str, value: bytes) -> None:
        from faust.streams import current_event

        event = current_event()
        assert event is not None, "a table write outside of an event"
        self.writes.append((key, event.message.partition))
        super().__setitem__(key, value)


class FakeStream:
    def __init__(self, events: list[Event], log: list[Any]) -> None:
        self._events = events
        self.log = log

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Event]:
        for event in self._events:
            yield event

    async def ack(self, event: Event) -> bool:
        self.log.append(("ack", event.message.partition, event.message.offset))
        return True


def encoded(record: dict[str, Any]) -> bytes:
    return CODEC.encode_single_object(
        "JourneyOutcome", record | {"occurred_at": datetime(2026, 3, 1, tzinfo=UTC)}
    )


PARTITIONS = 4


def agent_with(table: FakeTable, interval: float) -> JourneyStatsAgent:
    conf = SimpleNamespace(broker_commit_interval=interval)
    worker = SimpleNamespace(
        app=SimpleNamespace(conf=conf, rebalancing=False),
        codec=CODEC,
        settings=SimpleNamespace(topics=SimpleNamespace(partitions=PARTITIONS)),
    )
    return JourneyStatsAgent(worker, table)  # type: ignore[arg-type]


def test_the_agent_holds_acks_until_the_quiet_flush_writes_on_each_partitions_own_event() -> None:
    table = FakeTable()
    log: list[Any] = []
    events = [
        Event(0, 0, encoded(outcome("1", journey="a"))),
        Event(1, 0, encoded(outcome("2", journey="b"))),
        Event(0, 1, encoded(outcome("3", "sent", journey="a", channel="email"))),
        Event(0, 2, b"garbage"),
    ]
    agent = agent_with(table, interval=3600.0)  # no event comes late enough to flush
    asyncio.run(agent.run(FakeStream(events, log)))
    assert table == {} and log == []  # counted, nothing written or acked yet
    assert agent.tallies.stats()["a"].arms["treated"].sent == 1  # the view sees it already

    for tally in agent.tallies.partitions.values():
        tally.flushed_at -= 3600.0
    assert asyncio.run(agent.flush_quiet()) == 2
    assert sorted(table.writes) == [("a", 0), ("b", 1)]
    assert sorted(log) == [("ack", 0, 0), ("ack", 0, 1), ("ack", 0, 2), ("ack", 1, 0)]
    stats, offset = decode_stats(table["a"])
    assert (stats.arms["treated"].entered, stats.arms["treated"].sent, offset) == (1, 1, 1)
    assert asyncio.run(agent.flush_quiet()) == 0


def test_the_agent_flushes_on_an_event_once_the_interval_passed_and_revoke_forgets() -> None:
    table = FakeTable()
    log: list[Any] = []
    agent = agent_with(table, interval=0.0)  # every event finds its partition's flush due
    asyncio.run(agent.run(FakeStream([Event(2, 7, encoded(outcome("1", journey="a")))], log)))
    assert table.writes == [("a", 2)] and log == [("ack", 2, 7)]

    agent.tallies.interval = 3600.0
    asyncio.run(agent.run(FakeStream([Event(2, 8, encoded(outcome("2", journey="a")))], log)))
    agent.revoke([2])
    assert agent.tallies.partitions == {} and log == [("ack", 2, 7)]  # 8 is read again later


def test_the_agent_counts_every_outcome_of_a_bundle_and_acks_it_once() -> None:
    from agents.bundles import bundle_sends

    held = [
        ("tutti.analytics-feed", b"a", encoded(outcome(n, journey="a")), list(OUTCOME_HEADERS))
        for n in ("1", "2", "3")
    ]
    ((_, key, value, headers),) = bundle_sends(held, {"tutti.analytics-feed"}, PARTITIONS)
    partition = partition_for(key, PARTITIONS)
    table = FakeTable()
    log: list[Any] = []
    agent = agent_with(table, interval=0.0)
    asyncio.run(agent.run(FakeStream([Event(partition, 4, value, headers)], log)))
    assert log == [("ack", partition, 4)]
    stats, offset = decode_stats(table["a"])
    assert (stats.arms["treated"].entered, offset) == (3, 4)
