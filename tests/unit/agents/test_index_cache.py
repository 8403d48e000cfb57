"""The product agent's cache of decoded interest indexes (agents.catalog.IndexCache)."""

from __future__ import annotations

from agents.catalog import IndexCache
from orchestrator.catalog import InterestIndex


def _index(*customers: str) -> InterestIndex:
    return InterestIndex({c: 1_800_000_000 for c in customers})


def test_a_batch_takes_its_indexes_out_and_puts_them_back_once_written() -> None:
    cache = IndexCache()
    cache.keep({"p-1": _index("c-1")}, cache.generation)
    generation = cache.generation
    taken = cache.take("p-1")
    assert taken is not None and set(taken.entries) == {"c-1"}
    # While the batch runs the index is not in the cache: interrupted here, the next batch
    # decodes the stored index rather than one changed but never written.
    assert cache.take("p-1") is None
    taken.entries["c-2"] = 1_800_000_100
    cache.keep({"p-1": taken}, generation)
    again = cache.take("p-1")
    assert again is taken


def test_a_batch_that_straddles_a_revocation_keeps_nothing() -> None:
    cache = IndexCache()
    generation = cache.generation
    cache.clear()  # partitions revoked while the batch ran
    cache.keep({"p-1": _index("c-1")}, generation)
    assert len(cache) == 0 and cache.take("p-1") is None


def test_the_least_recently_used_go_beyond_the_size() -> None:
    cache = IndexCache(size=2)
    for pid in ("p-1", "p-2", "p-3"):
        cache.keep({pid: _index("c-1")}, cache.generation)
    assert len(cache) == 2
    assert cache.take("p-1") is None
    assert cache.take("p-3") is not None
    off = IndexCache(size=0)
    off.keep({"p-1": _index("c-1")}, off.generation)
    assert len(off) == 0
