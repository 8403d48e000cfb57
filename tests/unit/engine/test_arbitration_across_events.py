"""Arbitration across events, through `decide`: marketing sends triggered by separate events
within the arbitration window are decided together at its close, so the highest priorities go
whatever order their triggers arrived in, and the lowest lose to the caps."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine import CustomerEvent, CustomerState, Decision, Rules, decide
from orchestrator.engine.errors import PolicyError
from orchestrator.engine.policy import DEFAULT_POLICY, parse_policy
from orchestrator.engine.signals import WakeUp
from orchestrator.engine.state import pending_wakeups

from .factories import T0, contactable, event, journey_rules

WINDOW = timedelta(minutes=1)


def offer_journey(priority: int, category: str = "marketing") -> str:
    return f"""
id: j{priority}
version: 1
name: Offer {priority}
category: {category}
priority: {priority}
entry: {{event: custom.t{priority}}}
steps:
  - id: announce
    send: {{channel: email, template: t{priority}}}
"""


def policy(per_day: int, window: str = "1m") -> str:
    return f"""
quiet_hours: off
frequency_caps:
  categories: [marketing]
  global: {{per_day: {per_day}}}
  channels: {{email: {{per_day: 50}}}}
offers: {{one_in_flight: false}}
arbitration: {{defer_by: 30m, window: {window}}}
"""


def rules_for(priorities: list[int], per_day: int, window: str = "1m") -> Rules:
    return journey_rules(*(offer_journey(p) for p in priorities), policy=policy(per_day, window))


def run(
    rules: Rules, events: list[CustomerEvent], until: datetime, *, inputs_first: bool = False
) -> tuple[CustomerState | None, list[Decision]]:
    """Feed the events and every wake-up they cause through decide in time order, each on its
    own time: a wake-up due at an event's time first, or with ``inputs_first`` the event
    first (orchestrator.simulator's tie rule)."""
    state: CustomerState | None = contactable()
    decisions: list[Decision] = []
    pending = sorted(events, key=lambda e: e.event_time)
    while True:
        wakeups = pending_wakeups(state) if state is not None else []
        due = wakeups[0] if wakeups and wakeups[0].due_at <= until else None
        signal: CustomerEvent | WakeUp
        if pending and (
            due is None
            or pending[0].event_time < due.due_at
            or (inputs_first and pending[0].event_time == due.due_at)
        ):
            signal = pending.pop(0)
            now = signal.event_time
        elif due is not None:
            signal, now = due, due.due_at
        else:
            return state, decisions
        d = decide(state, signal, now, rules)
        state = d.state
        decisions.append(d)


def sent(decisions: list[Decision]) -> list[tuple[str, datetime]]:
    return [(a.journey_id, a.created_at) for d in decisions for a in d.actions]


def explained(decisions: list[Decision], code: str) -> list[str]:
    return [e.message for d in decisions for e in d.explanations if e.code == code]


def test_a_burst_in_reverse_priority_order_sends_the_highest_first_and_caps_the_lowest() -> None:
    rules = rules_for([10, 20, 30, 40], per_day=3)
    burst = [
        event(f"custom.t{p}", T0 + timedelta(seconds=s))
        for p, s in ((10, 0), (20, 10), (30, 20), (40, 40))
    ]
    _, decisions = run(rules, burst, T0 + timedelta(days=1))

    # Nothing leaves before the window opened by the first trigger closes; then the best goes.
    assert sent(decisions)[0] == ("j40", T0 + WINDOW)
    assert [j for j, _ in sent(decisions)] == ["j40", "j30", "j20"]
    (capped,) = explained(decisions, "frequency_cap")
    assert "global cap of 3 per rolling day reached" in capped
    assert "arbitration window" in capped  # names the window it lost in


def test_separate_events_at_the_same_instant_send_one_marketing_message() -> None:
    # Arbitration across events off: still one marketing message per customer per moment.
    rules = rules_for([10, 20], per_day=5, window="0s")
    _, decisions = run(rules, [event("custom.t10", T0), event("custom.t20", T0)], T0 + WINDOW)
    assert sent(decisions) == [("j10", T0)]  # the first at T0; j20 deferred, not sent with it
    assert explained(decisions, "lost_arbitration")


def test_transactional_messages_never_wait_for_the_window() -> None:
    rules = journey_rules(
        offer_journey(40),
        offer_journey(5, category="transactional"),
        policy=policy(per_day=3),
    )
    burst = [event("custom.t40", T0), event("custom.t5", T0 + timedelta(seconds=5))]
    _, decisions = run(rules, burst, T0 + timedelta(hours=1))
    assert sent(decisions) == [("j5", T0 + timedelta(seconds=5)), ("j40", T0 + WINDOW)]


def test_a_send_that_could_not_go_anyway_meets_its_verdict_at_once() -> None:
    # The cap is already reached: the late trigger is suppressed on arrival, without a window.
    rules = rules_for([10, 20], per_day=1)
    _, decisions = run(
        rules,
        [event("custom.t20", T0), event("custom.t10", T0 + timedelta(minutes=5))],
        T0 + timedelta(hours=1),
    )
    assert sent(decisions) == [("j20", T0 + WINDOW)]
    suppressed = [
        (e.journey_id, e.at) for d in decisions for e in d.explanations if e.kind == "suppressed"
    ]
    assert suppressed == [("j10", T0 + timedelta(minutes=5))]


def test_the_window_survives_in_the_state_between_calls() -> None:
    rules = rules_for([10], per_day=3)
    d = decide(contactable(), event("custom.t10", T0), T0, rules)
    assert d.actions == ()
    assert d.state is not None and d.state.arbitration_closes_at == T0 + WINDOW
    (wake,) = d.wakeups
    assert wake.due_at == T0 + WINDOW
    restored = CustomerState.from_dict(d.state.to_dict())
    assert restored.arbitration_closes_at == T0 + WINDOW


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=99), min_size=1, max_size=6, unique=True),
    st.data(),
)
def test_the_sent_ones_are_the_highest_priorities_the_caps_allow(
    priorities: list[int], data: st.DataObject
) -> None:
    per_day = data.draw(st.integers(min_value=1, max_value=len(priorities) + 1), label="cap")
    offsets = data.draw(
        st.lists(
            st.integers(min_value=0, max_value=59),
            min_size=len(priorities),
            max_size=len(priorities),
        ),
        label="seconds after the first trigger",
    )
    order = data.draw(st.permutations(priorities), label="arrival order")
    first = min(offsets)
    burst = [
        event(f"custom.t{p}", T0 + timedelta(seconds=s - first))
        for p, s in zip(order, offsets, strict=True)
    ]
    _, decisions = run(rules_for(priorities, per_day), burst, T0 + timedelta(days=1))

    got = [j for j, _ in sent(decisions)]
    best = [f"j{p}" for p in sorted(priorities, reverse=True)][:per_day]
    assert got == best  # the highest priorities, best first, as many as the cap allows
    losers = {f"j{p}" for p in priorities} - set(best)
    capped = {e.journey_id for d in decisions for e in d.explanations if e.code == "frequency_cap"}
    assert capped == losers
    assert all(at >= T0 + WINDOW for _, at in sent(decisions))  # none before the window closed


def test_the_policy_file_sets_the_window_and_refuses_a_misspelt_key() -> None:
    assert DEFAULT_POLICY.arbitration_window == WINDOW
    assert parse_policy("arbitration: {window: 0s}\n", "p.yaml").arbitration_window == timedelta(0)
    assert parse_policy("arbitration: {window: 5m}\n", "p.yaml").arbitration_window == 5 * WINDOW
    with pytest.raises(PolicyError) as refused:
        parse_policy("arbitration: {windw: 5m}\n", "p.yaml")
    assert "p.yaml" in str(refused.value) and "window" in str(refused.value)
