"""Where the customer agent sends a record for a merged-away id (CustomerAgent.survivor): the
batch's merges, else the aliases table - which a customer whose state is cached skips."""

from __future__ import annotations

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
