"""Sending through governance: the sends due in a decide call are arbitrated, each meets
governance (`governance.evaluate`), and its verdict is carried out — an `Action` emitted, a
suppression recorded, a deferral, hold or approval scheduled.
"""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

from orchestrator.engine.arbitration import plan_windows
from orchestrator.engine.channels import posterior_mean
from orchestrator.engine.decision import Action, stable_id
from orchestrator.engine.enrollment_status import EnrollmentStatus, schedule
from orchestrator.engine.governance import Verdict, destination, evaluate
from orchestrator.engine.interpreter import walk
from orchestrator.engine.journey import Journey, SendStep
from orchestrator.engine.personalisation import personal_variables
from orchestrator.engine.placements import is_placed, place
from orchestrator.engine.run import PendingSend, Run
from orchestrator.engine.state import ChannelEngagement, Enrollment, OfferInFlight, SendRecord
from orchestrator.engine.timeutil import format_duration, to_iso

__all__ = ["arbitrate", "send_due"]

# A send's next steps may reach another send in the same call; the rounds are bounded anyway.
_MAX_SEND_ROUNDS = 16


def send_due(run: Run) -> None:
    """Put every send queued in this call through governance, in arbitration order, until the
    walks after them queue no more."""
    for _ in range(_MAX_SEND_ROUNDS):
        batch = [
            p
            for p in run.pending
            if p.enrollment in run.state.enrollments
            and p.enrollment.status == EnrollmentStatus.SEND_PENDING
        ]
        run.pending = []
        if not batch:
            return
        for p in arbitrate(run, batch):
            _send(run, p)


def arbitrate(run: Run, batch: list[PendingSend]) -> list[PendingSend]:
    """The sends of one round that meet governance now, in the order they meet it; the
    marketing sends whose arbitration window is still open wait for its close instead.

    Marketing sends due for the customer within `policy.arbitration_window` are decided
    together when the window closes (engine/arbitration.py), so the order their triggers
    arrived in never matters; transactional and service sends never wait. Those that meet
    governance go by priority, then expected value (journey value x the best channel's odds),
    then journey id: governance lets the first marketing send of a moment go and defers the
    others (``lost_arbitration``), and once a cap is reached suppresses the rest, so this order
    is what decides which marketing message wins and that the lowest priorities lose.
    """
    unique: dict[int, PendingSend] = {}
    for p in batch:
        unique.setdefault(id(p.enrollment), p)  # an enrolment queued twice is sent once
    contenders = list(unique.values())
    marketing = [
        (i, p.enrollment.step_due_since or run.at)
        for i, p in enumerate(contenders)
        if _contends(run, p)
    ]
    # Closed by the call's logical time, not the clock: a backlog worked off late waits for
    # each window's close wake-up, as the simulator's clock meets it (engine/arbitration.py).
    plan = plan_windows(
        run.state.arbitration_closes_at, marketing, run.at, run.policy.arbitration_window
    )
    run.state.arbitration_closes_at = plan.closes_at
    for i, until in plan.wait_until.items():
        _wait_for_window(run, contenders[i], until)
    for i, closes in plan.window_of.items():
        contenders[i].window_closes_at = closes
    return sorted(
        (p for i, p in enumerate(contenders) if i not in plan.wait_until),
        key=lambda p: (-p.journey.priority, -_expected_value(run, p), p.journey.id),
    )


def _verdict(
    run: Run, p: PendingSend, step: SendStep, marketing_sent_now: bool
) -> tuple[Verdict, datetime]:
    """Governance's verdict on the send now, and when it expires."""
    enr, journey = p.enrollment, p.journey
    due_since = enr.step_due_since or run.now
    category = step.category or journey.category
    expires_at = due_since + (step.expires_after or run.policy.expiry_for(category))
    verdict = evaluate(
        state=run.state,
        journey=journey,
        step=step,
        enrollment=enr,
        action_id=_action_id(run, enr, journey, step.id),
        now=run.now,
        expires_at=expires_at,
        rules=run.rules,
        marketing_sent_now=marketing_sent_now,
    )
    return verdict, expires_at


