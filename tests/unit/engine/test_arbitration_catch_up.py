"""Arbitration windows close on event time (orchestrator.engine.arbitration): a worker working
off a backlog - deciding each signal long after it reached the pipeline, with ``arrived_at``
saying when it did - groups and closes windows as the simulator's clock does. A window its
call's logical time has not reached waits for its close wake-up, even when the clock has
passed that close; the close wake-up's call arbitrates it."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine import CustomerEvent, CustomerState, Decision, Rules, decide
from orchestrator.engine.arbitration import plan_windows
from orchestrator.engine.signals import WakeUp
from orchestrator.engine.state import pending_wakeups

from .factories import T0, contactable, event, journey_rules
from .test_arbitration_across_events import WINDOW, offer_journey, policy, rules_for
from .test_arbitration_across_events import run as in_time_order

LATE = timedelta(hours=1)  # how far behind the worker works off its backlog


def catch_up(
    rules: Rules,
    events: list[CustomerEvent],
    until: datetime,
    back_at: datetime = T0 + LATE,
    state: CustomerState | None = None,
) -> list[Decision]:
    """A worker down until ``back_at``, then working off its backlog: each signal in the
    simulator's order (what the worker's watermark gives: a wake-up only once every event
    before it is read), decided on the worker's clock (``back_at`` for the backlog, on time
    after it) with ``arrived_at`` = its logical time (a record's time, a wake-up's due time).
    Stops at ``until``; never loops."""
    state = state or contactable()
    decisions: list[Decision] = []
    pending = sorted(events, key=lambda e: e.event_time)
    clock = back_at - timedelta(microseconds=1)
    for _ in range(200):
        wakeups = pending_wakeups(state) if state is not None else []
        due = wakeups[0] if wakeups and wakeups[0].due_at <= until else None
        signal: CustomerEvent | WakeUp
        if pending and (due is None or pending[0].event_time < due.due_at):
            signal = pending.pop(0)
            logical = signal.event_time
        elif due is not None:
            signal, logical = due, due.due_at
        else:
            return decisions
        clock = max(logical, clock + timedelta(microseconds=1))  # a real clock moves on
        d = decide(state, signal, clock, rules, arrived_at=logical)
        state = d.state
        decisions.append(d)
    raise AssertionError("the backlog never settles: a wake-up loop")


def sends(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(a.journey_id, a.action_id) for d in decisions for a in d.actions]


def test_a_send_placed_in_a_window_the_clock_has_passed_waits_for_its_close_wakeup() -> None:
    plan = plan_windows(None, [("a", T0)], T0 + timedelta(seconds=20), WINDOW)
    assert plan.arbitrate_now == ()
    assert plan.wait_until == {"a": T0 + WINDOW}  # whatever the clock says
    closing = plan_windows(T0 + WINDOW, [("a", T0)], T0 + WINDOW, WINDOW)
    assert closing.arbitrate_now == ("a",)  # the close's own call: no second wait


def test_a_backlogged_event_joins_the_window_its_event_falls_in_and_wins_it() -> None:
    # j10 was decided live before the worker died; j40, 20 s later, is read an hour late,
    # long after j10's window closed on the clock.
    rules = rules_for([10, 40], per_day=3)
    live = decide(contactable(), event("custom.t10", T0), T0, rules)
    assert live.state is not None and live.actions == ()
    j40 = event("custom.t40", T0 + timedelta(seconds=20))

    backlog = decide(live.state, j40, T0 + LATE, rules, arrived_at=j40.event_time)
    assert backlog.actions == ()  # both wait for the window's close, due at once
    assert backlog.state is not None
    assert [w.due_at for w in pending_wakeups(backlog.state)] == [T0 + WINDOW] * 2
    close = pending_wakeups(backlog.state)[0]
    closed = decide(backlog.state, close, T0 + LATE, rules, arrived_at=close.due_at)
    assert [a.journey_id for a in closed.actions] == ["j40"]
    assert {e.journey_id for e in closed.explanations if e.code == "lost_arbitration"} == {"j10"}

    # The simulator, given the same two events, decides the same.
    _, simulated = in_time_order(rules, [event("custom.t10", T0), j40], T0 + WINDOW)
    assert [a.journey_id for d in simulated for a in d.actions] == ["j40"]

    # On the worker's clock alone (no arrived_at), j10's closed window went at once: two
    # messages where the simulator sends one - what event time removes.
    clock_only = decide(live.state, j40, T0 + LATE, rules)
    assert [a.journey_id for a in clock_only.actions] == ["j10"]


def test_a_wait_ending_inside_the_window_in_a_late_wakeup_joins_it() -> None:
    waiting = """
