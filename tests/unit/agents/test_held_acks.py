"""No commit past a held ack (agents.faust_workarounds.commit_below_held_acks): Faust's own
offset arithmetic (``Consumer._new_offset``, run here on a stand-in consumer's bookkeeping)
commits over a single unacked record at the head (faust-streaming #606); with the workaround
the commit stops below the lowest record still held, and catches up once it is released."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

import agents.faust_workarounds as fw

TP = ("tutti.product-interest", 3)


class StandIn:
    """What ``Consumer._new_offset`` reads and writes."""

    def __init__(self, committed: int | None, generation: int = 7) -> None:
        self._gap: Any = defaultdict(IntervalTree)
        self._acked: Any = defaultdict(list)
        self._acked_index: Any = defaultdict(set)
        self._committed_offset: Any = defaultdict(lambda: None)
        self._committed_offset[TP] = committed
        self.app = SimpleNamespace(consumer_generation_id=generation)

    def ack(self, *offsets: int) -> None:
        for offset in offsets:
            self._acked[TP].append(offset)
            self._acked_index[TP].add(offset)


def held_message(offset: int, generation: int = 7) -> Any:
    message = SimpleNamespace(tp=TP, offset=offset, acked=False, generation_id=generation)
    message.incref = lambda: None
    return message


@pytest.fixture(autouse=True)
def no_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fw, "_HELD", {})


def faust_offset(consumer: StandIn) -> int | None:
    return Consumer._new_offset(consumer, TP)  # type: ignore[arg-type]


def our_offset(consumer: StandIn) -> int | None:
    return fw._new_offset_below_held(consumer, TP, partial(Consumer._new_offset, consumer))


def hold(offset: int, generation: int = 7) -> Any:
    message = held_message(offset, generation)
    fw.hold_ack(SimpleNamespace(message=message))
    return message


@pytest.mark.parametrize("committed", [None, 10])
def test_faust_alone_commits_over_a_held_record_at_the_head(committed: int | None) -> None:
    head = 0 if committed is None else committed
    consumer = StandIn(committed)
    consumer.ack(head + 1, head + 2)  # the held record at ``head`` is not acked
    assert faust_offset(consumer) == head + 3  # the held record would be lost in a crash


@pytest.mark.parametrize("committed", [None, 10])
def test_the_commit_waits_for_a_held_record_at_the_head(committed: int | None) -> None:
    head = 0 if committed is None else committed
    consumer = StandIn(committed)
    message = hold(head)
    consumer.ack(head + 1, head + 2)
    assert our_offset(consumer) is None
    message.acked = True  # released: our stream.ack
    consumer.ack(head)
    assert our_offset(consumer) == head + 3
    assert fw._HELD == {}


def test_the_commit_stops_below_the_lowest_held_record_and_keeps_the_rest() -> None:
    consumer = StandIn(committed=10)
    first, second = hold(12), hold(14)
    consumer.ack(10, 11, 13, 15, 16)
    assert our_offset(consumer) == 12  # 10 and 11 are committed
    assert consumer._acked[TP] == [13, 15, 16]  # kept for later commits
    first.acked = True
    consumer.ack(12)
    consumer._committed_offset[TP] = 12
    assert our_offset(consumer) == 14
    second.acked = True
    consumer.ack(14)
    consumer._committed_offset[TP] = 14
    assert our_offset(consumer) == 17


def test_a_hold_from_before_a_rebalance_is_ignored() -> None:
    consumer = StandIn(committed=10, generation=8)
    hold(10, generation=7)  # revoked and reassigned since: read again from the commit
    consumer.ack(11, 12)
    assert our_offset(consumer) == 13  # as Faust's own
    assert fw._HELD == {}


def test_a_commit_floor_keeps_the_commit_below_a_record_acked_but_not_written() -> None:
    """The customer agent's deferred states (tables.customers.DeferredWrites): their records
    are acked with their batch, and the floor (CustomerAgent.commit_floors) stops the commit
    below the lowest of them until its state is written."""
    consumer = StandIn(committed=10)
    floors = {TP: 12}
    fw.commit_floor(consumer.app, lambda: floors)
    consumer.ack(10, 11, 12, 13)
    assert our_offset(consumer) == 12  # 10 and 11 are committed, 12 is not
    assert consumer._acked[TP] == [12, 13]  # the floor's own record is kept, acked
    floors.clear()  # written, and what it keeps sent
    consumer._committed_offset[TP] = 12
    assert our_offset(consumer) == 14


def test_without_the_floor_faust_commits_the_acked_record_whose_state_is_not_written() -> None:
    consumer = StandIn(committed=10)
    consumer.ack(10, 11, 12, 13)
    assert our_offset(consumer) == 14  # a crash now would lose record 12's state
