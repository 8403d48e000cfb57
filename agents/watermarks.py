"""Event time for the wake-up timer: a wake-up due at T for customer partition *p* fires only
once the customer agent has processed its inputs for *p* up to T.

The simulator meets every event before a wake-up due after it; a live worker working off a
backlog (after a restart, or any catch-up) would otherwise fire an arbitration window's close
(or a wait's end) by its clock, before the customer's next event inside the window - further
back in another channel topic's partition - is read, and decide it differently
(engine/arbitration.py). A partition's *watermark* is, over every topic-partition the customer
agent reads for it (the channel topics and the customer topic, all co-partitioned): the Kafka
record time of the last record it finished processing there, or the clock when nothing more is
there to read (the processed offset is the partition's end: its highwater). The timer fires a
partition's wake-ups only up to its watermark (`orchestrator.wakeups.WakeUpIndex.due`). When
the worker is caught up the watermark is the clock, so steady state changes nothing.

The highwater is what the consumer's last fetch said (read through
``agents.faust_workarounds.highwater_offset``): a record produced since is not seen yet, as
before. A partition not fetched yet, with records to read and none processed, holds its
wake-ups until its first record is processed: its backlog's times are unknown until then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from agents.worker import INGEST_CHANNELS
from orchestrator.topics import Topics

__all__ = ["InputWatermarks", "customer_inputs"]

#: (topic, partition) -> an offset, or None when unknown (Faust's TP is such a named tuple).
OffsetOf = Callable[[tuple[str, int]], int | None]


def customer_inputs(topics: Topics) -> list[str]:
    """The topics the customer agent reads (agents/customer.py), co-partitioned by customer."""
    return [topics.events(c) for c in INGEST_CHANNELS] + [topics.customer_events]


class InputWatermarks:
    """How far the customer agent has processed each of its input topic-partitions."""

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)
        #: (topic, partition) -> (offset, record time in epoch seconds) of the last record
        #: processed there.
        self.done: dict[tuple[str, int], tuple[int, float]] = {}

    def processed(self, messages: Iterable[Any]) -> None:
        """A batch of records (Faust messages: ``tp``, ``offset``, ``timestamp`` in seconds) is
        processed: one write per topic-partition, its last record (a batch is in offset order
        per topic-partition)."""
        last = {m.tp: m for m in messages}
        for tp, m in last.items():
            self.done[tp] = (m.offset, m.timestamp)

    def watermark(
        self, partition: int, now: datetime, highwater: OffsetOf, committed: OffsetOf
    ) -> datetime | None:
        """Event time up to which every input of ``partition`` is processed (at most ``now``);
        None when one of them has records waiting and nothing processed yet.

        ``highwater``: the end offset the consumer knows for a topic-partition (None: not
        fetched yet); ``committed``: the group's committed offset (the next to read after a
        restart)."""
        mark = now
        for topic in self.topics:
            tp = (topic, partition)
            done = self.done.get(tp)
            end = highwater(tp)
            # The group's commit may be ahead of what this worker processed (the partition was
            # another worker's for a while): what was committed is processed too.
            position = max(done[0] + 1 if done is not None else 0, committed(tp) or 0)
            if end is not None and position >= end:
                continue  # nothing more to read: it holds nothing back
            if done is None:
                return None
            at = datetime.fromtimestamp(done[1], UTC)
            if at < mark:
                mark = at
        return mark

    def reached(
        self, partitions: Iterable[int], now: datetime, highwater: OffsetOf, committed: OffsetOf
    ) -> dict[int, datetime | None]:
        """Each partition's watermark (the timer's argument to ``WakeUpIndex.due``)."""
        return {p: self.watermark(p, now, highwater, committed) for p in partitions}

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions no longer ours: what was processed there says nothing of the next owner."""
        gone = set(partitions)
        for tp in [tp for tp in self.done if tp[1] in gone]:
            del self.done[tp]
