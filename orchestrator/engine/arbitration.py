"""Arbitration across events: the marketing messages due for one customer within a short window
are decided together when the window closes, so the highest priority goes whatever order their
triggers arrived in.

Without a window, "one marketing message per customer per moment" would hold only inside one
decide call: a burst of page views or an app session triggers several journeys by separate events
seconds apart, the first to arrive would be sent, and the caps would then suppress the
higher-priority ones that arrived last.

The sends placed here are the marketing sends governance would let go now were they alone (one
it would suppress, defer or hold anyway meets that verdict at once: `sending.arbitrate`).
The rule, on logical times only (a send's *due* time: when its trigger happened or its wait
ended, never when a worker got round to it), so the live worker and the simulator group the same
sends whatever their processing delays:

- A marketing send due at ``d`` with no open window, or due at or after the open window's close,
  opens a window ``[d, d + window)``.
- A send due before the open window's close joins it.
- While ``now`` is before its window's close the send waits for it (a wake-up at the close);
  at or after the close every member present is arbitrated in that one decide call, with the
  transactional and service messages of the call (which never wait).

A window that closed long ago (a worker that was down) is arbitrated at once; a send due after
it opens a new window, so one decide call may close several windows: the one-marketing-message-
per-moment rule of that call still lets only one of them send now.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Generic, TypeVar

__all__ = ["WindowPlan", "plan_windows"]

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class WindowPlan(Generic[K]):
    """What to do with a decide call's marketing sends."""

    arbitrate_now: tuple[K, ...]  # their window has closed: decided in this call
    wait_until: dict[K, datetime]  # their window is open: wait for its close
    closes_at: datetime | None  # the customer's latest window close, kept in their state
    window_of: dict[K, datetime]  # the close of the window each send was placed in


def plan_windows(
    closes_at: datetime | None,
    due: Sequence[tuple[K, datetime]],
    now: datetime,
    window: timedelta,
) -> WindowPlan[K]:
    """Place each marketing send (``(key, due time)``) in its window.

    ``closes_at`` is the close of the customer's latest window (None: never had one). A zero
    ``window`` turns arbitration across events off: everything is arbitrated now.
    """
    if window <= timedelta(0):
        return WindowPlan(tuple(k for k, _ in due), {}, closes_at, {})
    arbitrate_now: list[K] = []
    wait_until: dict[K, datetime] = {}
    window_of: dict[K, datetime] = {}
    # In due order, so a late member of an old window is placed before a send that opens the
    # next one (the order the simulator's clock meets them).
    for key, at in sorted(due, key=lambda kd: kd[1]):
        if closes_at is None or at >= closes_at:
            closes_at = at + window
        window_of[key] = closes_at
        if now < closes_at:
            wait_until[key] = closes_at
        else:
            arbitrate_now.append(key)
    return WindowPlan(tuple(arbitrate_now), wait_until, closes_at, window_of)
