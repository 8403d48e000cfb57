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

The gate must hold across a crash too: a wake-up record the dead worker fired (its inputs read
past the due time) is on the customer topic, and the restarted worker, reading again from the
committed offsets, would decide it before the customer's events it has not read again (a
welcome e-mail sent that the order right after the sign-up should have ended). So the timer
marks each record with its *claim* on the partition (`InputWatermarks.claim`: this process,
this ownership of the partition), and the decide step checks the gate again only for a
wake-up record that carries no claim of ours (`InputWatermarks.fired_here`,
`InputWatermarks.reached_for`): one fired by a previous owner or incarnation goes back to the
timer until the inputs are read up to it. A record our own timer fired passed the gate when it
fired; checking it again would hold it whenever the partition got a record since (the
watermark then falls back to that partition's last processed record) and reorder decisions
that the simulator makes in due-time order.

The highwater is what the consumer's last fetch said (read through
``agents.faust_workarounds.highwater_offset``). Caught up to it, a topic-partition holds the
watermark at that fetch's time unless a fetch including it is in flight
(``agents.faust_workarounds.highwater_as_of``): a worker behind its input reaches the
highwater of its last fetch while later records wait on the broker for the next one. A partition not fetched yet, with records to read and none processed, holds its
wake-ups until its first record is processed: its backlog's times are unknown until then.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from agents.signals import header_in
from agents.worker import INGEST_CHANNELS
from orchestrator.topics import Topics

__all__ = ["FIRED_BY_HEADER", "AsOf", "InputWatermarks", "customer_inputs"]

#: The header of a wake-up record that names the claim it was fired under (InputWatermarks.claim).
FIRED_BY_HEADER: Final = "tutti-fired-by"

#: (topic, partition) -> an offset, or None when unknown (Faust's TP is such a named tuple).
OffsetOf = Callable[[tuple[str, int]], int | None]
#: (topic, partition) -> up to when its highwater is known complete, in epoch seconds (None:
#: now).
AsOf = Callable[[tuple[str, int]], float | None]


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
        #: partition -> the claim this worker fires its wake-ups under while it owns it: this
        #: process (a restart is a new one) and this ownership (a partition lost and won back
        #: is a new one).
        self.claims: dict[int, bytes] = {}
        self._incarnation = uuid.uuid4().hex[:12]
        self._ownerships = itertools.count(1)

    def processed(self, messages: Iterable[Any]) -> None:
        """A batch of records (Faust messages: ``tp``, ``offset``, ``timestamp`` in seconds) is
        processed: one write per topic-partition, its last record (a batch is in offset order
        per topic-partition)."""
        last = {m.tp: m for m in messages}
        for tp, m in last.items():
            self.done[tp] = (m.offset, m.timestamp)

    def watermark(
        self,
        partition: int,
        now: datetime,
        highwater: OffsetOf,
        committed: OffsetOf,
        current: Any = None,
        as_of: AsOf | None = None,
    ) -> datetime | None:
        """Event time up to which every input of ``partition`` is processed (at most ``now``);
        None when one of them has records waiting and nothing processed yet.

        ``highwater``: the end offset the consumer knows for a topic-partition (None: not
        fetched yet); ``committed``: the group's committed offset (the next to read after a
        restart). ``current``: the record being processed (a Faust message), counted as
        processed on its topic-partition: the decide step's gate for a wake-up record.
        ``as_of``: up to when a topic-partition's highwater is known complete (epoch seconds;
        None: now, a fetch is in flight for it); without it, always now."""
        mark = now
        for topic in self.topics:
            tp = (topic, partition)
            done = self.done.get(tp)
            if (
                current is not None
                and current.tp == tp
                and (done is None or current.offset > done[0])
            ):
                done = (current.offset, current.timestamp)
            end = highwater(tp)
            # The group's commit may be ahead of what this worker processed (the partition was
            # another worker's for a while): what was committed is processed too.
            position = max(done[0] + 1 if done is not None else 0, committed(tp) or 0)
            if end is not None and position >= end:
                # Nothing more to read as far as the consumer knows: up to now while a fetch
                # is in flight for it, else up to that highwater's fetch (records since then
                # may be waiting on the broker: a partition out of the fetches, see
                # agents.faust_workarounds.highwater_as_of).
                known = as_of(tp) if as_of is not None else None
                if known is not None:
                    at = datetime.fromtimestamp(max(known, done[1] if done else 0.0), UTC)
                    if at < mark:
                        mark = at
                continue
            if done is None:
                return None
            at = datetime.fromtimestamp(done[1], UTC)
            if at < mark:
                mark = at
        return mark

    def reached_for(
        self,
        message: Any,
        due_at: datetime,
        now: datetime,
        highwater: OffsetOf,
        committed: OffsetOf,
        as_of: AsOf | None = None,
    ) -> bool:
        """Have the inputs of ``message``'s partition been processed up to ``due_at``, counting
        ``message`` itself (a wake-up record being decided)?

        Asked only for a record fired under another claim (see the module's docstring): such
        a record is handed back to the timer until then."""
        mark = self.watermark(message.tp[1], now, highwater, committed, message, as_of)
        return mark is not None and mark >= due_at

    def reached(
        self,
        partitions: Iterable[int],
        now: datetime,
        highwater: OffsetOf,
        committed: OffsetOf,
        as_of: AsOf | None = None,
    ) -> dict[int, datetime | None]:
        """Each partition's watermark (the timer's argument to ``WakeUpIndex.due``)."""
        return {p: self.watermark(p, now, highwater, committed, None, as_of) for p in partitions}

    def claim(self, partition: int) -> bytes:
        """The claim wake-ups of ``partition`` are fired under from now on (a new one each
        time the partition becomes ours)."""
        claim = f"{self._incarnation}.{next(self._ownerships)}".encode()
        self.claims[partition] = claim
        return claim

    def fired_here(self, partition: int, headers: Any) -> bool:
        """Was a wake-up record of ``partition`` fired by this worker's timer during its
        current ownership (``headers``: a Faust message's, pairs or a dict)?"""
        claim = self.claims.get(partition)
        return claim is not None and header_in(headers, FIRED_BY_HEADER) == claim

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions no longer ours: what was processed there says nothing of the next owner."""
        gone = set(partitions)
        for tp in [tp for tp in self.done if tp[1] in gone]:
            del self.done[tp]
        for partition in gone:
            self.claims.pop(partition, None)
