"""The worker's in-memory index of due wake-ups, per partition it actively owns.

The due times live in each CustomerState (durable, changelog-backed); this index is only a cache
for the timer, rebuilt from the local table when a partition is assigned and dropped when it is
revoked. Firing a wake-up only *sends a record* to the customer-keyed topic: the owning agent
applies it inside the stream (Faust cannot write tables from a timer), and the engine ignores a
stale or duplicate one by its token. So the index may over-fire safely; it must never forget.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from datetime import datetime

from orchestrator.engine.signals import WakeUp
from orchestrator.engine.state import CustomerState, pending_wakeups

__all__ = ["WakeUpIndex"]


class WakeUpIndex:
    """Due wake-ups by partition; `due(now)` pops those whose time has come."""

    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[datetime, str, str]]] = {}
        # What is scheduled per customer, so re-indexing a customer replaces its old entries.
        self._scheduled: dict[str, set[tuple[datetime, str]]] = {}
        self._partition_of: dict[str, int] = {}
        #: Updates for a partition not indexed yet, per customer: see :meth:`update`.
        self._early: dict[int, dict[str, set[tuple[datetime, str]]]] = {}

    def __len__(self) -> int:
        return sum(len(s) for s in self._scheduled.values())

    @property
    def partitions(self) -> set[int]:
        return set(self._heaps)

    def assign(self, partition: int, states: Iterable[CustomerState]) -> int:
        """(Re)build one partition from its local states. Returns the wake-ups indexed.

        What a customer's updates since the partition became ours asked for (:meth:`update`)
        is indexed too, with what its stored state waits for: a write may not be in ``states``
        yet, and over-firing is safe where forgetting is not."""
        early = self._early.pop(partition, {})
        self.revoke(partition)
        self._heaps[partition] = []
        for state in states:
            self.update(partition, state)
        for customer, wanted in early.items():
            self._schedule(partition, customer, wanted | self._scheduled.get(customer, set()))
        return sum(len(s) for c, s in self._scheduled.items() if self._partition_of[c] == partition)

    def revoke(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._early.pop(partition, None)
        for customer, p in list(self._partition_of.items()):
            if p == partition:
                del self._partition_of[customer]
                self._scheduled.pop(customer, None)

    def update(self, partition: int, state: CustomerState | None, customer_id: str = "") -> int:
        """Record what a customer's new state waits for (None: the customer was erased)."""
        customer = state.customer_id if state is not None else customer_id
        wanted = (
            {(w.due_at, w.token) for w in pending_wakeups(state)} if state is not None else set()
        )
        if partition not in self._heaps:
            # Not indexed: a partition the timer has not indexed yet (the customer agent can
            # decide a newly assigned partition's first records before the timer's next tick,
            # and the batch holds its table writes until its end, so the table read that
            # indexes the partition may miss them: kept for :meth:`assign`), or one no longer
            # ours (its new owner rebuilds from its table; dropped by :meth:`keep_early`).
            self._early.setdefault(partition, {})[customer] = wanted
            return 0
        return self._schedule(partition, customer, wanted)

    def _schedule(self, partition: int, customer: str, wanted: set[tuple[datetime, str]]) -> int:
        """Make ``wanted`` what ``customer`` waits for in an indexed ``partition``."""
        # What is still scheduled for the customer here has its heap entry already (an entry
        # leaves ``_scheduled`` when it is popped): only new wake-ups are pushed. Pushing all
        # of them at every write grew the heap by a customer's waiting wake-ups per signal,
        # kept until they fell due - days for a long timer.
        same = self._partition_of.get(customer) == partition
        before = self._scheduled.get(customer, ()) if same else ()
        self._scheduled[customer] = wanted
        self._partition_of[customer] = partition
        if not wanted:
            self._scheduled.pop(customer, None)
            self._partition_of.pop(customer, None)
        heap = self._heaps[partition]
        for due_at, token in wanted:
            if (due_at, token) not in before:
                heapq.heappush(heap, (due_at, customer, token))
        return len(wanted)

    def heap_size(self) -> int:
        """Entries held in the partitions' heaps (superseded ones included, until popped)."""
        return sum(len(heap) for heap in self._heaps.values())

    def keep_early(self, partitions: set[int]) -> None:
        """Forget the early updates (:meth:`update`) of partitions not in ``partitions`` (the
        worker's active ones): stragglers of a partition that moved away."""
        for partition in [p for p in self._early if p not in partitions]:
            del self._early[partition]

    def partition_of(self, customer_id: str) -> int | None:
        """The partition a customer's wake-ups are indexed under (None: none indexed)."""
        return self._partition_of.get(customer_id)

    def next_due(self) -> datetime | None:
        heads = [h[0][0] for h in self._heaps.values() if h]
        return min(heads) if heads else None

    def due(
        self, now: datetime, reached: Mapping[int, datetime | None] | None = None
    ) -> list[WakeUp]:
        """Pop every still-scheduled wake-up due at or before ``now``, soonest first.

        ``reached``: how far each partition's inputs have been processed (event time,
        agents/watermarks.py); a partition's wake-ups fire only up to it (None: none yet). A
        partition it does not name fires up to ``now``."""
        fired: list[WakeUp] = []
        for partition, heap in self._heaps.items():
            limit = now
            if reached is not None and partition in reached:
                mark = reached[partition]
                if mark is None:
                    continue
                limit = min(limit, mark)
            while heap and heap[0][0] <= limit:
                due_at, customer, token = heapq.heappop(heap)
                scheduled = self._scheduled.get(customer)
                if scheduled is None or (due_at, token) not in scheduled:
                    continue  # superseded by a later state of this customer
                scheduled.discard((due_at, token))
                fired.append(WakeUp(customer, due_at, token))
        return sorted(fired, key=lambda w: (w.due_at, w.customer_id, w.token))
