"""Wake-ups: each worker's timer sends the due wake-ups of the partitions it actively owns.

The due times live in every CustomerState (durable, changelog-backed). The in-memory
:class:`orchestrator.wakeups.WakeUpIndex` is a cache over them: a partition is indexed from the
local table once the worker actively owns it and recovery is over, and forgotten when it is no
longer owned; the journey agent updates it after every write (one made before the timer
indexed the partition is kept for it: the batch's table writes may not be in the table yet).
Four times a second the timer pops what is due and *sends a record* (signal kind ``wakeup``) to
the customer-keyed topic: the agent that owns the partition applies it inside the stream,
because faust-streaming cannot write a table from a timer. A duplicate or stale wake-up is a
no-op in the engine, so over-firing is safe.

On event time: a partition's wake-ups fire only up to how far the customer agent has processed
that partition's inputs (agents.watermarks), so a worker working off a backlog meets an
arbitration window's close (or a wait's end) after every event before it, as the simulator
does. Caught up, that is the clock. Each record carries the timer's claim on its partition;
the decide step checks the gate again for a record fired under another claim (a worker that
died or lost the partition: agents.watermarks), which waits for the events read again.

Restarts and rebalances lose nothing: a newly owned partition is rebuilt from the table, so a
wake-up that fell due while nobody owned it fires once, late, on the new owner. Whether a late
send still goes out is the engine's expiry rule: a send step is dropped (suppressed with reason
``expired``) once ``expires_after`` (or the policy's per-category expiry) has passed since the
step fell due, e.g. a cart reminder 12 h late is not sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

from agents.faust_workarounds import (
    actively_owned_partitions,
    input_positions,
    partition_items,
)
from agents.journey import encode_wakeup
from agents.signals import SIGNAL_HEADER, SIGNAL_WAKEUP
from agents.watermarks import FIRED_BY_HEADER, InputWatermarks, customer_inputs
from agents.worker import TuttiWorker
from orchestrator.engine.state import CustomerState
from orchestrator.wakeups import WakeUpIndex
from tables.codec import decode_state

__all__ = ["TICK_SECONDS", "WakeUpTimer", "local_partition_states", "register_timers"]

log = logging.getLogger(__name__)

TICK_SECONDS: Final = 0.25


def local_partition_states(table: Any, partition: int) -> Iterator[CustomerState]:
    """The states stored locally for one partition of a Faust RocksDB-backed table; with another
    store (memory, tests) every local state, which over-indexes harmlessly."""
    items = partition_items(table, partition)
    values = table.values() if items is None else (value for _key, value in items)
    for value in values:
        if value:
            try:
                yield decode_state(value)
            except Exception:  # one bad record must not blind the index
                log.warning("timers: a stored state in partition %d does not load", partition)


class WakeUpTimer:
    """Keeps the index in step with the active assignment and fires due wake-ups."""

    def __init__(
        self,
        worker: TuttiWorker,
        index: WakeUpIndex | None = None,
        inputs: InputWatermarks | None = None,
    ) -> None:
        self.worker = worker
        self.index = index or WakeUpIndex()
        #: How far the customer agent has processed each input (it records its batches here):
        #: a partition's wake-ups fire up to its watermark, not the clock (agents.watermarks).
        #: Without topics (a timer alone, in unit tests) nothing holds them back.
        self.inputs = inputs or InputWatermarks(())
        self.fired = 0

    def active_partitions(self) -> set[int] | None:
        """Partitions of the customers table this worker actively owns; None while rebalancing."""
        return actively_owned_partitions(self.worker.app, self.worker.customers_table)

    def reconcile(self, active: set[int]) -> None:
        enrolments = self.worker.metrics.enrolments
        self.index.keep_early(active)
        gone = self.index.partitions - active
        self.inputs.revoke(gone)
        for partition in gone:
            self.index.revoke(partition)
            enrolments.revoke(partition)
            log.info("timers: partition %d no longer ours; its wake-ups dropped", partition)
        for partition in sorted(active - self.index.partitions):
            self.inputs.claim(partition)
            states = local_partition_states(self.worker.customers_table, partition)
            n = self.index.assign(partition, enrolments.counting(partition, states))
            log.info("timers: partition %d indexed, %d wake-ups pending", partition, n)

    async def tick(self, now: datetime | None = None) -> int:
        active = self.active_partitions()
        if active is None:
            return 0  # paused while partitions move; the new assignment is rebuilt after
        self.reconcile(active)
        topic = self.worker.topic(self.worker.topics.customer_events)
        sent = 0
        now = now or datetime.now(UTC)
        reached = self.inputs.reached(active, now, *input_positions(self.worker.app))
        due = self.index.due(now, reached)
        claims = self.inputs.claims
        for wakeup in due:
            partition = self.index.partition_of(wakeup.customer_id)
            claim = claims.get(partition, b"") if partition is not None else b""
            await topic.send(
                key=wakeup.customer_id.encode(),
                value=encode_wakeup(wakeup),
                headers=[(SIGNAL_HEADER, SIGNAL_WAKEUP), (FIRED_BY_HEADER, claim)],
            )
            sent += 1
        self.fired += sent
        self.worker.metrics.wakeups_sent(due, now)
        return sent


def register_timers(worker: TuttiWorker) -> WakeUpTimer:
    timer = WakeUpTimer(worker, inputs=InputWatermarks(customer_inputs(worker.topics)))
    worker.metrics.watch_wakeups(timer.index)

    async def fire_wakeups() -> None:
        try:
            await timer.tick()
        except Exception:
            log.exception("timers: tick failed; retrying next tick")

    fire_wakeups.__name__ = fire_wakeups.__qualname__ = "fire_wakeups"
    worker.app.timer(TICK_SECONDS, name="fire_wakeups")(fire_wakeups)
    return timer
