"""`decide`: the pure decision function at the heart of Tutti, and the order one call follows.

    decide(state, signal, now, rules) -> Decision

One call handles one signal for one customer: it applies the signal to the profile, moves the
customer's journey enrolments (entries, exits, waits, branches, goals: `enrollment`,
`interpreter`), passes every due send through governance and arbitration (`sending`), and
returns the new state with the actions, wake-ups, outcomes and explanations. It never reads the
clock (`now` is an argument), never does I/O and never mutates its inputs, so the same inputs
always give the same decision.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import assert_never

from orchestrator.engine.audiences import sync_segment_audiences
from orchestrator.engine.decision import Action, Decision, Explanation, stable_id
from orchestrator.engine.enrollment import (
    apply_exit_rules,
    check_inactivity,
    mark_engagement,
    record_goals,
    refresh_idle_timers,
    release_holds,
    resume_waits_for,
    try_enter,
)
from orchestrator.engine.enrollment_status import EnrollmentStatus, move, wake
from orchestrator.engine.errors import SignalError
from orchestrator.engine.governance import destination
from orchestrator.engine.interpreter import walk
from orchestrator.engine.journey import SendStep, WaitForStep, WaitStep
from orchestrator.engine.keywords import HELP_TEMPLATE
from orchestrator.engine.membership import (
    catch_up_segments,
    leave_all_segments,
    start_segment_journeys,
    update_segments,
)
from orchestrator.engine.profile import apply_event, engagement_channel, lifecycle_stage
from orchestrator.engine.rules import Rules
from orchestrator.engine.run import Run
from orchestrator.engine.sending import send_due
from orchestrator.engine.signals import (
    CustomerCommand,
    CustomerEvent,
    DeliveryFeedback,
    Signal,
    WakeUp,
)
from orchestrator.engine.state import (
    MAX_DECISION_NOTES,
    MAX_EVENT_IDS,
    ChannelEngagement,
    CustomerState,
    DecisionNote,
    pending_wakeups,
)

__all__ = ["decide"]

_SEND_LOG_KEEP = timedelta(days=8)
#: Wake-ups decided ahead of one signal at most (`_wake_before`): a guard, never met in practice.
_MAX_CATCH_UP = 64


def decide(
    state: CustomerState | None,
    signal: Signal,
    now: datetime,
    rules: Rules,
    *,
    arrived_at: datetime | None = None,
    owned: bool = False,
) -> Decision:
    """Decide what happens for one signal. Pure and deterministic; `now` must be tz-aware.

    ``arrived_at``: when the signal reached the pipeline, if before ``now`` (a live worker
    working off a backlog: the record's time; a wake-up's due time). Sends reached in the call
    are due then and arbitration windows close on it (engine/arbitration.py), as on the
    simulator's clock; everything else runs on ``now``. Default: ``now``. Wake-ups due
    strictly before that logical time are decided first, each in its own call at its due time,
    as the simulator's clock meets them (`_wake_before`); the decision holds all they produced.

    ``owned``: the caller hands ``state`` over - it will not read it again, it is not shared -
    so the decision may change it in place rather than work on a copy (copying a 10 KB state
    cost a live worker ~30 us a signal). The decision's state is then ``state`` itself.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("decide(now=...) needs a timezone-aware datetime (UTC)")
    if arrived_at is not None and (arrived_at.tzinfo is None or arrived_at.utcoffset() is None):
        raise ValueError("decide(arrived_at=...) needs a timezone-aware datetime (UTC)")
    if state is None or isinstance(signal, WakeUp) or _already_applied(state, signal):
        return _decide_one(state, signal, now, rules, arrived_at, owned=owned)
    at = arrived_at if arrived_at is not None and arrived_at < now else now
    earlier = _wake_before(state, at, now, rules)  # copies before its first step, owned or not
    if not earlier:
        return _decide_one(state, signal, now, rules, arrived_at, owned=owned)
    last = _decide_one(earlier[-1].state, signal, now, rules, arrived_at, owned=True)
    return _chained(state, [*earlier, last])


