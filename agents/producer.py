"""The worker's own records to Kafka through librdkafka (confluent-kafka), not aiokafka.

Every record the agents write themselves - actions, outcomes, consent, the customer and identity
topics, dead letters, the bundles - and the changelog records of the tables written on the hot
path (agents.faust_workarounds.DirectChangelog) go through one :class:`RecordProducer`. Faust's
own producer (aiokafka) still carries what Faust writes itself (the other tables' changelogs,
its assignor and leader topics).

Why: aiokafka's producer is pure Python on the worker's event loop - per record a future, the
partitioner, the accumulator, then the produce requests encoded and the socket written by the
loop itself - about a tenth of the main thread while draining a backlog (py-spy, sixteenth
session). librdkafka batches, encodes and writes on its own threads, outside the GIL; a record
costs the loop one ``produce`` call, and its delivery report one callback when the loop polls.

What stays as it was:

- **Nothing committed before it is written.** Faust's commit flushes its producer first
  (faust/transport/consumer.py ``Consumer._commit_offsets``); the worker's flush hook
  (agents.faust_workarounds.complete_buffer_flush) flushes this producer there too, and every
  other ``app.producer.flush()`` of the worker (the analytics agent, a revocation) goes
  through the same hook; a merge's ``absorb`` records are followed by their own delivery
  reports (``send(delivered=...)``) instead, so no batch waits for them. librdkafka's flush
  waits for every record in its queue, so a flush here holds new sends back (:meth:`send`
  waits) until the records that were queued when it began are acknowledged: under a steady
  load the queue would otherwise never empty. A flush sends what lingers at once: it takes
  about a round trip.
  Faust's stop flushes through the same hook, so nothing is left when the worker exits.
- **Order per partition**: one producer, idempotent (librdkafka keeps order per partition
  with retries) and murmur2 like aiokafka (both set by orchestrator.kafka.producer_config), so
  a customer's records land where Faust's would.
- **A refused record stops the worker** (as aiokafka's failed sends did): its source record is
  then redelivered. librdkafka retries a record until ``message.timeout.ms`` (its default, 300
  s) before it reports the failure.
- **Persisted offsets**: the changelog partition's offset Faust keeps in RocksDB (its
  ``_on_changelog_sent``) is set from the delivery reports, the highest per partition each
  time the loop polls, not once per record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from orchestrator.config import Settings
from orchestrator.kafka import producer_config

__all__ = ["RecordProducer"]

log = logging.getLogger(__name__)

#: Delivery reports are served (and persisted offsets set) every this many records handed over,
#: and by :meth:`RecordProducer.poll_now` while the worker is quiet.
POLL_EVERY: Final = 256

#: While a flush waits, how often it looks at librdkafka's queue.
FLUSH_LOOK_S: Final = 0.001

#: librdkafka's "no partition given": its partitioner picks one by key (murmur2 here).
_BY_KEY: Final = -1

#: A function told the topic and error of a record Kafka finally refused.
Refused = Callable[[str, Exception], None]
#: A table partition's changelog offset, as Faust's store keeps it: (topic, partition, offset).
Persist = Callable[[str, int, int], None]


class RecordProducer:
    """One librdkafka producer for the worker's records; see the module's docstring."""

    def __init__(self, settings: Settings, refused: Refused) -> None:
        self._conf = producer_config(
            settings.kafka,
            **{
                "client.id": f"{settings.kafka.client_id}-worker",
                "linger.ms": settings.worker.producer_linger_ms,
                # A record's size is the broker's to refuse (its ~1 MB default), as it was with
                # aiokafka (1 MiB): librdkafka's own default cap is a little lower (1,000,000).
                "message.max.bytes": 4 * 1024 * 1024,
                "on_delivery": self._delivered,
            },
        )
        self._refused = refused
        self._producer: Any = None
        self._since_poll = 0
        #: Set while a flush waits: sends wait for it (see the module's docstring).
        self._flushing: asyncio.Event | None = None
        #: Changelog topics whose delivered offsets are persisted, and the highest seen per
        #: partition since the last poll.
        self._persist: dict[str, Persist] = {}
        self._delivered_at: dict[tuple[str, int], int] = {}

    @property
    def producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self._conf)
        return self._producer

    def persist_offsets(self, topic: str, persist: Persist) -> None:
        """Report each delivery's offset on ``topic`` (a table's changelog) to ``persist``."""
        self._persist[topic] = persist

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        delivered: Callable[[], None] | None = None,
    ) -> None:
        """Hand one record over; its delivery is not awaited (the next flush waits for it).
        ``delivered`` is called once Kafka has acknowledged it (from a later poll)."""
        if self._flushing is not None:
            await self._flushing.wait()
        producer = self.producer
        on_delivery: Callable[[Any, Any], None] | None
        if delivered is not None:
            on_delivery = self._reporting(delivered)
        else:
            on_delivery = self._changelog_delivered if topic in self._persist else None
        where = _BY_KEY if partition is None else partition
        while True:
            try:
                producer.produce(topic, value, key, where, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                self.poll_now()
                await asyncio.sleep(FLUSH_LOOK_S * 5)
        self._since_poll += 1
        if self._since_poll >= POLL_EVERY:
            self.poll_now()

    def poll_now(self) -> None:
        """Serve the delivery reports waiting (a refused record stops the worker) and persist
        the changelog offsets they carry."""
        self._since_poll = 0
        if self._producer is None:
            return
        self._producer.poll(0)
        if self._delivered_at:
            done, self._delivered_at = self._delivered_at, {}
            for (topic, partition), offset in done.items():
                self._persist[topic](topic, partition, offset)

    async def flush(self) -> None:
        """Wait until every record handed over so far is acknowledged (sends wait meanwhile)."""
        if self._producer is None:
            return
        if self._flushing is not None:  # another flush is waiting: it covers ours too
            await self._flushing.wait()
            return
        gate = self._flushing = asyncio.Event()
        try:
            while True:
                # librdkafka's flush, without blocking: sends what lingers at once and serves
                # the delivery reports; returns how many records are still unacknowledged.
                left = self._producer.flush(0)
                self.poll_now()
                if left == 0:
                    return
                await asyncio.sleep(FLUSH_LOOK_S)
        finally:
            self._flushing = None
            gate.set()

    async def serve_reports(self, every_s: float = 0.1) -> None:
        """Poll while the worker runs: a quiet worker still learns of a refused record."""
        while True:
            await asyncio.sleep(every_s)
            self.poll_now()

    # -- delivery reports (on the loop's thread: librdkafka calls them from ``poll``) ---------
    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._refused(msg.topic(), _error(err))

    def _reporting(self, delivered: Callable[[], None]) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                self._refused(msg.topic(), _error(err))
            else:
                delivered()

        return report

    def _changelog_delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._refused(msg.topic(), _error(err))
            return
        tp = (msg.topic(), msg.partition())
        offset = msg.offset()
        if offset > self._delivered_at.get(tp, -1):
            self._delivered_at[tp] = offset


def _error(err: Any) -> Exception:
    from confluent_kafka import KafkaException

    return KafkaException(err)
