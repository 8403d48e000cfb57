"""The `customers` table: customer id -> CustomerState, stored as versioned bytes.

The Faust table holds plain bytes (raw serializers) so the format is ours, not Faust's;
:class:`CustomerTable` is the typed view the agents use. Every write is one changelog record
(Faust has no write cache), so a batch writes each customer once (:class:`PendingWrites`), and
a decision that sends nothing may leave its write to a later batch (:class:`DeferredWrites`).

:class:`StateCache` keeps the most recently used decoded states in memory: a busy customer is
decoded once, not on every signal. It is safe because the table has one writer per partition
(this worker's customer agent, through :class:`CustomerTable`, which keeps the cache in step),
a stored state is changed only by a decision on it in place (``decide(owned=True)``), which
the decide step allows only while no pending write of the batch holds it and undoes by
:meth:`CustomerTable.forget_cached` if the decision fails, and the cache is cleared whenever
partitions move (another worker may have written them meanwhile).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from faust.streams import current_event

from orchestrator.config import WorkerSettings
from orchestrator.engine.state import CustomerState
from tables.codec import decode_record, encode_record
from tables.outbox import Outbox

__all__ = [
    "CUSTOMERS_TABLE",
    "CustomerTable",
    "Deferred",
    "DeferredWrites",
    "Flushed",
    "PendingWrites",
    "StateCache",
    "define_customer_keyed_table",
    "define_customers_table",
]

CUSTOMERS_TABLE = "customers"


def define_customers_table(
    app: Any, partitions: int, store_options: Mapping[str, Any] | None = None
) -> Any:
    """Declare the table on ``app`` (co-partitioned with the customer-keyed topics)."""
    return define_customer_keyed_table(
        app,
        CUSTOMERS_TABLE,
        "customer id -> CustomerState (tables.codec format)",
        partitions,
        store_options,
    )


def define_customer_keyed_table(
    app: Any,
    name: str,
    help: str,
    partitions: int,
    store_options: Mapping[str, Any] | None = None,
) -> Any:
    """A table keyed by customer id, co-partitioned with the customer-keyed topics.

    ``value_type=bytes`` makes Faust use its raw serializer: the bytes are ours.
    ``key_type=bytes`` does the same for keys (a ``str`` key is stored as its UTF-8 bytes): the
    changelog keys are then exactly the customer-keyed topics' keys, so Faust's table routing
    (``app.table_route``), which hashes the *serialized* key, finds the partition the customer's
    records really go to. With ``key_type=str`` Faust serializes keys as JSON (``"c-1"`` with
    quotes) and the customer view was routed to the wrong worker as soon as two shared a group.

    ``store_options`` go to the RocksDB store (block cache sizes...). Never set a ``ttl``: with
    rocksdict it is RocksDB's data TTL and silently deletes customers.
    """
    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        help=help,
        # A copy: Faust's RocksDB store pops keys from the dict it is given.
        options=dict(store_options or {}),
    )


class StateCache:
    """customer id -> (state, outbox) as last stored, most recently used kept, at most ``size``."""

    def __init__(self, size: int = WorkerSettings.state_cache_size) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[CustomerState, Outbox]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, customer_id: str) -> tuple[CustomerState, Outbox] | None:
        entry = self._entries.get(customer_id)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(customer_id)
        self.hits += 1
        return entry

    def put(self, customer_id: str, state: CustomerState, outbox: Outbox) -> None:
        if self.size <= 0:
            return
        self._entries[customer_id] = (state, outbox)
        self._entries.move_to_end(customer_id)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __contains__(self, customer_id: object) -> bool:
        """Whether the customer's state is cached (no effect on what is kept, nor on the
        hit counts)."""
        return customer_id in self._entries

    def discard(self, customer_id: str) -> None:
        self._entries.pop(customer_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class PendingWrites:
    """The writes of one batch of records, coalesced: customer id -> the latest (state, outbox),
    or None for a deletion, and the source record (Faust event) of that write.

    A busy customer signalled several times in one batch is encoded and written once, one
    changelog record instead of several. The caller flushes before anything the batch decided
    is sent, so the outbox guarantee holds (tables.outbox).
    """

    def __init__(self) -> None:
        self.writes: dict[str, tuple[CustomerState | None, Outbox, Any]] = {}
        #: What a customer's held write is made of, in order, when it is made of decisions
        #: alone (no absorb, resend or deletion in between): each decision's inputs, opaque
        #: here (agents.journey keeps them). Those can be decided again from the stored state,
        #: so the next signal may decide on the held state in place: should it fail half
        #: way, the held state is rebuilt rather than written half changed.
        self.decided: dict[str, list[Any]] = {}
        #: The batch's records (Faust events) each customer's write is made for.
        self.sources: dict[str, list[Any]] = {}
        #: Customers whose write this batch carries records to send (an outbox entry): never
        #: deferred, the records go only once the write is made (tables.outbox).
        self.sending: set[str] = set()
        #: A deferred write taken back into the batch (:class:`DeferredWrites`): the records
        #: of earlier batches whose acks wait for it, and when it was first deferred.
        self.held: dict[str, list[Any]] = {}
        self.since: dict[str, float] = {}
        #: Records that may wait for a deferred write (the journey outcomes of decisions that
        #: send nothing else), each customer's in order: sent once the write is made.
        self.later: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self.writes)


@dataclass(slots=True)
class Deferred:
    """A customer's state decided but not yet written (:class:`DeferredWrites`)."""

    state: CustomerState
    outbox: Outbox
    #: The latest record the write is made for: its partition takes the write.
    source: Any
    #: The decisions since the stored state, in order (PendingWrites.decided).
    decided: list[Any]
    #: The records whose acks wait for the write.
    held: list[Any]
    #: When it was first deferred (monotonic seconds).
    since: float
    #: The records sent once it is written (PendingWrites.later).
    later: list[Any]


