"""The decoded-state cache in front of the customers table: a busy customer is decoded once, and
the cache never disagrees with the table (every write goes through CustomerTable)."""

from __future__ import annotations

from typing import Any

from orchestrator.engine.state import CustomerState
from tables.codec import encode_record
from tables.customers import CustomerTable, StateCache


class CountingTable(dict[str, bytes]):
    """A mapping that counts reads, like the RocksDB gets the cache saves."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def test_a_busy_customer_is_read_and_decoded_once() -> None:
    table = CountingTable()
    table["c-1"] = encode_record(CustomerState(customer_id="c-1", event_counts={"login": 3}))
    customers = CustomerTable(table, StateCache(8))
    first, _ = customers.load_record("c-1")
    for _ in range(10):
        again, _ = customers.load_record("c-1")
        assert again is first
    assert table.reads == 1


def test_writes_and_deletes_keep_the_cache_in_step_with_the_table() -> None:
    table = CountingTable()
    cache = StateCache(8)
    customers = CustomerTable(table, cache)
    state = CustomerState(customer_id="c-1", event_counts={"signup": 1})
    customers.save(state)
    assert customers.load("c-1") is state
    newer = CustomerState(customer_id="c-1", event_counts={"signup": 1, "login": 1})
    customers.save(newer)
    assert customers.load("c-1") is newer
    assert CustomerTable(table).load("c-1") == newer  # what the table itself holds
    customers.delete("c-1")
    assert customers.load("c-1") is None
    assert "c-1" not in table


def test_the_least_recently_used_state_leaves_first() -> None:
    cache = StateCache(2)
    states = {c: CustomerState(customer_id=c) for c in ("a", "b", "c")}
    cache.put("a", states["a"], ())
    cache.put("b", states["b"], ())
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", states["c"], ())
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2


def test_a_zero_size_cache_keeps_nothing() -> None:
    table = CountingTable()
    customers = CustomerTable(table, StateCache(0))
    customers.save(CustomerState(customer_id="c-1"))
    customers.load("c-1")
    customers.load("c-1")
    assert table.reads == 2
