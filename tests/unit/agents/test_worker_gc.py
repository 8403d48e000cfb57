"""The worker tunes Python's collector before it starts (agents.cli.tune_gc): its tail latency was
the collector's pauses (numbers in the function's docstring)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from agents.cli import GC_THRESHOLDS, QuietCollector, freeze_survivors, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_start_up_objects_are_frozen_and_collections_come_later() -> None:
    tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # CPython's default young-generation threshold
    # Cycles are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_quiet_worker_collects_its_young_objects_once_a_second() -> None:
    clock = _Clock()
    made: list[int] = []
    quiet = QuietCollector(
        every=1.0, clock=clock, collect=lambda generation: made.append(generation) or 0
    )
    clock.now += 0.5
    assert not quiet.tick()
    clock.now += 0.6
    assert quiet.tick()
    assert made == [1]  # the young and the middle generations, not a full collection
    clock.now += 0.5
    assert not quiet.tick()  # a second after its own, not before


def test_a_collection_the_allocator_starts_puts_the_quiet_one_off() -> None:
    clock = _Clock()
    made: list[int] = []
    quiet = QuietCollector(
        every=1.0, clock=clock, collect=lambda generation: made.append(generation) or 0
    )
    for _ in range(5):  # a busy worker: the allocator collects every 0.5 s
        clock.now += 0.5
        quiet.on_gc("start", {"generation": 0})
        quiet.on_gc("stop", {"generation": 0})
        assert not quiet.tick()
    assert made == []


def test_the_quiet_collection_is_a_real_one_and_is_seen_by_the_callback() -> None:
    quiet = QuietCollector(every=0.0)
    stop = quiet.install()
    try:
        before = gc.get_stats()[1]
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert quiet.tick()
        after = gc.get_stats()[1]
        assert after["collections"] == before["collections"] + 1
        assert after["collected"] >= before["collected"] + 1  # the cycle
    finally:
        stop()


class _Held:
    """A tracked object a weak reference can follow."""

    def __init__(self) -> None:
        self.parts: list[object] = []


def _tracked(generation: int) -> list[object]:
    return gc.get_objects(generation=generation)


@pytest.mark.usefixtures("restore_gc")
def test_what_survives_a_collection_is_never_walked_again() -> None:
    stop = freeze_survivors()
    try:
        cached = _Held()  # a decoded state in the cache: alive for long
        frozen_before = gc.get_freeze_count()
        gc.collect(0)
        # Without the freeze it would sit in the middle generation, walked by every middle
        # collection from now on.
        assert not any(o is cached for g in (0, 1, 2) for o in _tracked(g))
        assert gc.get_freeze_count() > frozen_before
        # The next collection walks only what was made since.
        later = _Held()
        assert any(o is later for o in _tracked(0))
        gc.collect(1)
        assert not any(o is later for g in (0, 1, 2) for o in _tracked(g))
    finally:
        stop()


@pytest.mark.usefixtures("restore_gc")
def test_a_frozen_object_is_still_freed_when_its_last_reference_goes() -> None:
    stop = freeze_survivors()
    try:
        evicted = _Held()
        gone = weakref.ref(evicted)
        gc.collect(0)  # frozen now
        del evicted  # evicted from the cache: freed by its reference count, no collection
        assert gone() is None
        # A cycle made and dropped between two collections is still collected.
        cycle = _Held()
        cycle.parts.append(cycle)
        dropped = weakref.ref(cycle)
        del cycle
        assert dropped() is not None
        gc.collect(0)
        assert dropped() is None
    finally:
        stop()
