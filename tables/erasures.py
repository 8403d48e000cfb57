"""The `erasures` table: customer id -> when the customer was erased (epoch millis, ASCII).

An erasure deletes the profile and every link to it; what it must leave is the fact and time of
the erasure, so that an event from before it, arriving late or replayed, does not rebuild the
person's past (orchestrator.erasure.admits). The entry holds no personal data: the customer id
is the pseudonymous key every customer-keyed topic already uses. Keyed like `customers`
(co-partitioned), so the decide step finds it locally.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any

from orchestrator.engine.timeutil import to_datetime, to_millis
from tables.customers import define_customer_keyed_table

__all__ = ["ERASURES_TABLE", "ErasureTable", "define_erasures_table"]

ERASURES_TABLE = "erasures"


def define_erasures_table(
    app: Any, partitions: int, store_options: Mapping[str, Any] | None = None
) -> Any:
    return define_customer_keyed_table(
        app,
        ERASURES_TABLE,
        "customer id -> time of the customer's erasure (epoch millis)",
        partitions,
        store_options,
    )


class ErasureTable:
    """Typed access; ``table`` is a Faust table or any mutable mapping (tests)."""

    def __init__(self, table: MutableMapping[Any, bytes] | Any) -> None:
        self.table = table

    def erased_at(self, customer_id: str) -> datetime | None:
        value = self.table.get(customer_id.encode())
        return None if value is None else to_datetime(int(bytes(value)))

    def record(self, customer_id: str, at: datetime) -> None:
        self.table[customer_id.encode()] = str(to_millis(at)).encode()
