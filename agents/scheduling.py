"""The order in which the consumer hands a fetch's records to the agents: by record time.

A customer's events reach the worker through several channel topics (a web tracker, a shop, a
till), all co-partitioned, and the customer agent decides them in the order the consumer hands
them over. Live, that is the order they arrive. Working off a backlog (a restart, a rebalance,
a worker behind its input) one fetch brings seconds of every partition at once, and Faust's
default scheduler (``faust.transport.utils.DefaultSchedulingStrategy``) hands them over
round-robin by topic: one record of each topic in turn, each topic's partitions one after the
other. A customer's sign-up on ``events.app`` could then be decided before the profile update
that gave their e-mail address 50 ms earlier on ``events.web``, whenever more of the web
topic's records came before it in the fetch - a welcome e-mail "unreachable" that the
simulator, reading by event time, sends.

Here a fetch's records are merged by their Kafka record time (the producer's create time:
when the upstream system sent the event), each partition's own order kept whatever its
timestamps say (the merge only ever compares the partitions' next records), ties in the
order Faust lists the partitions. That is the order Kafka Streams processes a task's
partitions in. It holds within a fetch: a backlog larger than one fetch is merged fetch by
fetch, and events of different topics still have no order Kafka guarantees.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping
from itertools import repeat
from typing import Any

from faust.types.transports import SchedulingStrategyT

__all__ = ["RecordTimeOrder"]


class RecordTimeOrder(SchedulingStrategyT):
    """Faust's ``ConsumerScheduler``: a fetch's records merged by record time."""

    def __init__(self) -> None:
        pass

    def iterate(self, records: Mapping[Any, list[Any]]) -> Iterator[tuple[Any, Any]]:
        if len(records) == 1:
            ((tp, messages),) = records.items()
            return zip(repeat(tp), messages)
        return heapq.merge(
            *(zip(repeat(tp), messages) for tp, messages in records.items()),
            key=_record_time,
        )


def _record_time(item: tuple[Any, Any]) -> int:
    return int(item[1].timestamp)