@dataclass
class Flushed:
    """What a batch's :meth:`CustomerTable.flush` did: ``written`` states (and deletions);
    ``release``: the records of earlier batches whose deferred write it made, committable
    once their changelog records are with the producer and ``send``, the records that waited
    for those writes (PendingWrites.later), are sent."""

    written: int = 0
    release: list[Any] = field(default_factory=list)
    send: list[Any] = field(default_factory=list)


class DeferredWrites:
    """States decided by a batch but written up to ``every`` seconds later
    (``worker.state_write_every_ms``).

    In a live stream nearly every batch holds each customer once, so every decision was a
    state write of its own: the state's JSON (~7 KB), a RocksDB put and a changelog record -
    about a quarter of the worker's CPU per live event. A customer is often signalled again
    within a second (a visit's page and product views), and the write can wait: a decision
    that sends nothing leaves its state here, read by the next signal as the stored state
    would be, and written once for all the signals of the interval. What a batch decides to
    send is never deferred: its write is made before the sends (tables.outbox), and takes
    the deferred signals' changes along.

    Durability: no offset commit reaches a record a deferred write is made for
    (``held``) before the write is made and what waited for it sent
    (agents.customer.CustomerAgent.commit_floors, faust_workarounds.commit_floor), so none
    covers a change that is not in the changelog. A crash before the write: the records are
    read again from the last commit and decided again on the stored state. Before
    partitions move, everything is written.
    """

    def __init__(self, every: float) -> None:
        self.every = every
        #: customer id -> the deferred write, oldest first (a write taken back into a batch
        #: and deferred again goes to the end with its first time: written at the latest
        #: ``every`` after the entries before it are).
        self.entries: OrderedDict[str, Deferred] = OrderedDict()
        #: Bumped at every change of :attr:`entries` (the commit floors are worked out again).
        self.version = 0
        #: Held records whose write was made outside a batch (a deletion, a direct save):
        #: the caller acks them after its changelog records are with the producer, and sends
        #: what waited for the write.
        self.released: list[Any] = []
        self.unsent: list[Any] = []

    def put(self, customer_id: str, entry: Deferred) -> None:
        self.entries[customer_id] = entry
        self.version += 1

    def take(self, customer_id: str) -> Deferred | None:
        """The customer's deferred write, taken out (None: none)."""
        entry = self.entries.pop(customer_id, None)
        if entry is not None:
            self.version += 1
        return entry

    def due(self, now: float) -> list[tuple[str, Deferred]]:
        """The entries deferred ``every`` or more before ``now``, taken out (oldest first)."""
        out: list[tuple[str, Deferred]] = []
        entries = self.entries
        limit = now - self.every
        while entries:
            customer_id, entry = next(iter(entries.items()))
            if entry.since > limit:
                break
            del entries[customer_id]
            out.append((customer_id, entry))
        if out:
            self.version += 1
        return out

    def take_all(self) -> list[tuple[str, Deferred]]:
        out = list(self.entries.items())
        self.entries.clear()
        self.version += 1
        return out

    def take_released(self) -> tuple[list[Any], list[Any]]:
        """The records to ack and the records to send after a write outside a batch."""
        released, unsent = self.released, self.unsent
        self.released, self.unsent = [], []
        return released, unsent

    def clear(self) -> None:
        self.version += 1
        self.entries.clear()
        self.released.clear()
        self.unsent.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)


