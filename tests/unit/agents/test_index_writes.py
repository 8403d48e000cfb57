"""The product agent writes a changed interest index at most once per
``worker.index_write_every_ms`` and holds the acks of the records that changed it until then
(agents.catalog.PendingIndexes, ProductInterestAgent). Faust's table, stream and producer
are stood in for; what is checked is when the agent writes and acks."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

import agents.catalog as catalog
from agents.catalog import CatalogStats, IndexCache, PendingIndexes, ProductInterestAgent
from agents.signals import SIGNAL_FORGET, SIGNAL_HEADER, SIGNAL_INTEREST
from orchestrator.catalog import DEFAULT_INTEREST_LIMITS, Interest, InterestIndex, encode_interest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stream:
    def __init__(self) -> None:
        self.acked: list[Any] = []

    async def ack(self, event: Any) -> None:
        self.acked.append(event)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(catalog.time, "monotonic", clock)
    return clock


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The events whose acks the agent held (faust_workarounds.hold_ack), in order."""
    holds: list[Any] = []
    monkeypatch.setattr(catalog, "hold_ack", holds.append)
    monkeypatch.setattr(catalog, "as_current_event", lambda ev: contextlib.nullcontext())

    async def no_changelogs(app: Any) -> None:
        return None

    monkeypatch.setattr(catalog, "send_direct_changelogs", no_changelogs)
    return holds


def make_agent(every: float, table: dict[str, bytes] | None = None) -> ProductInterestAgent:
    app = SimpleNamespace(consumer_generation_id=1)
    worker = SimpleNamespace(
        app=app,
        topics=SimpleNamespace(customer_events="tutti.customer-events"),
        settings=SimpleNamespace(topics=SimpleNamespace(partitions=1)),
        codec=None,
    )
    agent = ProductInterestAgent(
        worker,  # type: ignore[arg-type]
        {} if table is None else table,
        DEFAULT_INTEREST_LIMITS,
        CatalogStats(),
        IndexCache(),
        every,
    )
    agent.stream = Stream()
    return agent


def record(kind: bytes, product_id: str, value: bytes, offset: int, generation: int) -> Any:
    """An event of the product-keyed topic as the agent's batches hold it."""
    message = SimpleNamespace(
        topic="tutti.product-interest",
        partition=0,
        offset=offset,
        key=product_id.encode(),
        value=value,
        headers=[(SIGNAL_HEADER, kind)],
        generation_id=generation,
    )
    return SimpleNamespace(message=message)


def interest(product_id: str, customer_id: str, offset: int, generation: int = 1) -> Any:
    at = datetime.now(UTC) - timedelta(minutes=5)
    value = encode_interest(Interest(product_id, customer_id, at))
    return record(SIGNAL_INTEREST, product_id, value, offset, generation)


def forget(product_id: str, customer_id: str, offset: int) -> Any:
    return record(SIGNAL_FORGET, product_id, customer_id.encode(), offset, 1)


def stored(table: dict[str, bytes], product_id: str) -> set[str]:
    return set(InterestIndex.decode(table.get(product_id)).entries)


def test_a_changed_index_waits_for_its_interval_and_its_records_for_the_write(
    clock: Clock, held: list[Any]
) -> None:
    table: dict[str, bytes] = {}
    agent = make_agent(1.0, table)
    first = [interest("p-1", "c-1", 0), interest("p-1", "c-2", 1), interest("p-2", "c-1", 2)]
    asyncio.run(agent.on_batch(first))
    assert table == {}  # not written yet
    assert held == first  # each record that changed an index is held past its batch
    assert agent.stream.acked == []
    clock.now += 0.5
    repeat = interest("p-1", "c-1", 3)  # the same interest again within the hour: no change
    asyncio.run(agent.on_batch([repeat, interest("p-1", "c-3", 4)]))
    assert table == {} and len(held) == 4
    clock.now += 0.5
    last = interest("p-2", "c-4", 5)
    asyncio.run(agent.on_batch([last]))
    # Due: both products written once each, holding every change so far; then every held
    # record acked.
    assert stored(table, "p-1") == {"c-1", "c-2", "c-3"}
    assert stored(table, "p-2") == {"c-1", "c-4"}
    assert agent.stats.index_writes == 2
    assert agent.stream.acked == held
    assert repeat not in held
    assert not agent.pending


def c1_noted_on_a_stored_c0(every_s: float) -> tuple[dict[str, bytes], ProductInterestAgent]:
    """An agent writing every ``every_s`` whose table holds p-1's index with c-0, after a batch
    noting c-1's interest in p-1 (not yet written)."""
    table: dict[str, bytes] = {"p-1": InterestIndex({"c-0": 1_800_000_000}).encode()}
    agent = make_agent(every_s, table)
    asyncio.run(agent.on_batch([interest("p-1", "c-1", 0)]))
    return table, agent