id: jw
version: 1
name: After a wait
category: marketing
priority: 50
entry: {event: custom.w}
steps:
  - id: pause
    wait: 30s
    next: announce
  - id: announce
    send: {channel: email, template: tw}
"""
    rules = journey_rules(offer_journey(10), waiting, policy=policy(per_day=3))
    before = T0 - timedelta(seconds=10)
    entered = decide(contactable(), event("custom.w", before), before, rules)
    assert entered.state is not None
    live = decide(entered.state, event("custom.t10", T0), T0, rules)
    assert live.state is not None
    # The worker comes back an hour later: the wait's end (T0 + 20 s, inside j10's window)
    # and then the window's close.
    decisions = catch_up(rules, [], T0 + timedelta(minutes=5), state=live.state)
    assert [a.journey_id for d in decisions for a in d.actions] == ["jw"]
    assert {
        e.journey_id for d in decisions for e in d.explanations if e.code == "lost_arbitration"
    } == {"j10"}
    assert len(decisions) == 2  # the wait's end, then the close: no wake-up loop


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=99), min_size=1, max_size=6, unique=True),
    st.data(),
)
def test_a_backlog_worked_off_late_sends_what_the_simulator_sends(
    priorities: list[int], data: st.DataObject
) -> None:
    per_day = data.draw(st.integers(min_value=1, max_value=len(priorities) + 1), label="cap")
    offsets = data.draw(
        st.lists(
            st.integers(min_value=0, max_value=150),
            min_size=len(priorities),
            max_size=len(priorities),
        ),
        label="seconds after the first trigger",
    )
    down = data.draw(st.integers(min_value=0, max_value=6 * 3600), label="seconds down")
    rules = rules_for(priorities, per_day)
    burst = [
        event(f"custom.t{p}", T0 + timedelta(seconds=s), event_id=f"e{p}")
        for p, s in zip(priorities, offsets, strict=True)
    ]
    # Every window the burst opens, not the losers' return `defer_by` later: that deferral is
    # an engine-chosen delay on the worker's clock (a customer never gets two marketing
    # messages seconds apart because a backlog was worked off), so its rounds may group
    # differently after an outage.
    until = T0 + timedelta(seconds=150) + 2 * WINDOW
    _, simulated = in_time_order(rules, burst, until)
    worked_off = catch_up(rules, burst, until, T0 + timedelta(seconds=down))
    assert sends(worked_off) == sends(simulated)
    # A batch holding the whole backlog decides the events before any wake-up record comes
    # round: the same sends as the simulator's loop (its tie rule: the event first).
    _, simulated = in_time_order(rules, burst, until, inputs_first=True)
    back = T0 + timedelta(seconds=max(down, 151))  # after the last event: all in the backlog
    assert sends(events_first(rules, burst, until, back)) == sends(simulated)


def events_first(
    rules: Rules, events: list[CustomerEvent], until: datetime, back_at: datetime
) -> list[Decision]:
    """A worker back at ``back_at`` whose batch holds the customer's whole backlog: every
    event decided in arrival order before any wake-up record comes round (its timer fires
    them between batches), then the wake-ups still pending - the order a real batch gives,
    not the simulator's."""
    state: CustomerState | None = contactable()
    decisions: list[Decision] = []
    clock = back_at
    for e in sorted(events, key=lambda e: e.event_time):
        clock += timedelta(microseconds=1)
        d = decide(state, e, clock, rules, arrived_at=e.event_time)
        state = d.state
        decisions.append(d)
    return decisions + catch_up(rules, [], until, clock + timedelta(microseconds=2), state=state)


ONE_WELCOME = """
id: welcome
version: 1
name: Welcome
category: marketing
priority: 40
entry: {event: signup}
exit: [order_placed]
steps:
  - id: welcome_email
    send: {channel: email, template: welcome}
"""


def test_an_order_read_in_the_same_batch_as_the_signup_does_not_swallow_the_welcome() -> None:
    # Issue 13, scenario 6: a worker 40 s behind decided a customer's signup and, in the same
    # batch, the order 1.6 s later. The welcome waited for its window's close (1 s after the
    # signup); the order exited the journey before the close's wake-up came round, and the
    # welcome the simulator sends at the close was lost.
    rules = journey_rules(ONE_WELCOME, policy=policy(per_day=3, window="1s"))
    story = [event("signup", T0), event("order_placed", T0 + timedelta(seconds=1.6))]
    until = T0 + timedelta(minutes=5)
    _, simulated = in_time_order(rules, story, until, inputs_first=True)
    assert sends(simulated) and sends(simulated)[0][0] == "welcome"
    batch = events_first(rules, story, until, T0 + timedelta(seconds=40))
    assert sends(batch) == sends(simulated)