class CustomerTable:
    """Typed access to the table; ``table`` is a Faust table or any mutable mapping (tests).

    ``cache``: decoded states kept between signals (see :class:`StateCache`); every write goes
    through this class so the cache never disagrees with the table. ``pending``: while a batch
    is open, writes are held there (reads see them) until :meth:`flush`. ``deferred``: states
    decided but written later (:class:`DeferredWrites`; reads see them too).
    """

    def __init__(
        self,
        table: MutableMapping[str, bytes] | Any,
        cache: StateCache | None = None,
        pending: PendingWrites | None = None,
        deferred: DeferredWrites | None = None,
    ) -> None:
        self.table = table
        self.cache = cache
        self.pending = pending
        self.deferred = deferred

    def load(self, customer_id: str) -> CustomerState | None:
        return self.load_record(customer_id)[0]

    def load_or_new(self, customer_id: str) -> CustomerState:
        return self.load(customer_id) or CustomerState(customer_id=customer_id)

    def load_record(self, customer_id: str) -> tuple[CustomerState | None, Outbox]:
        """The state and its outbox (tables.outbox); (None, ()) for an unknown customer."""
        if self.pending is not None and customer_id in self.pending.writes:
            state, outbox, _ = self.pending.writes[customer_id]
            return (state, outbox) if state is not None else (None, ())
        if self.deferred is not None and customer_id in self.deferred.entries:
            entry = self.deferred.entries[customer_id]
            if self.pending is not None:
                self._take_back(customer_id)
            return entry.state, entry.outbox
        if self.cache is not None:
            cached = self.cache.get(customer_id)
            if cached is not None:
                return cached
        state, outbox = self.stored_record(customer_id)
        if state is not None and self.cache is not None:
            self.cache.put(customer_id, state, outbox)
        return state, outbox

    @property
    def defers(self) -> bool:
        """Whether a write of this batch may be deferred (and records wait for it)."""
        return self.deferred is not None and self.pending is not None

    def write_with_batch(self, customer_id: str) -> None:
        """The customer's held write is made with this batch, never deferred (a profile about
        to be merged away: its deletion must find nothing left to write)."""
        if self.pending is not None and customer_id in self.pending.writes:
            self.pending.sending.add(customer_id)

    def pending_for(self, customer_id: str) -> bool:
        """True when this batch has written the customer already (the write is held)."""
        return self.pending is not None and customer_id in self.pending.writes

    def decided_in_batch(self, customer_id: str) -> list[Any] | None:
        """The decisions the customer's held write is made of (see PendingWrites.decided);
        None when it holds anything else, or nothing."""
        return None if self.pending is None else self.pending.decided.get(customer_id)

    def _take_back(self, customer_id: str) -> None:
        """A deferred write becomes the batch's held write for the customer (made of
        decisions alone, with their inputs): the batch writes it, or defers it again."""
        assert self.pending is not None and self.deferred is not None
        entry = self.deferred.take(customer_id)
        assert entry is not None
        pending = self.pending
        pending.writes[customer_id] = (entry.state, entry.outbox, entry.source)
        pending.decided[customer_id] = entry.decided
        pending.held[customer_id] = entry.held
        pending.since[customer_id] = entry.since
        pending.later[customer_id] = entry.later

    def _drop_deferred(self, customer_id: str) -> None:
        """Outside a batch, a write for the customer replaces its deferred one: the records
        held for that are acked after this write (DeferredWrites.released)."""
        if self.deferred is not None:
            entry = self.deferred.take(customer_id)
            if entry is not None:
                self.deferred.released += entry.held
                self.deferred.unsent += entry.later

    def stored_record(self, customer_id: str) -> tuple[CustomerState | None, Outbox]:
        """The state and outbox as stored before this batch and the deferred writes: neither
        the held write, nor a deferred one, nor the cache (which may hold a state changed in
        place since)."""
        data = self.table.get(customer_id)
        return (None, ()) if data is None else decode_record(data)

    def replace_held(self, state: CustomerState) -> None:
        """The held write's state replaced (its outbox and source record kept): the state a
        failed in-place decision left half changed, decided again (agents.journey)."""
        assert self.pending is not None
        _, outbox, source = self.pending.writes[state.customer_id]
        self.pending.writes[state.customer_id] = (state, outbox, source)
        if self.cache is not None:
            self.cache.put(state.customer_id, state, outbox)

    def forget_cached(self, customer_id: str) -> None:
        """Drop the customer's decoded state: the next read decodes the stored one."""
        if self.cache is not None:
            self.cache.discard(customer_id)

    def save(
        self,
        state: CustomerState,
        outbox: Outbox = (),
        source: Any = None,
        decided: Any = None,
        sends: bool = True,
        later: list[Any] | None = None,
    ) -> None:
        """Write the state (and the outbox of the decide step; other writers keep none).
        ``state`` must not be changed afterwards: the cache holds it. ``source``: the Faust
        event being processed, for a write held in a batch (its partition takes the write).
        ``decided``: the inputs of the decision that made ``state``, when a decision did (see
        PendingWrites.decided). ``sends``: the write carries records to send now (False only
        for a decision that sends nothing, or only ``later``: the records that may wait for a
        deferred write, sent once it is made; see :attr:`defers`)."""
        customer_id = state.customer_id
        if self.pending is not None:
            source = source if source is not None else current_event()
            pending = self.pending
            if self.deferred is not None and customer_id in self.deferred.entries:
                self._take_back(customer_id)
            if decided is not None and (
                customer_id not in pending.writes or customer_id in pending.decided
            ):
                pending.decided.setdefault(customer_id, []).append(decided)
            else:
                pending.decided.pop(customer_id, None)
            pending.writes[customer_id] = (state, outbox, source)
            pending.sources.setdefault(customer_id, []).append(source)
            if sends:
                pending.sending.add(customer_id)
            if later:
                pending.later.setdefault(customer_id, []).extend(later)
        else:
            assert not later, "records that wait for a write are for a batch's writes"
            self._drop_deferred(customer_id)
            self.table[customer_id] = encode_record(state, outbox)
        if self.cache is not None:
            self.cache.put(state.customer_id, state, outbox)

    def delete(self, customer_id: str, source: Any = None) -> None:
        """Remove the customer (a tombstone in the changelog)."""
        if self.pending is not None:
            source = source if source is not None else current_event()
            if self.deferred is not None and customer_id in self.deferred.entries:
                self._take_back(customer_id)
            self.pending.writes[customer_id] = (None, (), source)
            self.pending.decided.pop(customer_id, None)
            self.pending.sources.setdefault(customer_id, []).append(source)
        else:
            self._drop_deferred(customer_id)
            self.table.pop(customer_id, None)
        if self.cache is not None:
            self.cache.discard(customer_id)

    def flush(
        self, as_source: Callable[[Any], AbstractContextManager[Any]], now: float | None = None
    ) -> Flushed:
        """Write the batch's held writes, each as if processing its source record
        (``as_source(event)``: the table writes to that record's partition), and the deferred
        writes that are due (``now``: monotonic seconds).

        With :attr:`deferred`, a write made of decisions alone that sends nothing is deferred
        instead, unless it was first deferred ``every`` ago already."""
        done = Flushed()
        pending = self.pending
        if pending is None:
            return done
        writes, pending.writes = pending.writes, {}
        decided, pending.decided = pending.decided, {}
        sources, pending.sources = pending.sources, {}
        held, pending.held = pending.held, {}
        since, pending.since = pending.since, {}
        sending, pending.sending = pending.sending, set()
        later, pending.later = pending.later, {}
        deferred = self.deferred
        now = time.monotonic() if now is None else now
        for customer_id, (state, outbox, source) in writes.items():
            if (
                deferred is not None
                and state is not None
                and customer_id in decided
                and customer_id not in sending
                and now - since.get(customer_id, now) < deferred.every
            ):
                deferred.put(
                    customer_id,
                    Deferred(
                        state,
                        outbox,
                        source,
                        decided[customer_id],
                        held.get(customer_id, []) + sources.get(customer_id, []),
                        since.get(customer_id, now),
                        later.get(customer_id, []),
                    ),
                )
                continue
            with as_source(source):
                if state is None:
                    self.table.pop(customer_id, None)
                else:
                    self.table[customer_id] = encode_record(state, outbox)
            done.written += 1
            done.release += held.get(customer_id, ())
            done.send += later.get(customer_id, ())
        if deferred is not None:
            self._write_deferred(deferred.due(now), as_source, done)
        return done

    def write_deferred(
        self,
        as_source: Callable[[Any], AbstractContextManager[Any]],
        now: float | None = None,
    ) -> Flushed:
        """Outside a batch: write the deferred writes that are due (``now``), or all of them
        (``now`` None: before partitions move)."""
        done = Flushed()
        if self.deferred is None:
            return done
        due = self.deferred.take_all() if now is None else self.deferred.due(now)
        self._write_deferred(due, as_source, done)
        return done

    def _write_deferred(
        self,
        due: list[tuple[str, Deferred]],
        as_source: Callable[[Any], AbstractContextManager[Any]],
        done: Flushed,
    ) -> None:
        for customer_id, entry in due:
            with as_source(entry.source):
                self.table[customer_id] = encode_record(entry.state, entry.outbox)
            done.written += 1
            done.release += entry.held
            done.send += entry.later
