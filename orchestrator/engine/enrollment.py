"""Who is on which journey: entries (triggers, re-entry, governance's entry checks, holdout and
variants), inactivity checks, exit rules, `wait_for` events, released holds, and goals.

Each function applies one kind of rule to the customer in a `Run`; the step interpreter takes
over wherever an enrolment has to move on.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from orchestrator.engine.conditions import EvalContext
from orchestrator.engine.decision import Outcome, stable_id
from orchestrator.engine.enrollment_status import EnrollmentStatus, move, wake
from orchestrator.engine.governance import admit
from orchestrator.engine.interpreter import walk
from orchestrator.engine.journey import ACTIVITY, Journey, WaitForStep
from orchestrator.engine.profile import is_activity
from orchestrator.engine.run import Run
from orchestrator.engine.signals import CustomerEvent, Money
from orchestrator.engine.state import Attribution, Enrollment, JourneyHistory
from orchestrator.engine.timeutil import to_iso

__all__ = [
    "apply_exit_rules",
    "bucket",
    "check_inactivity",
    "mark_engagement",
    "record_goals",
    "refresh_idle_timers",
    "release_holds",
    "resume_waits_for",
    "try_enter",
]

_IDLE_PREFIX = "idle:"
_CLOCK_SKEW = timedelta(minutes=5)  # source clocks vs processing time


def bucket(customer_id: str, journey_id: str, salt: str) -> float:
    """Deterministic position of a customer in [0, 100) for a journey (holdout, variants)."""
    digest = hashlib.sha256(f"{customer_id}|{journey_id}|{salt}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15 * 100


# --- entries ----------------------------------------------------------------------------------
def try_enter(run: Run, journey: Journey, ev: CustomerEvent | None, trigger_key: str) -> None:
    """Enter the journey if the customer meets its entry rules, may re-enter and passes
    governance's entry checks; `trigger_key` makes the enrolment id (an event id, an idle token)."""
    s = run.state
    if ev is not None and _overtaken(run, journey, ev):
        return
    if not run.holds(
        journey.entry.condition,
        EvalContext(s, ev, None, run.now, run.scores),
        journey,
        None,
        "entry",
    ):
        return
    active = s.enrollment(journey.id)
    hist = s.journeys.get(journey.id)
    mode = journey.re_entry.mode
    if active is not None:
        if mode != "always":
            return  # already on this journey: entering twice would duplicate messages
    elif hist is not None and hist.times_entered:
        if mode == "never":
            return
        after = journey.re_entry.after
        if (
            mode == "after"
            and after
            and hist.last_entered_at
            and run.now - hist.last_entered_at < after
        ):
            return
    # Only a customer who would really enter hears why they did not.
    verdict = admit(state=s, journey=journey, rules=run.rules, now=run.now, active=active)
    for other in verdict.preempt:
        run.exit(other, run.journey_of(other), f"preempted_by:{journey.id}")
    if verdict.kind == "suppress":
        run.explain("suppressed", verdict.code, verdict.message, None, journey)
        # Counted too (analytics: suppressed by reason), though no enrolment was made.
        run.outcomes.append(
            Outcome(
                outcome_id=stable_id(run.cid, journey.id, journey.version, trigger_key, "kept_out"),
                journey_id=journey.id,
                journey_version=journey.version,
                customer_id=run.cid,
                kind="suppressed",
                occurred_at=run.now,
                reason=verdict.code,
            )
        )
        return
    if active is not None:
        run.exit(active, run.journey_of(active), "reentered")
    _enter(run, journey, ev, trigger_key)


def _overtaken(run: Run, journey: Journey, ev: CustomerEvent) -> bool:
    """True when the trigger arrived late and an exit event already happened after it
    (e.g. an add-to-cart delivered after the order that followed it): entering now would
    start a journey the customer has already left."""
    s = run.state
    for rule in journey.exits:
        if rule.event == ACTIVITY:
            later = s.last_activity_at
        elif rule.event == "order_placed":
            later = s.commerce.last_order_at
        else:
            continue
        if later is not None and later > ev.event_time:
            return True
    return False


