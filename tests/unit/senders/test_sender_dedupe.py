"""One contract for both dedupe stores (RocksDB and its in-memory twin)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.senders.dedupe import (
    DedupeEntry,
    DedupeStore,
    InMemoryDedupeStore,
    RocksDedupeStore,
)
from orchestrator.senders.errors import DedupeStoreError

DAY_MS = 24 * 3600 * 1000
T0 = 1_764_000_000_000

StoreFactory = Callable[[], DedupeStore]


@pytest.fixture(params=["memory", "rocksdb"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "memory":
        return lambda: InMemoryDedupeStore(retention_ms=7 * DAY_MS)
    return lambda: RocksDedupeStore(tmp_path / "dedupe", retention_ms=7 * DAY_MS)


def _done(at_ms: int = T0, offset: int = 5) -> DedupeEntry:
    return DedupeEntry(
        "done",
        at_ms,
        "actions.email",
        2,
        offset,
        status="sent",
        attempts=2,
        provider="smtp",
        provider_message_id="<a1@x>",
        latency_ms=12,
        occurred_at_ms=at_ms,
    )


def test_an_entry_is_found_with_everything_needed_to_rebuild_its_receipt(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    store.put("a1", _done())
    assert store.get("a1", T0 + 1000) == _done()
    assert store.get("a2", T0) is None
    store.close()


def test_entries_expire_after_the_retention_window(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.put("old", _done(at_ms=T0))
    store.put("new", _done(at_ms=T0 + 6 * DAY_MS))
    now = T0 + 7 * DAY_MS + 1
    assert store.get("old", now) is None
    assert store.get("new", now) is not None
    assert store.purge(now) == 1
    assert store.get("new", now) is not None
    store.close()


def test_pending_is_replaced_by_done(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.put("a1", DedupeEntry("pending", T0, "actions.email", 2, 5))
    store.put("a1", _done())
    entry = store.get("a1", T0)
    assert entry is not None and entry.state == "done"
    assert entry.same_record("actions.email", 2, 5)
    assert not entry.same_record("actions.email", 2, 6)
    store.close()


def test_rocksdb_entries_survive_a_restart(tmp_path: Path) -> None:
    store = RocksDedupeStore(tmp_path / "d", retention_ms=DAY_MS)
    store.put("a1", _done())
    store.close()
    reopened = RocksDedupeStore(tmp_path / "d", retention_ms=DAY_MS)
    assert reopened.get("a1", T0) == _done()
    reopened.close()


def test_a_second_sender_on_the_same_store_gets_a_clear_error(tmp_path: Path) -> None:
    first = RocksDedupeStore(tmp_path / "d", retention_ms=DAY_MS)
    try:
        with pytest.raises(DedupeStoreError, match=r"same sender\.data_dir"):
            RocksDedupeStore(tmp_path / "d", retention_ms=DAY_MS)
    finally:
        first.close()
