"""Arbitration across events: the marketing messages due for one customer within a short window
are decided together when the window closes, so the highest priority goes whatever order their
triggers arrived in.

Without a window, "one marketing message per customer per moment" would hold only inside one
decide call: a burst of page views or an app session triggers several journeys by separate events
seconds apart, the first to arrive would be sent, and the caps would then suppress the
higher-priority ones that arrived last.

The sends placed here are the marketing sends governance would let go now were they alone (one
it would suppress, defer or hold anyway meets that verdict at once: `sending.arbitrate`).
The rule, on logical times only, so the live worker and the simulator group the same sends
whatever their processing delays. A send's *due* time is when its trigger reached the pipeline
or its wait ended, never when a worker got round to it; a call's logical time (``at``) is when
its signal reached the pipeline (an event's record time, a wake-up's due time: `Run.at`; the
simulator's clock):

- A marketing send due at ``d`` with no open window, or due at or after the open window's close,
  opens a window ``[d, d + window)``.
- A send due before the open window's close joins it.
- While the call's logical time is before its window's close the send waits for it (a wake-up
  at the close); a call at or after the close arbitrates every member present in that one
  call, with the transactional and service messages of the call (which never wait).

Event time, not processing time, closes a window. A worker working off a backlog (after a
restart, or any catch-up) decides an event long after it happened: were the window closed by
the worker's clock, the first send placed in it would be arbitrated at once, before the
customer's next event inside the same window (further back in another topic's partition) is
read, and two messages would go where the simulator sends one. Instead such a window waits
for a wake-up at its close even when that close has passed (due at once), and the worker fires
a wake-up only once it has read its partition's inputs up to the wake-up's time
(agents/watermarks.py); the close wake-up's call (logical time = the close) arbitrates every
send waiting in the window. No loop: a call at or after the close never waits. In the
simulator the logical time is its clock, so nothing changes there.

A window that closed before the call's logical time (a wake-up long after, a send released
from a hold) is arbitrated at once; a send due after it opens a new window, so one decide
call may close several windows: the one-marketing-message-per-moment rule of that call still
lets only one of them send now.
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

    arbitrate_now: tuple[K, ...]  # their window closed by the call's logical time: decided now
    wait_until: dict[K, datetime]  # their window is open at that time: wait for its close
    closes_at: datetime | None  # the customer's latest window close, kept in their state
    window_of: dict[K, datetime]  # the close of the window each send was placed in


def plan_windows(
    closes_at: datetime | None,
    due: Sequence[tuple[K, datetime]],
    at: datetime,
    window: timedelta,
) -> WindowPlan[K]:
    """Place each marketing send (``(key, due time)``) in its window.

    ``closes_at`` is the close of the customer's latest window (None: never had one). ``at`` is
    the call's logical time (`Run.at`), never the worker's clock: a window it has not reached
    waits for its close wake-up, even one whose close the clock has passed. A zero ``window``
    turns arbitration across events off: everything is arbitrated now.
    """
    if window <= timedelta(0):
        return WindowPlan(tuple(k for k, _ in due), {}, closes_at, {})
    arbitrate_now: list[K] = []
    wait_until: dict[K, datetime] = {}
    window_of: dict[K, datetime] = {}
    # In due order, so a late member of an old window is placed before a send that opens the
    # next one (the order the simulator's clock meets them).
    for key, due_at in sorted(due, key=lambda kd: kd[1]):
        if closes_at is None or due_at >= closes_at:
            closes_at = due_at + window
        window_of[key] = closes_at
        if at < closes_at:
            wait_until[key] = closes_at
        else:
            arbitrate_now.append(key)
    return WindowPlan(tuple(arbitrate_now), wait_until, closes_at, window_of)
