"""Catalog fan-out: the `product_interest` table and the two agents around it.

- ``ingest_catalog`` reads ``events.catalog`` (price drops, back in stock), validates each
  record like any ingest agent (bad ones to the dead-letter topic with their reason) and
  forwards it to the product-keyed topic ``tutti.product-interest`` under its product id: the
  upstream key and partitioner are not trusted to match the table's partitioning.
- the customer agent (agents.customer) notes interest: a product view, wish-list add or
  add-to-cart (or a provisional profile absorbed into a customer) becomes an *interest* record
  on the product-keyed topic, when the index needs it (orchestrator.catalog.interests_to_note).
- ``product_interest`` owns the table (product id -> :class:`InterestIndex`): an interest record
  updates the product's index (one write, and only when it changed); a catalog record fans out
  as one CustomerEvent per interested customer on the customer-keyed topic, each with a derived
  event id (``<event_id>:<customer_id>``) so a redelivered catalog event changes nothing.

Signals on the product-keyed topic: ``interest`` (value: agents-internal JSON), ``catalog``
(value: the normalised catalog event, Avro single-object framing) and ``forget`` (value: an
erased customer's id, sent by the decide step for every product of the erased profile); the
interest and forget records of one customer-agent batch come bundled (agents.bundles).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from agents.bundles import messages_of
from agents.faust_workarounds import (
    as_current_event,
    hold_ack,
    send_direct_changelogs,
    take_batches,
)
from agents.signals import (
    CATALOG_HEADERS,
    EVENT_HEADERS,
    SIGNAL_CATALOG,
    SIGNAL_FORGET,
    SIGNAL_INTEREST,
    signal_kind,
)
from agents.worker import TuttiWorker
from orchestrator.catalog import (
    DEFAULT_INTEREST_LIMITS,
    InterestIndex,
    InterestLimits,
    decode_interest,
    fan_out,
    normalise_catalog,
)
from orchestrator.errors import SerializationError, TuttiError, is_transient, retry_while_transient
from orchestrator.ingest import check_record_size

__all__ = [
    "PRODUCT_INTEREST_TABLE",
    "CatalogStats",
    "IndexCache",
    "PendingIndexes",
    "ProductInterestAgent",
    "define_product_interest_table",
    "register_catalog",
]

log = logging.getLogger(__name__)

#: The product agent's batches (as the customer agent's: agents.customer).
BATCH_MAX: Final = 500
BATCH_WITHIN: Final = 0.01
#: How often the timer looks for pending index writes a quiet stream has left due (seconds).
INDEX_TIMER_EVERY_S: Final = 0.25

PRODUCT_INTEREST_TABLE = "product_interest"


class CatalogStats:
    """Counters for logs and tests."""

    def __init__(self) -> None:
        self.interest_records = 0
        self.index_writes = 0
        self.catalog_events = 0
        self.fanned_out = 0


class IndexCache:
    """product id -> its decoded :class:`InterestIndex` as this worker last wrote it, the most
    recently used ``size`` kept: a batch of the product agent then decodes a popular product's
    index (up to ``max_customers`` entries) only when it was not in a recent batch - at 900 live
    events/s, batches of a few records each, decoding took 3 % of the worker's main thread.

    Safe because the agent is the table's only writer for its partitions. A batch takes the
    indexes it uses out (:meth:`take`) and puts them back once written (:meth:`keep`), so one
    interrupted half-way leaves none changed but unwritten; a revocation clears the cache and
    starts a new generation, and a batch that began in an older one keeps nothing (its
    partitions may have moved, and may come back written by another worker)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.generation = 0
        self._entries: OrderedDict[str, InterestIndex] = OrderedDict()

    def take(self, product_id: str) -> InterestIndex | None:
        return self._entries.pop(product_id, None)

    def keep(self, indexes: dict[str, InterestIndex], generation: int) -> None:
        if generation != self.generation or self.size <= 0:
            return
        for product_id, index in indexes.items():
            self._entries[product_id] = index
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)