def _already_applied(state: CustomerState, signal: Signal) -> bool:
    """A redelivered event or receipt: `_decide_one` returns the very same state for it."""
    match signal:
        case CustomerEvent():
            return signal.event_id in state.recent_event_ids
        case DeliveryFeedback():
            return f"receipt:{signal.receipt_id}" in state.recent_event_ids
    return False


def _wake_before(state: CustomerState, at: datetime, now: datetime, rules: Rules) -> list[Decision]:
    """The wake-ups due strictly before a signal's logical time ``at``, decided first, each as
    its own call at its due time - as the simulator's clock meets them (an event at the same
    instant as a due wake-up goes first there, and so it does here: `_advance_due` in the
    signal's own call).

    Only a live worker working off a backlog meets this: its timer fires a wake-up once the
    partition's inputs are read up to it (agents/watermarks.py), but a batch can hold the
    customer's later events too, decided before that wake-up's record comes round. Folded into
    the event's call instead, the wait's send was queued, then the event applied (an order
    exiting the welcome journey) before the send was decided, and the welcome e-mail the
    simulator sends at the window's close was lost (issue 13, scenario 6). Each step advances
    at least the earliest enrolment due (a zero wait re-enters at the same time and moves on),
    so the loop ends; the bound is a guard."""
    earlier: list[Decision] = []
    current: CustomerState | None = state
    for _ in range(_MAX_CATCH_UP):
        if current is None:
            break
        due = min(
            (e for e in current.enrollments if e.due_at is not None and e.due_at < at),
            key=lambda e: (e.due_at, e.journey_id),
            default=None,
        )
        if due is None or due.due_at is None:
            break
        wakeup = WakeUp(current.customer_id, due.due_at, due.token)
        step = _decide_one(
            current, wakeup, max(now, due.due_at), rules, due.due_at, owned=current is not state
        )
        earlier.append(step)
        current = step.state
    return earlier


def _chained(first: CustomerState, decisions: list[Decision]) -> Decision:
    """Consecutive decisions for one customer as one: everything they produced, the last
    state, and the wake-ups the worker did not know before the first."""
    final = decisions[-1]
    known = {(w.token, w.due_at) for w in pending_wakeups(first)}
    wakeups = (
        tuple(w for w in pending_wakeups(final.state) if (w.token, w.due_at) not in known)
        if final.state is not None
        else ()
    )
    return Decision(
        final.customer_id,
        final.state,
        tuple(a for d in decisions for a in d.actions),
        wakeups,
        tuple(o for d in decisions for o in d.outcomes),
        tuple(e for d in decisions for e in d.explanations),
    )


def _decide_one(
    state: CustomerState | None,
    signal: Signal,
    now: datetime,
    rules: Rules,
    arrived_at: datetime | None,
    *,
    owned: bool = False,
) -> Decision:
    """One signal's call. ``owned``: ``state`` is this decide's own copy (a step of
    `_wake_before`), changed in place instead of cloned again."""
    own = (lambda s: s) if owned else CustomerState.clone
    match signal:
        case CustomerEvent():
            key = state.customer_id if state is not None else signal.customer_key
            if key is None:
                raise SignalError(f"event {signal.event_id}: no identifier to key the customer by")
            if state is not None and signal.event_id in state.recent_event_ids:
                return Decision(key, state)  # a redelivered event changes nothing
            run = Run(
                own(state) if state else CustomerState(customer_id=key), now, rules, arrived_at
            )
            _on_event(run, signal)
        case WakeUp():
            if state is None:
                return Decision(signal.customer_id, None)  # erased or never existed
            run = Run(own(state), now, rules, arrived_at)
            run.state.lifecycle_stage = lifecycle_stage(run.state, now)
            _advance_due(run)
            catch_up_segments(run)  # a segment rule flipping with time alone: this wake-up
            start_segment_journeys(run)
        case DeliveryFeedback():
            if state is None:
                return Decision(signal.customer_id, None)
            receipt_key = f"receipt:{signal.receipt_id}"
            if receipt_key in state.recent_event_ids:
                return Decision(state.customer_id, state)
            run = Run(own(state), now, rules, arrived_at)
            _on_feedback(run, signal, receipt_key)
        case CustomerCommand():
            if state is None:
                return Decision(signal.customer_id, None)
            run = Run(own(state), now, rules, arrived_at)
            if signal.kind == "erase_customer":
                return _erase(run, signal)
            _on_approval(run, signal)
        case _:
            assert_never(signal)
    return _finish(run)


