"""What every agent of one worker shares: settings, topic names, codec, tables, metrics, sends.

Kept apart from agents.app (which imports every agent to wire them) so that agents can import
it without an import circle.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from agents.metrics import WorkerMetrics, dead_letter_stage
from agents.producer import RecordProducer
from orchestrator.analytics import JourneyStats
from orchestrator.codec import AvroCodec
from orchestrator.config import Settings
from orchestrator.ingest import dead_letter
from orchestrator.topics import Topics
from orchestrator.vocabulary import INBOUND_CHANNELS
from tables.aliases import AliasTable
from tables.customers import CustomerTable, DeferredWrites, PendingWrites, StateCache
from tables.erasures import ErasureTable

__all__ = ["INGEST_CHANNELS", "HeldSend", "TuttiWorker"]

HeldSend = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]
#: The records a batch of the customer agent sends, held until its state writes are made
#: (per task: the other agents' sends are never held).
_held_sends: ContextVar[list[HeldSend] | None] = ContextVar("tutti_held_sends", default=None)

#: Inbound channels the customer agent reads directly. `catalog` events are keyed by product
#: and fan out to interested customers: they get their own agent (agents.catalog).
INGEST_CHANNELS: tuple[str, ...] = tuple(c for c in INBOUND_CHANNELS if c != "catalog")


@dataclass
class TuttiWorker:
    """The app and what its agents share: settings, topic names, codec, tables."""

    settings: Settings
    app: Any
    topics: Topics
    codec: AvroCodec
    customers_table: Any
    identities_table: Any = None
    aliases_table: Any = None
    erasures_table: Any = None
    name: str = field(default_factory=socket.gethostname)
    faust_topics: dict[str, Any] = field(default_factory=dict)
    #: The decide step (agents.journey.JourneyStep) the customer agent hands signals to.
    journeys: Any = None
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    state_cache: StateCache = field(default_factory=StateCache)
    #: The customer agent's batch in progress: its state writes, held (tables.customers).
    pending_writes: PendingWrites | None = None
    #: States decided but written later (tables.customers.DeferredWrites); None: written
    #: with their batch (``worker.state_write_every_ms`` 0).
    deferred_writes: DeferredWrites | None = None
    #: The journey counters this worker holds (agents.analytics), for its views and dashboard.
    journey_stats: Callable[[], dict[str, JourneyStats]] | None = None
    #: Where the agents' records go (agents.producer; agents.app.build_worker makes it).
    records: RecordProducer | None = None

    @property
    def customers(self) -> CustomerTable:
        return CustomerTable(
            self.customers_table, self.state_cache, self.pending_writes, self.deferred_writes
        )

    @contextmanager
    def holding(self) -> Iterator[list[HeldSend]]:
        """A batch: state writes and sends of this task are held (and returned) until the
        caller flushes the writes, then sends what was held - in that order, so a crash can
        never leave a sent record whose state (and outbox) is not written."""
        held: list[HeldSend] = []
        token = _held_sends.set(held)
        self.pending_writes = PendingWrites()
        try:
            yield held
        finally:
            _held_sends.reset(token)
            self.pending_writes = None

    @property
    def aliases(self) -> AliasTable:
        return AliasTable(self.aliases_table)

    @property
    def erasures(self) -> ErasureTable:
        return ErasureTable(self.erasures_table)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        delivered: Callable[[], None] | None = None,
    ) -> None:
        """Publish one record without awaiting its delivery; the next offset commit waits for
        it (agents.producer), ``delivered`` is told when Kafka acknowledged it. Inside
        :meth:`holding`, held instead (``delivered`` is not held with it)."""
        held = _held_sends.get()
        if held is not None:
            held.append((topic, key, value, headers))
            return
        if self.records is None:
            raise RuntimeError("this worker has no producer (agents.app.build_worker makes it)")
        await self.records.send(topic, key, value, headers, delivered=delivered)

    def dead_letter_value(
        self, message: Any, error: Exception, failed_at: datetime, stage: str | None = None
    ) -> bytes:
        """A Faust message that cannot be used, as a DeadLetter record (original key, bytes,
        headers and position, the error and its reason) in single-object framing. Counted in
        the metrics here (every caller sends it), by ``stage`` or the step reading its topic."""
        self.metrics.dead_lettered(
            stage or dead_letter_stage(self.topics, message.topic), type(error).__name__
        )
        letter = dead_letter(
            key=message.key,
            value=message.value,
            headers=message.headers or [],
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            error=error,
            failed_at=failed_at,
            worker=self.name,
        )
        return self.codec.encode_single_object("DeadLetter", letter)

    def topic(self, name: str) -> Any:
        """The Faust topic for ``name`` (raw bytes both ways), made once."""
        if name not in self.faust_topics:
            self.faust_topics[name] = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=self.settings.topics.partitions,
            )
        return self.faust_topics[name]