def _contends(run: Run, p: PendingSend) -> bool:
    """A marketing send that governance would let go now, were it alone: it contends in an
    arbitration window. One it would suppress, defer or hold anyway meets that verdict at once
    (a window would only delay it), and opens no window."""
    step = p.journey.steps.get(p.enrollment.step_id or "")
    if not isinstance(step, SendStep) or (step.category or p.journey.category) != "marketing":
        return False
    return _verdict(run, p, step, marketing_sent_now=False)[0].kind == "send"


def _action_id(run: Run, enr: Enrollment, journey: Journey, step_id: str) -> str:
    return stable_id(run.cid, journey.id, journey.version, enr.enrollment_id, step_id)


def _window_note(run: Run, closes: datetime) -> str:
    opened = closes - run.policy.arbitration_window
    return f"arbitration window {opened:%H:%M:%S}-{closes:%H:%M:%S} UTC"


def _wait_for_window(run: Run, p: PendingSend, until: datetime) -> None:
    """The send waits for its window to close (a wake-up then). Its due time stays: the
    expiry clock keeps running from when it became due, and at the close it is placed by it."""
    enr = p.enrollment
    schedule(enr, EnrollmentStatus.SEND_PENDING, until)
    run.explain(
        "deferred",
        "arbitration_window",
        "waits for the marketing messages due for this customer until "
        f"{until:%H:%M:%S} UTC, decided together then "
        f"({format_duration(run.policy.arbitration_window)} window)",
        enr,
        p.journey,
        action_id=_action_id(run, enr, p.journey, enr.step_id or ""),
        until=until,
    )


def _expected_value(run: Run, p: PendingSend) -> float:
    step = p.journey.steps.get(p.enrollment.step_id or "")
    if not isinstance(step, SendStep):
        return 0.0
    return p.journey.value * max(posterior_mean(run.state, ch, run.policy) for ch in step.channels)


def _send(run: Run, p: PendingSend) -> None:
    """One due send through governance, and its verdict carried out."""
    enr, journey = p.enrollment, p.journey
    step = journey.steps.get(enr.step_id or "")
    if not isinstance(step, SendStep):
        run.exit(enr, journey, "missing_step")
        return
    action_id = _action_id(run, enr, journey, step.id)
    verdict, expires_at = _verdict(run, p, step, run.marketing_sent_now)
    details, message = verdict.details, verdict.message
    if p.window_closes_at is not None and verdict.code in ("frequency_cap", "lost_arbitration"):
        # Name the window it lost in: the higher priorities due in it went first.
        note = _window_note(run, p.window_closes_at)
        message = f"{message}; decided in the {note} after higher priorities"
        details = {**details, "arbitration_window": note}
    match verdict.kind:
        case "send":
            assert verdict.channel is not None
            _emit(run, enr, journey, step, action_id, verdict.channel, expires_at, verdict.message)
            scored = run.scores_for(journey) or enr.trigger.get("scores")
            if scored:  # the customer view's "why": the score and what drove it
                details = {**details, "scores": scored}
            run.explain(
                "sent",
                "sent",
                f"{verdict.message}; {scored}" if scored else verdict.message,
                enr,
                journey,
                verdict.channel,
                action_id,
                details=details,
            )
            walk(run, enr, journey, step.next, run.now)
        case "suppress":
            run.explain(
                "suppressed",
                verdict.code,
                message,
                enr,
                journey,
                verdict.channel,
                action_id,
                details=details,
            )
            run.outcome(
                enr,
                journey,
                "suppressed",
                step_id=step.id,
                reason=verdict.code,
                action_id=action_id,
            )
            walk(run, enr, journey, step.next, run.now)
        case "defer":
            assert verdict.until is not None
            # An engine-chosen delay is not lateness: the expiry clock restarts at the new time.
            enr.step_due_since = verdict.until
            if verdict.code == "send_time":
                enr.sto_done = True
            schedule(enr, EnrollmentStatus.SEND_PENDING, verdict.until)
            run.explain(
                "deferred",
                verdict.code,
                message,
                enr,
                journey,
                action_id=action_id,
                until=verdict.until,
                details=details,
            )
            _deferred(run, enr, journey, verdict.code, action_id, to_iso(verdict.until))
        case "hold":
            assert verdict.until is not None
            schedule(enr, EnrollmentStatus.HELD, verdict.until)
            if enr.hold_reason != verdict.code:  # counted once per hold, not at every re-check
                _deferred(run, enr, journey, verdict.code, action_id, "held")
            enr.hold_reason = verdict.code
            run.explain(
                "held",
                verdict.code,
                verdict.message,
                enr,
                journey,
                action_id=action_id,
                until=verdict.until,
            )
        case "approval":
            assert verdict.until is not None
            schedule(enr, EnrollmentStatus.AWAITING_APPROVAL, verdict.until)
            enr.pending_action_id = action_id
            _deferred(run, enr, journey, verdict.code, action_id, "approval")
            run.explain(
                "held",
                verdict.code,
                verdict.message,
                enr,
                journey,
                action_id=action_id,
                until=verdict.until,
            )
        case _:
            assert_never(verdict.kind)