def _on_event(run: Run, ev: CustomerEvent) -> None:
    s = run.state
    _remember(s, ev.event_id)
    _advance_due(run)  # anything already due goes first, as the simulator's clock would have it
    catch_up_segments(run)  # a segment rule that flipped before this event goes first too
    start_segment_journeys(run)
    run.event = ev
    policy = run.policy
    apply_event(
        s,
        ev,
        policy.default_time_zone,
        policy.profile_attributes,
        policy.profile_attribute_max_length,
        policy.keywords,
    )
    s.lifecycle_stage = lifecycle_stage(s, run.now)
    update_segments(run, cause=ev.event_id)  # membership as of this event, for this call
    if ev.event_type == "message_replied":
        _answer_help(run, ev)
    record_goals(run, ev)
    mark_engagement(run, ev)
    apply_exit_rules(run, ev)
    resume_waits_for(run, ev)
    if ev.event_type == "support_ticket_resolved" and not s.open_tickets:
        release_holds(run, "ticket_open")
    for journey in run.rules.triggered_by(ev.event_type):
        try_enter(run, journey, ev, ev.event_id)
    start_segment_journeys(run)


def _answer_help(run: Run, ev: CustomerEvent) -> None:
    """A HELP reply (engine/keywords.py) is answered on the channel it came from, with the
    ``keyword_help`` template, even to someone who opted out: it answers their own message
    (no consent, cap or quiet-hours check; it never counts in caps)."""
    s, policy = run.state, run.policy
    channel = engagement_channel(ev.channel)
    text = (ev.message.reply_text if ev.message else None) or ""
    if channel is None or policy.keywords.classify(text, s.preferences.language) != "help":
        return
    to = destination(s, channel)
    if to is None:
        return
    action_id = stable_id(run.cid, ev.event_id, HELP_TEMPLATE)
    reason = f"answer to a HELP reply on {channel} (event {ev.event_id})"
    run.actions.append(
        Action(
            action_id=action_id,
            customer_id=run.cid,
            channel=channel,
            journey_id="keywords",
            journey_version=1,
            step_id="help",
            template_id=HELP_TEMPLATE,
            category="service",
            created_at=run.now,
            not_before=run.now,
            expires_at=run.now + timedelta(hours=1),
            reason=reason,
            destination=to,
            locale=s.preferences.language,
        )
    )
    run.explanations.append(
        Explanation(
            run.cid,
            "sent",
            "keyword_help",
            reason,
            run.now,
            journey_id="keywords",
            journey_version=1,
            step_id="help",
            channel=channel,
            action_id=action_id,
        )
    )


def _on_feedback(run: Run, fb: DeliveryFeedback, receipt_key: str) -> None:
    s = run.state
    _remember(s, receipt_key)
    eng = s.engagement.setdefault(fb.channel, ChannelEngagement())
    match fb.status:
        case "delivered":
            eng.delivered += 1
        case "bounced":
            eng.bounces += 1
            if fb.channel not in s.undeliverable:
                s.undeliverable.append(fb.channel)
        case "failed" | "expired" | "rejected" | "suppressed":
            # Never reached the customer: it must not count against caps or block offers.
            # (suppressed: held back by the sender, consent withdrawn after the decision.)
            before = len(s.send_log)
            s.send_log = [r for r in s.send_log if r.action_id != fb.action_id]
            if len(s.send_log) < before and eng.sends > 0:
                eng.sends -= 1
            s.offers_in_flight = [o for o in s.offers_in_flight if o.action_id != fb.action_id]
        case _:
            pass
    _advance_due(run)
    catch_up_segments(run)
    update_segments(run, cause=receipt_key)  # engagement counts changed: rules may read them
    start_segment_journeys(run)


