"""The `aliases` table: absorbed customer id -> the customer id it was merged into.

When two profiles merge (agents.profile), the absorbed id does not disappear from the world:
upstream systems keep sending events, receipts and commands that carry it. The alias lets the
customer agent forward them to the survivor. The table is keyed exactly like `customers` (raw
customer-id bytes, same partition count), so it is co-partitioned with the customer-keyed
topic: the agent that receives a record for an absorbed id finds its alias locally.

Survivors always have the smaller id (agents.identity.resolve_link), so a chain of aliases
(a -> b -> c, after successive merges) only ever descends and cannot loop.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from tables.customers import define_customer_keyed_table

__all__ = ["ALIASES_TABLE", "AliasTable", "define_aliases_table"]

ALIASES_TABLE = "aliases"


def define_aliases_table(
    app: Any, partitions: int, store_options: Mapping[str, Any] | None = None
) -> Any:
    """Declare the table on ``app`` (raw bytes keys and values, like `customers`)."""
    return define_customer_keyed_table(
        app,
        ALIASES_TABLE,
        "absorbed customer id -> surviving customer id (after a profile merge)",
        partitions,
        store_options,
    )


class AliasTable:
    """Typed access; ``table`` is a Faust table or any mutable mapping (tests)."""

    def __init__(self, table: MutableMapping[Any, bytes] | Any) -> None:
        self.table = table

    def survivor(self, customer_id: bytes | str) -> str | None:
        key = customer_id.encode() if isinstance(customer_id, str) else bytes(customer_id)
        value = self.table.get(key)
        return None if value is None else bytes(value).decode()

    def record(self, absorbed: str, survivor: str) -> None:
        if self.survivor(absorbed) != survivor:  # one changelog record, only on change
            self.table[absorbed.encode()] = survivor.encode()

    def forget(self, absorbed: str, survivor: str) -> bool:
        """Drop the alias if it still points to ``survivor`` (an erased customer)."""
        if self.survivor(absorbed) == survivor:
            self.table.pop(absorbed.encode(), None)
            return True
        return False
