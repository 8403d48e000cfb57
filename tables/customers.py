"""The `customers` table: customer id -> CustomerState, stored as versioned bytes.

The Faust table holds plain bytes (raw serializers) so the format is ours, not Faust's;
:class:`CustomerTable` is the typed view the agents use. Every write is one changelog record
(Faust has no write cache), so agents save once per event.

:class:`StateCache` keeps the most recently used decoded states in memory: a busy customer is
decoded once, not on every signal. It is safe because the table has one writer per partition
(this worker's customer agent, through :class:`CustomerTable`, which keeps the cache in step),
a stored state is changed only by a decision on it in place (``decide(owned=True)``), which
the decide step allows only while no pending write of the batch holds it and undoes by
:meth:`CustomerTable.forget_cached` if the decision fails, and the cache is cleared whenever
partitions move (another worker may have written them meanwhile).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

from faust.streams import current_event

from orchestrator.config import WorkerSettings
from orchestrator.engine.state import CustomerState
from tables.codec import decode_record, encode_record
from tables.outbox import Outbox

__all__ = [
    "CUSTOMERS_TABLE",
    "CustomerTable",
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

    def __len__(self) -> int:
        return len(self.writes)


class CustomerTable:
    """Typed access to the table; ``table`` is a Faust table or any mutable mapping (tests).

    ``cache``: decoded states kept between signals (see :class:`StateCache`); every write goes
    through this class so the cache never disagrees with the table. ``pending``: while a batch
    is open, writes are held there (reads see them) until :meth:`flush`.
    """

    def __init__(
        self,
        table: MutableMapping[str, bytes] | Any,
        cache: StateCache | None = None,
        pending: PendingWrites | None = None,
    ) -> None:
        self.table = table
        self.cache = cache
        self.pending = pending

    def load(self, customer_id: str) -> CustomerState | None:
        return self.load_record(customer_id)[0]

    def load_or_new(self, customer_id: str) -> CustomerState:
        return self.load(customer_id) or CustomerState(customer_id=customer_id)

    def load_record(self, customer_id: str) -> tuple[CustomerState | None, Outbox]:
        """The state and its outbox (tables.outbox); (None, ()) for an unknown customer."""
        if self.pending is not None and customer_id in self.pending.writes:
            state, outbox, _ = self.pending.writes[customer_id]
            return (state, outbox) if state is not None else (None, ())
        if self.cache is not None:
            cached = self.cache.get(customer_id)
            if cached is not None:
                return cached
        state, outbox = self.stored_record(customer_id)
        if state is not None and self.cache is not None:
            self.cache.put(customer_id, state, outbox)
        return state, outbox

    def pending_for(self, customer_id: str) -> bool:
        """True when this batch has written the customer already (the write is held)."""
        return self.pending is not None and customer_id in self.pending.writes

    def decided_in_batch(self, customer_id: str) -> list[Any] | None:
        """The decisions the customer's held write is made of (see PendingWrites.decided);
        None when it holds anything else, or nothing."""
        return None if self.pending is None else self.pending.decided.get(customer_id)

    def stored_record(self, customer_id: str) -> tuple[CustomerState | None, Outbox]:
        """The state and outbox as stored before this batch: neither the held write nor the
        cache (which may hold a state changed in place since)."""
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
        self, state: CustomerState, outbox: Outbox = (), source: Any = None, decided: Any = None
    ) -> None:
        """Write the state (and the outbox of the decide step; other writers keep none).
        ``state`` must not be changed afterwards: the cache holds it. ``source``: the Faust
        event being processed, for a write held in a batch (its partition takes the write).
        ``decided``: the inputs of the decision that made ``state``, when a decision did (see
        PendingWrites.decided)."""
        if self.pending is not None:
            source = source if source is not None else current_event()
            pending, customer_id = self.pending, state.customer_id
            if decided is not None and (
                customer_id not in pending.writes or customer_id in pending.decided
            ):
                pending.decided.setdefault(customer_id, []).append(decided)
            else:
                pending.decided.pop(customer_id, None)
            pending.writes[customer_id] = (state, outbox, source)
        else:
            self.table[state.customer_id] = encode_record(state, outbox)
        if self.cache is not None:
            self.cache.put(state.customer_id, state, outbox)

    def delete(self, customer_id: str, source: Any = None) -> None:
        """Remove the customer (a tombstone in the changelog)."""
        if self.pending is not None:
            source = source if source is not None else current_event()
            self.pending.writes[customer_id] = (None, (), source)
            self.pending.decided.pop(customer_id, None)
        else:
            self.table.pop(customer_id, None)
        if self.cache is not None:
            self.cache.discard(customer_id)

    def flush(self, as_source: Callable[[Any], AbstractContextManager[Any]]) -> int:
        """Write the batch's held writes, each as if processing its source record
        (``as_source(event)``: the table writes to that record's partition). Returns how many."""
        if self.pending is None:
            return 0
        writes, self.pending.writes = self.pending.writes, {}
        self.pending.decided = {}
        for customer_id, (state, outbox, source) in writes.items():
            with as_source(source):
                if state is None:
                    self.table.pop(customer_id, None)
                else:
                    self.table[customer_id] = encode_record(state, outbox)
        return len(writes)
