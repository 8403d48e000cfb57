"""The `customers` table: customer id -> CustomerState, stored as versioned bytes.

The Faust table holds plain bytes (raw serializers) so the format is ours, not Faust's;
:class:`CustomerTable` is the typed view the agents use. Every write is one changelog record
(Faust has no write cache), so agents save once per event.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from orchestrator.engine.state import CustomerState
from tables.codec import decode_record, decode_state, encode_record
from tables.outbox import Outbox

__all__ = [
    "CUSTOMERS_TABLE",
    "CustomerTable",
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


class CustomerTable:
    """Typed access to the table; ``table`` is a Faust table or any mutable mapping (tests)."""

    def __init__(self, table: MutableMapping[str, bytes] | Any) -> None:
        self.table = table

    def load(self, customer_id: str) -> CustomerState | None:
        data = self.table.get(customer_id)
        return None if data is None else decode_state(data)

    def load_or_new(self, customer_id: str) -> CustomerState:
        return self.load(customer_id) or CustomerState(customer_id=customer_id)

    def load_record(self, customer_id: str) -> tuple[CustomerState | None, Outbox]:
        """The state and its outbox (tables.outbox); (None, ()) for an unknown customer."""
        data = self.table.get(customer_id)
        return (None, ()) if data is None else decode_record(data)

    def save(self, state: CustomerState, outbox: Outbox = ()) -> None:
        """Write the state (and the outbox of the decide step; other writers keep none)."""
        self.table[state.customer_id] = encode_record(state, outbox)

    def delete(self, customer_id: str) -> None:
        """Remove the customer (a tombstone in the changelog)."""
        self.table.pop(customer_id, None)