def test_the_index_decided_on_is_the_pending_one_not_the_stored_one(
    clock: Clock, held: list[Any]
) -> None:
    table, agent = c1_noted_on_a_stored_c0(every_s=1.0)
    assert agent.cache.take("p-1") is None  # not in the cache: only the pending write holds it
    asyncio.run(agent.on_batch([forget("p-1", "c-0", 1)]))
    asyncio.run(agent.on_batch([forget("p-1", "c-1", 2)]))  # now empty: still the pending index
    clock.now += 1.0
    asyncio.run(agent.write_pending_while_quiet())
    assert stored(table, "p-1") == set()
    assert len(agent.stream.acked) == 3


def test_a_quiet_stream_is_written_by_the_timer_once_due(clock: Clock, held: list[Any]) -> None:
    table: dict[str, bytes] = {}
    agent = make_agent(1.0, table)
    asyncio.run(agent.on_batch([interest("p-1", "c-1", 0)]))
    clock.now += 0.9
    asyncio.run(agent.write_pending_while_quiet())
    assert table == {}
    clock.now += 0.1
    agent.busy = True  # a batch in progress writes it itself
    asyncio.run(agent.write_pending_while_quiet())
    assert table == {}
    agent.busy = False
    asyncio.run(agent.write_pending_while_quiet())
    assert stored(table, "p-1") == {"c-1"}
    assert agent.stream.acked == held


def test_a_revocation_writes_everything_and_acks_nothing(clock: Clock, held: list[Any]) -> None:
    table: dict[str, bytes] = {}
    agent = make_agent(60.0, table)
    asyncio.run(agent.on_batch([interest("p-1", "c-1", 0)]))
    asyncio.run(agent.write_pending(revoked=True))
    assert stored(table, "p-1") == {"c-1"}
    # The next owner reads the record again (noting it twice changes nothing).
    assert agent.stream.acked == []
    assert not agent.pending


def test_a_change_from_before_a_rebalance_is_neither_written_nor_acked(
    clock: Clock, held: list[Any]
) -> None:
    table: dict[str, bytes] = {}
    agent = make_agent(1.0, table)
    asyncio.run(agent.on_batch([interest("p-1", "c-1", 0)]))
    agent.worker.app.consumer_generation_id = 2  # partitions reassigned meanwhile
    clock.now += 1.0
    asyncio.run(agent.write_pending_while_quiet())
    assert table == {}  # read again from the last commit, by whoever owns it now
    assert agent.stream.acked == []


def test_every_zero_writes_at_the_end_of_each_batch(clock: Clock, held: list[Any]) -> None:
    table: dict[str, bytes] = {}
    agent = make_agent(0.0, table)
    asyncio.run(agent.on_batch([interest("p-1", "c-1", 0)]))
    assert stored(table, "p-1") == {"c-1"}
    assert agent.stream.acked == held


def test_pending_indexes_due_and_taken() -> None:
    pending = PendingIndexes(every=1.0)
    assert not pending and not pending.due(5.0)
    index = InterestIndex()
    pending.changed("p-1", index, "ev-1", now=10.0)
    pending.changed("p-1", index, "ev-2", now=10.5)
    assert pending.get("p-1") is index and pending.get("p-2") is None
    assert not pending.due(10.9) and pending.due(11.0)  # from the oldest change
    indexes, events = pending.take()
    assert indexes == {"p-1": (index, "ev-2")} and events == ["ev-1", "ev-2"]
    assert not pending and pending.get("p-1") is None


def test_changes_made_across_a_revocation_are_dropped_not_decided_on(
    clock: Clock, held: list[Any]
) -> None:
    table, agent = c1_noted_on_a_stored_c0(every_s=60.0)
    asyncio.run(agent.write_pending(revoked=True))  # the revocation: written, not acked
    # A batch that began before the revocation changes p-1 after it (its partition may move).
    agent.generation = agent.cache.generation
    agent.cache.clear()
    late = interest("p-1", "c-2", 1)
    asyncio.run(agent.on_record(late, late.message, {}))
    assert agent.pending.get("p-1") is not None
    # The next batch, in the new generation, does not decide on it: it reads what was written.
    asyncio.run(agent.on_batch([forget("p-1", "c-0", 2)]))
    clock.now += 60.0
    asyncio.run(agent.write_pending_while_quiet())
    assert stored(table, "p-1") == {"c-1"}  # c-2 is read again from the last commit
    assert agent.stream.acked == [held[-1]]  # only the forget's record, written now
