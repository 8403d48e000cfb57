"""Where the customer agent sends a record for a merged-away id (CustomerAgent.survivor): the
merges not written yet, else the aliases table - which a customer whose state is cached skips."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from agents.customer import CustomerAgent
from orchestrator.engine.state import CustomerState
from tables.aliases import AliasTable
from tables.codec import encode_state
from tables.customers import CustomerTable, StateCache


class CountingStore(dict[bytes, bytes]):
    """The aliases table's store, counting reads."""

    reads = 0

    def get(self, key: bytes, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def agent_with(aliases: dict[bytes, bytes], cache: StateCache) -> Any:
    store = CountingStore(aliases)
    worker = SimpleNamespace(state_cache=cache, aliases=AliasTable(store))
    return SimpleNamespace(moving={}, worker=worker), store


def test_an_absorbed_id_goes_to_its_survivor_and_a_cached_customer_reads_no_alias() -> None:
    cache = StateCache()
    agent, store = agent_with({b"c-2": b"c-1"}, cache)
    assert CustomerAgent.survivor(agent, "c-2") == "c-1"
    assert CustomerAgent.survivor(agent, "c-9") is None
    assert store.reads == 2
    cache.put("c-3", CustomerState(customer_id="c-3"), ())
    assert CustomerAgent.survivor(agent, "c-3") is None
    assert store.reads == 2  # no table read for a customer whose state is cached
    agent.moving["c-3"] = "c-1"  # merged in this batch: the batch's merge wins
    assert CustomerAgent.survivor(agent, "c-3") == "c-1"


def test_a_merged_away_customer_leaves_the_cache_so_its_alias_is_found() -> None:
    # The order of finish_moves: the absorbed state is deleted (and dropped from the cache),
    # then the alias written. A cached state must never hide an alias.
    cache = StateCache()
    agent, _ = agent_with({}, cache)
    customers = CustomerTable({"c-2": encode_state(CustomerState(customer_id="c-2"))}, cache)
    assert customers.load("c-2") is not None and "c-2" in cache
    assert CustomerAgent.survivor(agent, "c-2") is None
    customers.delete("c-2")
    agent.worker.aliases.record("c-2", "c-1")
    assert "c-2" not in cache
    assert CustomerAgent.survivor(agent, "c-2") == "c-1"


class Event:
    """A merge record's Faust event, as the moves keep it."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class Stream:
    def __init__(self) -> None:
        self.acked: list[int] = []

    async def ack(self, event: Event) -> None:
        self.acked.append(event.offset)


def agent_moving(profiles: dict[str, bytes]) -> Any:
    """A customer agent with its tables in dicts, and two batches' merges not written yet."""
    from collections import deque

    from agents.customer import Moves

    cache = StateCache()
    aliases: dict[bytes, bytes] = {}
    worker = SimpleNamespace(
        state_cache=cache,
        aliases=AliasTable(aliases),
        customers=CustomerTable(profiles, cache),
        deferred_writes=None,
        app=SimpleNamespace(),
    )
    agent = CustomerAgent.__new__(CustomerAgent)
    agent.worker, agent.stream = worker, Stream()
    first = Moves([(Event(7), "c-2", "c-1")], unacknowledged=1)
    second = Moves([(Event(9), "c-3", "c-1")], unacknowledged=0)
    agent.unwritten = deque([first, second])
    agent.moving = {"c-2": "c-1", "c-3": "c-1"}
    return agent, first, aliases


def test_a_merge_is_written_and_acked_only_once_its_absorb_is_acknowledged() -> None:
    profiles = {k: encode_state(CustomerState(customer_id=k)) for k in ("c-1", "c-2", "c-3")}
    agent, first, aliases = agent_moving(profiles)
    asyncio.run(agent.write_moves())
    # The first batch's absorb is still on its way: nothing written, nothing acked, and the
    # batch after it waits too (in order).
    assert set(profiles) == {"c-1", "c-2", "c-3"} and not aliases and agent.stream.acked == []
    assert CustomerAgent.survivor(agent, "c-2") == "c-1"
    first.delivered()
    asyncio.run(agent.write_moves())
    assert set(profiles) == {"c-1"}
    assert AliasTable(aliases).survivor("c-2") == AliasTable(aliases).survivor("c-3") == "c-1"
    assert agent.stream.acked == [7, 9]  # committed only now, after the writes
    assert agent.moving == {} and not agent.unwritten


def test_partitions_revoked_write_every_merge_and_ack_none() -> None:
    profiles = {k: encode_state(CustomerState(customer_id=k)) for k in ("c-1", "c-2", "c-3")}
    agent, _, aliases = agent_moving(profiles)
    asyncio.run(agent.write_moves(revoked=True))  # after the producer's flush: all acknowledged
    assert set(profiles) == {"c-1"} and len(aliases) == 2
    assert agent.stream.acked == []  # the next owner reads the merges again: same aliases