def _enter(run: Run, journey: Journey, ev: CustomerEvent | None, trigger_key: str) -> None:
    s = run.state
    enr = Enrollment(
        enrollment_id=stable_id(run.cid, journey.id, journey.version, trigger_key),
        journey_id=journey.id,
        version=journey.version,
        entered_at=run.now,
        trigger=_trigger_facts(ev),
    )
    scored = run.scores_for(journey)
    if scored:  # the entry rules used a score: the sends' reasons name it (sending._emit)
        enr.trigger["scores"] = scored
    holdout = (
        journey.holdout_pct > 0 and bucket(run.cid, journey.id, "holdout") < journey.holdout_pct
    )
    if journey.variants:
        point = bucket(run.cid, journey.id, "variant")
        acc = 0.0
        for v in journey.variants:
            acc += v.weight
            if point < acc:
                enr.variant = v.id
                break
        else:
            enr.variant = journey.variants[-1].id
    hist = s.journeys.setdefault(journey.id, JourneyHistory())
    hist.times_entered += 1
    hist.last_entered_at = run.now
    hist.last_version = journey.version
    if journey.goal is not None:
        s.attributions.append(
            Attribution(
                enrollment_id=enr.enrollment_id,
                journey_id=journey.id,
                version=journey.version,
                entered_at=run.now,
                until=run.now + journey.goal.within,
                variant=enr.variant,
                holdout=holdout,
                trigger_event_id=ev.event_id if ev else None,
            )
        )
    run.outcome(enr, journey, "entered", holdout=holdout)
    if holdout:
        # Holdout customers receive nothing from this journey; their conversions are still
        # counted through the attribution record, which is what lift is measured against.
        hist.last_exited_at = run.now
        hist.last_exit_reason = "holdout"
        run.explain(
            "suppressed",
            "holdout",
            f"in the {journey.holdout_pct:g}% holdout group: nothing is sent",
            enr,
            journey,
        )
        return
    s.enrollments.append(enr)
    walk(run, enr, journey, journey.first_step, run.now)


def _trigger_facts(ev: CustomerEvent | None) -> dict[str, str]:
    """The few facts of the trigger a template or a later branch may need (no personal data)."""
    if ev is None:
        return {}
    facts = {"event_type": ev.event_type}
    if ev.product is not None and ev.product.product_id:
        facts["product_id"] = ev.product.product_id
        if ev.product.name:
            facts["product_name"] = ev.product.name
        if ev.product.category:
            facts["product_category"] = ev.product.category
    if ev.order is not None:
        facts["order_id"] = ev.order.order_id
        facts["order_total_minor"] = str(ev.order.total.amount_minor)
        facts["order_currency"] = ev.order.total.currency
        facts["order_in_store"] = "true" if ev.order.store_id else "false"
    if ev.support is not None:
        facts["ticket_id"] = ev.support.ticket_id
    if ev.loyalty is not None and ev.loyalty.tier:
        facts["loyalty_tier"] = ev.loyalty.tier
    return facts


# --- inactivity -------------------------------------------------------------------------------
def check_inactivity(run: Run) -> None:
    """Fire the inactivity checks that are due: a customer idle long enough enters the journey."""
    s = run.state
    for token, due_at in sorted(s.timers.items(), key=lambda kv: (kv[1], kv[0])):
        if due_at > run.now or not token.startswith(_IDLE_PREFIX):
            continue  # (segment timers are engine/membership.py's)
        del s.timers[token]
        journey_id = token[len(_IDLE_PREFIX) :].split("|", 1)[0]
        versions = run.rules.journeys.get(journey_id)
        if not versions:
            continue
        journey = versions[max(versions)]
        idle_for = journey.entry.inactivity
        last = s.last_activity_at
        if idle_for is not None and last is not None and run.now - last >= idle_for:
            try_enter(run, journey, None, token)