def _deferred(
    run: Run, enr: Enrollment, journey: Journey, code: str, action_id: str, occasion: str
) -> None:
    """The outcome of a due send moved on or held, with its reason (analytics count them)."""
    run.outcome(
        enr,
        journey,
        "deferred",
        step_id=enr.step_id,
        action_id=action_id,
        reason=code,
        occasion=occasion,
    )


def _emit(
    run: Run,
    enr: Enrollment,
    journey: Journey,
    step: SendStep,
    action_id: str,
    channel: str,
    expires_at: datetime,
    channel_why: str,
) -> None:
    """The action leaves: recorded in the send log (caps), engagement (channel choice) and
    offers in flight, and counted as this call's marketing message."""
    s = run.state
    category = step.category or journey.category
    trigger = enr.trigger.get("event_type", "inactivity")
    reason = (
        f"{journey.name} (v{journey.version}), step {step.id}: entered on {trigger} at "
        f"{to_iso(enr.entered_at)}; channel {channel}: {channel_why}; consented, within caps, "
        "outside quiet hours"
    )
    if enr.approved_by:
        reason += f"; approved by {enr.approved_by}"
    scored = run.scores_for(journey) or enr.trigger.get("scores")
    if scored:
        reason += f"; {scored}"
    payload = {**enr.trigger, **step.payload}
    payload.pop("event_type", None)
    payload.pop("scores", None)  # for the reason, not for the message
    # As of this decision: the action alone renders the message again, whatever changes later.
    payload.update(personal_variables(s, step.variables, run.now))
    run.actions.append(
        Action(
            action_id=action_id,
            customer_id=run.cid,
            channel=channel,
            journey_id=journey.id,
            journey_version=journey.version,
            step_id=step.id,
            template_id=step.template_for(enr.variant),
            category=category,
            created_at=run.now,
            not_before=run.now,
            expires_at=max(expires_at, run.now),
            reason=reason,
            variant=enr.variant,
            offer_id=step.offer,
            destination=destination(s, channel),
            locale=s.preferences.language,
            priority=journey.priority,
            payload=payload,
        )
    )
    if step.placement is not None and is_placed(step, channel):
        # A pull message waits on its placement: it counts in the caps once it is seen.
        run.actions[-1] = place(s, run.actions[-1], step.placement)
    else:
        s.send_log.append(SendRecord(action_id, run.now, channel, category, journey.id, step.offer))
        s.engagement.setdefault(channel, ChannelEngagement()).sends += 1
    if step.offer:
        s.offers_in_flight.append(
            OfferInFlight(
                step.offer, action_id, journey.id, run.now, run.now + run.policy.offer_in_flight_for
            )
        )
    enr.action_ids.append(action_id)
    enr.pending_action_id = None
    if category == "marketing":
        run.marketing_sent_now = True
    run.outcome(enr, journey, "sent", step_id=step.id, channel=channel, action_id=action_id)
