"""What may touch a customer who has no profile: the rule the worker and the simulator share.

A profile is created by the first event of a customer. Everything else addressed to a customer
without a profile - a late delivery receipt, a wake-up, an operator command - is about someone
who is gone (erased, or merged into another profile) and must not bring an empty profile back.
Two kinds of *events* must not either:

- a catalog event (price drop, back in stock) fanned out from a product's interest index entry
  that outlived the customer's erasure;
- an event that happened **before the customer was erased** and arrives late: a till uploading
  its offline sales, a replay of the inbound topics when a new worker group rebuilds its state.
  Erasure means the person's past stays gone; an event from after the erasure (they came back
  and signed up again) starts a new profile as usual.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.catalog import CATALOG_EVENT_TYPES
from orchestrator.engine import CustomerCommand, CustomerEvent, CustomerState, Signal

__all__ = ["admits", "erasure_time"]


def admits(previous: CustomerState | None, signal: Signal, erased_at: datetime | None) -> bool:
    """Whether ``signal`` may be decided, given the customer's stored state (None: no profile)
    and when the customer was last erased (None: never)."""
    if previous is not None:
        return True
    if not isinstance(signal, CustomerEvent) or signal.event_type in CATALOG_EVENT_TYPES:
        return False
    return erased_at is None or signal.event_time > erased_at


def erasure_time(signal: Signal, now: datetime) -> datetime | None:
    """When an erase command says the customer was erased: its issue time (never later than
    ``now``), so a rebuild that replays the command long after still draws the line where the
    operator did; None for any other signal. Recorded even for a customer with no profile: a
    rebuild may replay the erasure before the customer's old events."""
    if not isinstance(signal, CustomerCommand) or signal.kind != "erase_customer":
        return None
    return min(signal.issued_at or now, now)