def refresh_idle_timers(run: Run) -> None:
    """Keep one inactivity check per inactivity-triggered journey, due when the customer
    will have been idle long enough; activity moves it, so the old token goes stale."""
    s = run.state
    last = s.last_activity_at
    wanted: dict[str, datetime] = {}
    if last is not None:
        for journey in run.rules.inactivity_journeys():
            assert journey.entry.inactivity is not None
            wanted[f"{_IDLE_PREFIX}{journey.id}|{to_iso(last)}"] = last + journey.entry.inactivity
    for token in [t for t in s.timers if t.startswith(_IDLE_PREFIX) and t not in wanted]:
        del s.timers[token]
    for token, due in wanted.items():
        if due > run.now:  # a check that already fired is not scheduled again
            s.timers.setdefault(token, due)


# --- while on a journey -----------------------------------------------------------------------
def apply_exit_rules(run: Run, ev: CustomerEvent) -> None:
    """End every enrolment whose journey exits on this event (e.g. any order ends a cart
    journey)."""
    activity = is_activity(ev.event_type)
    for enr in list(run.state.enrollments):
        journey = run.journey_of(enr)
        if journey is None:
            continue
        ctx = EvalContext(run.state, ev, enr, run.now, run.scores)
        for rule in journey.exits:
            hit = rule.event == ev.event_type or (rule.event == ACTIVITY and activity)
            if hit and run.holds(rule.condition, ctx, journey, enr, f"exit on {rule.event}"):
                run.exit(enr, journey, f"exit_on:{ev.event_type}")
                break


def resume_waits_for(run: Run, ev: CustomerEvent) -> None:
    """Move on every enrolment whose `wait_for` step was waiting for this event."""
    for enr in list(run.state.enrollments):
        if enr.status != EnrollmentStatus.WAITING_FOR:
            continue
        journey = run.journey_of(enr)
        step = journey.steps.get(enr.step_id or "") if journey else None
        if journey is None or not isinstance(step, WaitForStep):
            continue
        if ev.event_type in step.events and run.holds(
            step.condition,
            EvalContext(run.state, ev, enr, run.now, run.scores),
            journey,
            enr,
            "wait_for",
        ):
            wake(enr)
            walk(run, enr, journey, step.on_event, run.now)


def release_holds(run: Run, reason: str) -> None:
    """The condition that held sends is gone (e.g. the last open ticket was resolved): they
    meet governance again in this call."""
    for enr in run.state.enrollments:
        if enr.status == EnrollmentStatus.HELD and enr.hold_reason == reason:
            journey = run.journey_of(enr)
            if journey is not None:
                wake(enr)
                move(enr, EnrollmentStatus.SEND_PENDING)
                run.queue_send(enr, journey)


def mark_engagement(run: Run, ev: CustomerEvent) -> None:
    """An open or click of a message marks the enrolment that sent it as engaged (branches and
    reports read it)."""
    if ev.event_type not in ("message_opened", "message_clicked") or ev.message is None:
        return
    for enr in run.state.enrollments:
        if (ev.message.action_id and ev.message.action_id in enr.action_ids) or (
            ev.message.action_id is None and ev.message.journey_id == enr.journey_id
        ):
            enr.engaged = True


# --- goals ------------------------------------------------------------------------------------
def record_goals(run: Run, ev: CustomerEvent) -> None:
    """Count a conversion for every attribution (holdout or not) whose goal this event meets
    within its window."""
    for a in run.state.attributions:
        if a.converted or ev.event_id == a.trigger_event_id:
            continue
        # Event time, not processing time: an in-store order reported late still counts.
        if not a.entered_at - _CLOCK_SKEW <= ev.event_time <= a.until:
            continue
        journey = run.rules.version(a.journey_id, a.version)
        if journey is None or journey.goal is None or ev.event_type not in journey.goal.events:
            continue
        ctx = EvalContext(run.state, ev, None, run.now, run.scores)
        if not run.holds(journey.goal.condition, ctx, journey, None, "goal"):
            continue
        a.converted = True
        revenue = ev.order.total if ev.order is not None else None
        run.outcomes.append(
            Outcome(
                outcome_id=stable_id(a.enrollment_id, "converted"),
                journey_id=a.journey_id,
                journey_version=a.version,
                customer_id=run.cid,
                kind="converted",
                occurred_at=run.now,
                variant=a.variant,
                holdout=a.holdout,
                reason=f"goal {ev.event_type} within the attribution window",
                revenue=Money(revenue.amount_minor, revenue.currency) if revenue else None,
            )
        )
