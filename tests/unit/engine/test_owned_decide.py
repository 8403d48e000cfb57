"""``decide(owned=True)``: the live worker hands over a state only its cache holds, and the
engine changes it in place instead of copying it. The decisions must be the ones a copy gives,
signal for signal, on a realistic stream with the whole library (arbitration windows, waits,
catch-up wake-ups decided ahead of an event included)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from orchestrator.bench.run import bench_stream
from orchestrator.engine import CustomerEvent, CustomerState, Decision, decide
from orchestrator.simulator import ingest_event

from .factories import library

RULES = library()


def _stories(customers: int) -> dict[str, list[CustomerEvent]]:
    by_customer: dict[str, list[CustomerEvent]] = defaultdict(list)
    for d in bench_stream(customers, None):
        ev = ingest_event(d)
        if isinstance(ev, CustomerEvent) and ev.customer_key:
            by_customer[ev.customer_key].append(ev)
    for events in by_customer.values():
        events.sort(key=lambda e: e.event_time)
    return by_customer


def test_a_decision_on_the_state_itself_is_the_decision_on_a_copy() -> None:
    compared = in_place = 0
    for n, events in enumerate(_stories(120).values()):
        # Every other customer's wake-ups are never fired: each later event decides the ones
        # due before it first (engine/dispatch._wake_before).
        woken = n % 2 == 0
        state: CustomerState | None = None
        for ev in events:
            # Decided late (a backlog): wake-ups due before it are decided first.
            now = ev.event_time + timedelta(minutes=3)
            expected = decide(state, ev, now, RULES, arrived_at=ev.event_time)
            handed = state.clone() if state is not None else None
            got = decide(handed, ev, now, RULES, arrived_at=ev.event_time, owned=True)
            assert got == expected, ev.event_id
            compared += 1
            in_place += got.state is handed and handed is not None
            state = _wake(expected) if woken else expected.state
    assert compared > 1000 and in_place > 800


def _wake(decision: Decision) -> CustomerState | None:
    """The state after the decision's wake-ups, each decided at its due time."""
    state = decision.state
    for wakeup in decision.wakeups:
        if state is None:
            break
        owned = state.clone()
        got = decide(owned, wakeup, wakeup.due_at, RULES, owned=True)
        assert got == decide(state, wakeup, wakeup.due_at, RULES)
        state = got.state
    return state