def _on_approval(run: Run, cmd: CustomerCommand) -> None:
    """An operator approved or rejected the send an enrolment holds for approval."""
    for enr in list(run.state.enrollments):
        if enr.status != EnrollmentStatus.AWAITING_APPROVAL or enr.pending_action_id != cmd.target:
            continue
        journey = run.journey_of(enr)
        if journey is None:
            continue
        if cmd.kind == "approve_action":
            enr.approved_by = cmd.issued_by
            move(enr, EnrollmentStatus.SEND_PENDING)
            wake(enr)
            run.queue_send(enr, journey)
        else:
            step = journey.steps.get(enr.step_id or "")
            run.explain(
                "suppressed",
                "rejected",
                f"rejected by {cmd.issued_by}",
                enr,
                journey,
                action_id=cmd.target,
            )
            run.outcome(
                enr,
                journey,
                "suppressed",
                step_id=enr.step_id,
                reason="rejected",
                action_id=cmd.target,
            )
            wake(enr)
            walk(run, enr, journey, step.next if isinstance(step, SendStep) else None, run.now)
        return
    run.note("not_pending", f"no action {cmd.target} awaits approval")


def _erase(run: Run, cmd: CustomerCommand) -> Decision:
    for enr in list(run.state.enrollments):
        journey = run.journey_of(enr)
        if journey is not None:
            run.outcome(enr, journey, "exited", reason="erased")
    leave_all_segments(run, "erased")
    sync_segment_audiences(run, erased=True)  # out of every ad audience, before the state goes
    run.note("erased", f"customer erased by {cmd.issued_by}")
    return Decision(
        run.cid, None, tuple(run.actions), (), tuple(run.outcomes), tuple(run.explanations)
    )


def _remember(s: CustomerState, key: str) -> None:
    """Keep the id of a handled event or receipt, so its redelivery changes nothing."""
    s.recent_event_ids.append(key)
    del s.recent_event_ids[:-MAX_EVENT_IDS]


def _advance_due(run: Run) -> None:
    """Advance every enrolment whose due time the call's logical time has reached (and the
    inactivity checks due by now).

    The logical time, not ``now``: a live worker behind the stream decides a signal after
    later due times have passed on its clock, and the simulator would meet this signal before
    them; each waits for its own wake-up (on the simulator's clock the two are equal)."""
    due = [e for e in run.state.enrollments if e.due_at is not None and e.due_at <= run.at]
    due.sort(key=lambda e: (e.due_at or run.at, e.journey_id))
    for enr in due:
        journey = run.journey_of(enr)
        if journey is None:
            run.exit(enr, None, "journey_unpublished")
            continue
        at = enr.due_at or run.now
        enr.due_at = None
        step = journey.steps.get(enr.step_id or "")
        match step:
            case WaitStep(next=nxt):
                walk(run, enr, journey, nxt, run.now, logical=at)
            case WaitForStep(on_timeout=nxt):
                walk(run, enr, journey, nxt, run.now, logical=at)
            case SendStep():
                move(enr, EnrollmentStatus.SEND_PENDING)
                run.queue_send(enr, journey)
            case _:
                run.exit(enr, journey, "missing_step")
    check_inactivity(run)


def _finish(run: Run) -> Decision:
    """Send what is due, keep the state's bounded lists bounded, and return the decision with
    only the wake-ups the worker does not know yet."""
    sync_segment_audiences(run)
    send_due(run)
    refresh_idle_timers(run)
    s = run.state
    now = run.now
    s.send_log = [r for r in s.send_log if now - r.at < _SEND_LOG_KEEP]
    s.offers_in_flight = [o for o in s.offers_in_flight if o.until > now]
    s.attributions = [a for a in s.attributions if a.until > now and not a.converted]
    if run.explanations:
        s.recent_decisions.extend(
            DecisionNote(
                e.at, e.kind, e.code, e.message, e.journey_id, e.step_id, e.channel, e.action_id
            )
            for e in run.explanations
        )
        del s.recent_decisions[:-MAX_DECISION_NOTES]
    wakeups = [w for w in pending_wakeups(s) if (w.token, w.due_at) not in run.known_wakeups]
    return Decision(
        run.cid,
        s,
        tuple(run.actions),
        tuple(wakeups),
        tuple(run.outcomes),
        tuple(run.explanations),
    )