def define_product_interest_table(app: Any, partitions: int, store_options: dict[str, Any]) -> Any:
    """product id -> InterestIndex bytes, co-partitioned with the product-keyed topic.

    Never set a ``ttl`` (RocksDB's TTL would silently drop products); the index ages its
    entries itself.
    """
    return app.Table(
        PRODUCT_INTEREST_TABLE,
        key_type=bytes,  # raw keys, as on the product-keyed topic (see tables.customers)
        value_type=bytes,
        partitions=partitions,
        help="product id -> recently interested customers (orchestrator.catalog.InterestIndex)",
        options=dict(store_options),
    )


def register_catalog(
    worker: TuttiWorker,
    store_options: dict[str, Any],
    limits: InterestLimits = DEFAULT_INTEREST_LIMITS,
) -> CatalogStats:
    """Declare the table and the three agents on ``worker``."""
    table = define_product_interest_table(
        worker.app, worker.settings.topics.partitions, store_options
    )
    stats = CatalogStats()
    cache = IndexCache()
    every = worker.settings.worker.index_write_every_ms / 1000
    agent = ProductInterestAgent(worker, table, limits, stats, cache, every)
    _register_ingest_catalog(worker)
    _register_product_interest(worker, agent)

    @worker.app.on_partitions_revoked.connect
    async def write_then_forget_indexes(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # The pending index writes go out before the partitions move (as the customer
        # agent's, agents.app): the next owner restores them from the changelog.
        await agent.write_pending(revoked=True)
        await worker.app.producer.flush()
        cache.clear()

    return stats


def _register_ingest_catalog(worker: TuttiWorker) -> None:
    source = worker.topic(worker.topics.events("catalog"))
    products = worker.topics.product_interest
    dead_letters = worker.topics.dead_letters
    codec = worker.codec

    def route(msg: Any, now: datetime) -> tuple[bytes, bytes, bool]:
        """(key, value, valid): the product-keyed record, or a dead letter. Raises if transient."""
        try:
            check_record_size(len(msg.value or b""))
            record = codec.decode(msg.value, "CustomerEvent", msg.topic)
            valid = normalise_catalog(record, now)
            product_id = str(valid["product"]["product_id"])
            return product_id.encode(), codec.encode_single_object("CustomerEvent", valid), True
        except Exception as exc:
            if is_transient(exc):
                raise
            if not isinstance(exc, TuttiError):
                log.exception("catalog: unexpected error on %s[%d]@%d", *_where(msg))
            return msg.key, worker.dead_letter_value(msg, exc, now), False

    async def routed(msg: Any) -> tuple[bytes, bytes, bool]:
        await codec.prepare_for_decoding(msg.value, msg.topic)  # off the event loop
        return route(msg, datetime.now(UTC))

    async def ingest_catalog(stream: Any) -> None:
        async for ev in stream.events():
            msg = ev.message
            key, value, valid = await retry_while_transient(
                partial(routed, msg), "ingest catalog", log
            )
            if valid:
                await worker.send(products, key, value, list(CATALOG_HEADERS))
            else:
                log.info("dead-lettered %s[%d]@%d", *_where(msg))
                await worker.send(dead_letters, key, value)

    ingest_catalog.__name__ = ingest_catalog.__qualname__ = "ingest_catalog"
    worker.app.agent(source, name="ingest_catalog", concurrency=1)(ingest_catalog)


class PendingIndexes:
    """Indexes changed but not yet written, and the records whose acks wait for that write.

    A changed index used to be written at the end of each batch: under a live load that was
    a batch every few tens of milliseconds, so a popular product's index (up to
    ``max_customers`` entries, ~34 KB) was encoded, put into RocksDB and sent to its changelog
    many times a second - on the benchmark's live mix, 105 encodes a second of ~270 us each in
    the worker (cold caches: 30 us in a loop), 4.6 % of the main thread, and 3.6 MB/s of
    changelog. Now each changed index is written at most once per ``every`` seconds: the
    agent decides on the index held here (a catalog event fans out to the interest just
    noted), and every record that changed one is acked only after the write (one more
    reference, ``faust_workarounds.hold_ack``), so no offset commit covers an interest whose
    index is not in the changelog. A crash before the write: the records are read again, and
    noting an interest or a forget twice changes nothing."""

    def __init__(self, every: float) -> None:
        self.every = every
        #: product id -> (its index, the latest record that changed it: the write's partition)
        self.indexes: dict[str, tuple[InterestIndex, Any]] = {}
        #: The records whose acks are held until the write, in arrival order.
        self.held: list[Any] = []
        #: When the oldest unwritten change was made (monotonic), None with nothing pending.
        self.since: float | None = None
        #: The ``IndexCache`` generation the pending changes were made in.
        self.generation = 0

    def get(self, product_id: str) -> InterestIndex | None:
        held = self.indexes.get(product_id)
        return held[0] if held is not None else None

    def changed(
        self, product_id: str, index: InterestIndex, event: Any, now: float, generation: int = 0
    ) -> None:
        """``event`` changed ``index`` in a batch of ``generation``; its ack is held (by the
        caller) until the write."""
        self.indexes[product_id] = (index, event)
        self.held.append(event)
        if self.since is None:
            self.since = now
            self.generation = generation

    def due(self, now: float) -> bool:
        return self.since is not None and now - self.since >= self.every

    def take(self) -> tuple[dict[str, tuple[InterestIndex, Any]], list[Any]]:
        """Everything pending, to write and then ack; nothing pending after."""
        indexes, held = self.indexes, self.held
        self.indexes, self.held, self.since = {}, [], None
        return indexes, held

    def __bool__(self) -> bool:
        return self.since is not None


class ProductInterestAgent:
    """The ``product_interest`` agent: owner of the table, in batches (see :class:`PendingIndexes`
    for when an index is written)."""

    def __init__(
        self,
        worker: TuttiWorker,
        table: Any,
        limits: InterestLimits,
        stats: CatalogStats,
        cache: IndexCache,
        every: float,
    ) -> None:
        self.worker = worker
        self.table = table
        self.limits = limits
        self.stats = stats
        self.cache = cache
        self.pending = PendingIndexes(every)
        #: The stream the agent iterates: the held records are acked on it.
        self.stream: Any = None
        #: A batch is being handled: the timer leaves the pending writes to it.
        self.busy = False
        #: The ``IndexCache`` generation the batch being handled began in.
        self.generation = cache.generation
        self.customer_events = worker.topics.customer_events
        self.partitions = worker.settings.topics.partitions

    async def on_batch(self, events: list[Any]) -> None:
        # Batches: a popular product's index (up to max_customers entries) is decoded once per
        # batch however many interest records it got, and written at most once per
        # ``pending.every`` (the per-record rewrite took 15 % of the worker's CPU on the
        # benchmark stream, a rewrite per batch 4.6 % of a live load's main thread).
        self.busy = True
        try:
            generation = self.cache.generation
            if self.pending and self.pending.generation != generation:
                # Changes a batch made across a revocation, after its writes went out: never
                # written nor acked, their records are read again from the last commit, by
                # whoever owns the partition now; the indexes they changed are not used.
                self.pending.take()
            self.generation = generation
            indexes: dict[str, InterestIndex] = {}
            for ev in events:
                try:
                    messages = messages_of(ev.message, self.partitions)
                except SerializationError as exc:  # only this worker writes the topic: a bug
                    log.error("product_interest: skipped %s[%d]@%d (%s)", *_where(ev.message), exc)
                    continue
                for msg in messages:
                    await self.on_record(ev, msg, indexes)
            if self.pending.due(time.monotonic()):
                await self.write_pending()
            self.cache.keep(
                {p: ix for p, ix in indexes.items() if self.pending.get(p) is None}, generation
            )
        finally:
            self.busy = False

    async def write_pending(self, revoked: bool = False) -> None:
        """Write every pending index (as its latest record's event: its partition), then ack
        the records that changed them. An index changed by a record fetched before the last
        rebalance is not written here (its partition may have moved; the record is read again
        from the last commit); ``revoked``: the partitions are about to move, the records stay
        unacked and the next owner reads them again, which changes nothing."""
        if not self.pending:
            return
        app = self.worker.app
        generation = app.consumer_generation_id
        indexes, held = self.pending.take()
        written: dict[str, InterestIndex] = {}
        for product_id, (index, ev) in indexes.items():
            if ev.message.generation_id != generation:
                continue
            with as_current_event(ev):
                self.table[product_id] = index.encode()
            written[product_id] = index
            self.stats.index_writes += 1
        await send_direct_changelogs(app)  # the index writes, in one go
        self.cache.keep(written, self.cache.generation)
        if revoked:
            return
        for ev in held:
            if ev.message.generation_id == generation:
                await self.stream.ack(ev)

    async def write_pending_while_quiet(self) -> None:
        """The timer's turn: a quiet stream starts no batch that would write what is due."""
        if not self.busy and self.pending.due(time.monotonic()):
            await self.write_pending()

    def index_of(self, product_id: str, indexes: dict[str, InterestIndex]) -> InterestIndex:
        if product_id not in indexes:
            index = self.pending.get(product_id)  # (an emptied index is falsy: no ``or``)
            if index is None:
                index = self.cache.take(product_id)
            if index is None:
                index = InterestIndex.decode(self.table.get(product_id))
            indexes[product_id] = index
        return indexes[product_id]

    def changed(self, product_id: str, indexes: dict[str, InterestIndex], ev: Any) -> None:
        hold_ack(ev)  # acked again after the index is written (write_pending)
        self.pending.changed(product_id, indexes[product_id], ev, time.monotonic(), self.generation)

    async def on_record(self, ev: Any, msg: Any, indexes: dict[str, InterestIndex]) -> None:
        """One record (``msg``: the Faust message ``ev`` holds, or one of its bundle's)."""
        kind = signal_kind(msg)
        now = datetime.now(UTC)
        codec = self.worker.codec
        try:
            if not msg.key:
                raise SerializationError("record without a product id key")
            product_id = bytes(msg.key).decode()
            if kind == SIGNAL_INTEREST:
                interest = decode_interest(product_id, bytes(msg.value))
                if self.index_of(product_id, indexes).record(interest, now, self.limits):
                    self.changed(product_id, indexes, ev)
                return
            if kind == SIGNAL_FORGET:
                if self.index_of(product_id, indexes).forget(bytes(msg.value).decode()):
                    self.changed(product_id, indexes, ev)
                return
            if kind != SIGNAL_CATALOG:
                raise SerializationError(f"unknown signal kind {kind!r}")
            record = codec.decode(msg.value, "CustomerEvent", msg.topic)
            customers = self.index_of(product_id, indexes).customers(now, self.limits)
        except (TuttiError, ValueError) as exc:
            # Only this worker writes the topic: a bug or a foreign producer, never data.
            log.error("product_interest: skipped %s[%d]@%d (%s)", *_where(msg), exc)
            return
        for event in fan_out(record, customers):
            await self.worker.send(
                self.customer_events,
                event["identities"]["customer_id"].encode(),
                codec.encode_single_object("CustomerEvent", event),
                list(EVENT_HEADERS),
            )
        self.stats.catalog_events += 1
        self.stats.fanned_out += len(customers)
        log.info(
            "catalog %s for product %s: %d interested customer(s)",
            record["event_type"],
            product_id,
            len(customers),
        )


def _register_product_interest(worker: TuttiWorker, agent: ProductInterestAgent) -> None:
    source = worker.topic(worker.topics.product_interest)

    async def product_interest(stream: Any) -> None:
        agent.stream = stream
        async for events in take_batches(stream, BATCH_MAX, BATCH_WITHIN):
            await agent.on_batch(events)

    product_interest.__name__ = product_interest.__qualname__ = "product_interest"
    worker.app.agent(source, name="product_interest", concurrency=1)(product_interest)

    async def write_due_indexes() -> None:
        await agent.write_pending_while_quiet()

    worker.app.timer(INDEX_TIMER_EVERY_S, name="write_due_indexes")(write_due_indexes)


def _where(msg: Any) -> tuple[str, int, int]:
    return msg.topic, msg.partition, msg.offset
