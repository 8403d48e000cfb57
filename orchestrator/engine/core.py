"""`decide`: the pure decision function at the heart of Tutti.

    decide(state, signal, now, rules) -> Decision

One call handles one signal for one customer: it applies the signal to the profile, moves the
customer's journey enrolments (entries, exits, waits, branches, goals), passes every due send
through governance and arbitration, and returns the new state with the actions, wake-ups,
outcomes and explanations. It never reads the clock (`now` is an argument), never does I/O and
never mutates its inputs, so the same inputs always give the same decision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never

from orchestrator.engine.channels import posterior_mean
from orchestrator.engine.conditions import EvalContext
from orchestrator.engine.decision import (
    Action,
    Decision,
    Explanation,
    ExplanationKind,
    Outcome,
    OutcomeKind,
    stable_id,
)
from orchestrator.engine.errors import SignalError
from orchestrator.engine.governance import destination, evaluate
from orchestrator.engine.journey import (
    ACTIVITY,
    BranchStep,
    ExitStep,
    Journey,
    SendStep,
    WaitForStep,
    WaitStep,
)
from orchestrator.engine.profile import apply_event, is_activity, lifecycle_stage
from orchestrator.engine.rules import Rules
from orchestrator.engine.signals import (
    CustomerCommand,
    CustomerEvent,
    DeliveryFeedback,
    Money,
    Signal,
    WakeUp,
)
from orchestrator.engine.state import (
    MAX_DECISION_NOTES,
    MAX_EVENT_IDS,
    MAX_HISTORY,
    Attribution,
    ChannelEngagement,
    CustomerState,
    DecisionNote,
    Enrollment,
    JourneyHistory,
    OfferInFlight,
    SendRecord,
    StepVisit,
    pending_wakeups,
)
from orchestrator.engine.timeutil import format_duration, local_time_to_utc, to_iso, zone

__all__ = ["bucket", "decide"]

_MAX_STEPS_PER_RUN = 64  # a journey graph is acyclic; this only guards against surprises
_MAX_SEND_ROUNDS = 16
_SEND_LOG_KEEP = timedelta(days=8)
_IDLE_PREFIX = "idle:"
_CLOCK_SKEW = timedelta(minutes=5)  # source clocks vs processing time


def bucket(customer_id: str, journey_id: str, salt: str) -> float:
    """Deterministic position of a customer in [0, 100) for a journey (holdout, variants)."""
    digest = hashlib.sha256(f"{customer_id}|{journey_id}|{salt}".encode()).hexdigest()
    return int(digest[:15], 16) / 16**15 * 100


def decide(state: CustomerState | None, signal: Signal, now: datetime, rules: Rules) -> Decision:
    """Decide what happens for one signal. Pure and deterministic; `now` must be tz-aware."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("decide(now=...) needs a timezone-aware datetime (UTC)")
    match signal:
        case CustomerEvent():
            key = state.customer_id if state is not None else signal.customer_key
            if key is None:
                raise SignalError(f"event {signal.event_id}: no identifier to key the customer by")
            if state is not None and signal.event_id in state.recent_event_ids:
                return Decision(key, state)  # a redelivered event changes nothing
            run = _Run(_copy(state) if state else CustomerState(customer_id=key), now, rules)
            run.on_event(signal)
        case WakeUp():
            if state is None:
                return Decision(signal.customer_id, None)  # erased or never existed
            run = _Run(_copy(state), now, rules)
            run.on_wakeup()
        case DeliveryFeedback():
            if state is None:
                return Decision(signal.customer_id, None)
            receipt_key = f"receipt:{signal.receipt_id}"
            if receipt_key in state.recent_event_ids:
                return Decision(state.customer_id, state)
            run = _Run(_copy(state), now, rules)
            run.on_feedback(signal, receipt_key)
        case CustomerCommand():
            if state is None:
                return Decision(signal.customer_id, None)
            run = _Run(_copy(state), now, rules)
            if signal.kind == "erase_customer":
                return run.erase(signal)
            run.on_approval(signal)
        case _:
            assert_never(signal)
    return run.finish()


def _copy(state: CustomerState) -> CustomerState:
    return state.clone()


@dataclass
class _Pending:
    enrollment: Enrollment
    journey: Journey


class _Run:
    """The working memory of one decide call."""

    def __init__(self, state: CustomerState, now: datetime, rules: Rules) -> None:
        self.state = state
        self.now = now
        self.rules = rules
        self.policy = rules.policy
        self.cid = state.customer_id
        self.actions: list[Action] = []
        self.outcomes: list[Outcome] = []
        self.explanations: list[Explanation] = []
        self.pending: list[_Pending] = []
        self.marketing_sent_now = False
        self.event: CustomerEvent | None = None
        # Wake-ups already known to the worker; only new ones are returned.
        self.known_wakeups = {(w.token, w.due_at) for w in pending_wakeups(state)}

    # --- signal handlers ----------------------------------------------------------------------
    def on_event(self, ev: CustomerEvent) -> None:
        s = self.state
        s.recent_event_ids.append(ev.event_id)
        del s.recent_event_ids[:-MAX_EVENT_IDS]
        self.tick()  # anything already due goes first, as the simulator's clock would have it
        self.event = ev
        apply_event(s, ev, self.policy.default_time_zone)
        s.lifecycle_stage = lifecycle_stage(s, self.now)
        self.goals(ev)
        self.mark_engagement(ev)
        self.exits(ev)
        self.wait_fors(ev)
        if ev.event_type == "support_ticket_resolved" and not s.open_tickets:
            self.release_holds("ticket_open")
        for journey in self.rules.triggered_by(ev.event_type):
            self.try_enter(journey, ev, ev.event_id)

    def on_wakeup(self) -> None:
        self.state.lifecycle_stage = lifecycle_stage(self.state, self.now)
        self.tick()

    def on_feedback(self, fb: DeliveryFeedback, receipt_key: str) -> None:
        s = self.state
        s.recent_event_ids.append(receipt_key)
        del s.recent_event_ids[:-MAX_EVENT_IDS]
        eng = s.engagement.setdefault(fb.channel, ChannelEngagement())
        match fb.status:
            case "delivered":
                eng.delivered += 1
            case "bounced":
                eng.bounces += 1
                if fb.channel not in s.undeliverable:
                    s.undeliverable.append(fb.channel)
            case "failed" | "expired" | "rejected":
                # Never reached the customer: it must not count against caps or block offers.
                before = len(s.send_log)
                s.send_log = [r for r in s.send_log if r.action_id != fb.action_id]
                if len(s.send_log) < before and eng.sends > 0:
                    eng.sends -= 1
                s.offers_in_flight = [o for o in s.offers_in_flight if o.action_id != fb.action_id]
            case _:
                pass
        self.tick()

    def on_approval(self, cmd: CustomerCommand) -> None:
        for enr in list(self.state.enrollments):
            if enr.status != "awaiting_approval" or enr.pending_action_id != cmd.target:
                continue
            journey = self.journey_of(enr)
            if journey is None:
                continue
            if cmd.kind == "approve_action":
                enr.approved_by = cmd.issued_by
                enr.status = "send_pending"
                enr.due_at = None
                enr.seq += 1
                self.pending.append(_Pending(enr, journey))
            else:
                step = journey.steps.get(enr.step_id or "")
                self.explain(
                    "suppressed",
                    "rejected",
                    f"rejected by {cmd.issued_by}",
                    enr,
                    journey,
                    action_id=cmd.target,
                )
                self.outcome(
                    enr,
                    journey,
                    "suppressed",
                    step_id=enr.step_id,
                    reason="rejected",
                    action_id=cmd.target,
                )
                enr.due_at = None
                enr.seq += 1
                self.run(enr, journey, step.next if isinstance(step, SendStep) else None, self.now)
            return
        self.explanations.append(
            Explanation(
                self.cid, "info", "not_pending", f"no action {cmd.target} awaits approval", self.now
            )
        )

    def erase(self, cmd: CustomerCommand) -> Decision:
        for enr in list(self.state.enrollments):
            journey = self.journey_of(enr)
            if journey is not None:
                self.outcome(enr, journey, "exited", reason="erased")
        self.explanations.append(
            Explanation(self.cid, "info", "erased", f"customer erased by {cmd.issued_by}", self.now)
        )
        return Decision(self.cid, None, (), (), tuple(self.outcomes), tuple(self.explanations))

    # --- time ---------------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance every enrolment (and inactivity check) whose due time has come."""
        s = self.state
        due = [e for e in s.enrollments if e.due_at is not None and e.due_at <= self.now]
        due.sort(key=lambda e: (e.due_at or self.now, e.journey_id))
        for enr in due:
            journey = self.journey_of(enr)
            if journey is None:
                self.exit(enr, None, "journey_unpublished")
                continue
            at = enr.due_at or self.now
            enr.due_at = None
            step = journey.steps.get(enr.step_id or "")
            match step:
                case WaitStep(next=nxt):
                    self.run(enr, journey, nxt, self.now, logical=at)
                case WaitForStep(on_timeout=nxt):
                    self.run(enr, journey, nxt, self.now, logical=at)
                case SendStep():
                    enr.status = "send_pending"
                    self.pending.append(_Pending(enr, journey))
                case _:
                    self.exit(enr, journey, "missing_step")
        for token, due_at in sorted(s.timers.items(), key=lambda kv: (kv[1], kv[0])):
            if due_at > self.now:
                continue
            del s.timers[token]
            journey_id = token[len(_IDLE_PREFIX) :].split("|", 1)[0]
            versions = self.rules.journeys.get(journey_id)
            if not versions:
                continue
            journey = versions[max(versions)]
            idle_for = journey.entry.inactivity
            last = s.last_activity_at
            if idle_for is not None and last is not None and self.now - last >= idle_for:
                self.try_enter(journey, None, token)

    def schedule(self, enr: Enrollment, due: datetime, status: str) -> None:
        enr.status = status
        enr.due_at = due
        enr.seq += 1  # invalidates any wake-up scheduled before

    # --- the step interpreter -----------------------------------------------------------------
    def run(
        self,
        enr: Enrollment,
        journey: Journey,
        step_id: str | None,
        now: datetime,
        logical: datetime | None = None,
    ) -> None:
        """Walk the enrolment from `step_id` until it has to wait (or ends).

        `logical` is when this move was due (a late wake-up's due time): a send reached now
        counts its expiry from then, so a reminder three days late is dropped as expired.
        """
        ev = self.event
        due_since = logical or now
        sid = step_id
        for _ in range(_MAX_STEPS_PER_RUN):
            if sid is None:
                self.exit(enr, journey, "completed")
                return
            step = journey.steps.get(sid)
            if step is None:  # a missing edge ends the journey rather than crashing
                self.exit(enr, journey, "missing_step")
                return
            enr.step_id = sid
            enr.history.append(StepVisit(now, sid, type(step).__name__))
            del enr.history[:-MAX_HISTORY]
            self.outcome(enr, journey, "step", step_id=sid)
            match step:
                case SendStep():
                    enr.status = "send_pending"
                    enr.step_due_since = due_since
                    enr.sto_done = False
                    enr.approved_by = None
                    enr.pending_action_id = None
                    enr.hold_reason = None
                    self.pending.append(_Pending(enr, journey))
                    return
                case WaitStep():
                    self.schedule(enr, self.wait_until(step, now), "waiting")
                    return
                case WaitForStep():
                    self.schedule(enr, now + step.timeout, "waiting_for")
                    return
                case BranchStep():
                    ctx = EvalContext(self.state, ev, enr, now)
                    sid = next((c.next for c in step.cases if c.condition(ctx)), step.otherwise)
                case ExitStep():
                    self.exit(enr, journey, step.reason)
                    return
                case _:
                    assert_never(step)
        self.exit(enr, journey, "step_limit")

    def wait_until(self, step: WaitStep, now: datetime) -> datetime:
        if step.duration is not None:
            return now + step.duration
        assert step.until is not None
        tz = zone(self.state.preferences.time_zone, self.policy.default_time_zone)
        local = now.astimezone(tz)
        at = local_time_to_utc(local.date() + timedelta(days=step.day_offset), step.until, tz)
        if at <= now:
            at = local_time_to_utc(
                local.date() + timedelta(days=step.day_offset + 1), step.until, tz
            )
        return at

    def exit(self, enr: Enrollment, journey: Journey | None, reason: str) -> None:
        s = self.state
        if enr in s.enrollments:
            s.enrollments.remove(enr)
        enr.due_at = None
        hist = s.journeys.setdefault(enr.journey_id, JourneyHistory())
        hist.last_exited_at = self.now
        hist.last_exit_reason = reason
        if journey is not None:
            self.outcome(enr, journey, "exited", reason=reason)

    def journey_of(self, enr: Enrollment) -> Journey | None:
        return self.rules.version(enr.journey_id, enr.version)

    # --- entries, exits, goals ----------------------------------------------------------------
    def try_enter(self, journey: Journey, ev: CustomerEvent | None, trigger_key: str) -> None:
        s = self.state
        if ev is not None and self.overtaken(journey, ev):
            return
        if not journey.entry.condition(EvalContext(s, ev, None, self.now)):
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
                and self.now - hist.last_entered_at < after
            ):
                return
        # Only a customer who would really enter hears why they did not.
        if self.rules.is_paused(journey.id):
            self.explain(
                "suppressed", "journey_paused", "journey is paused: no new entries", None, journey
            )
            return
        if (switch := self.rules.kill_switch(journey.id)) is not None:
            self.explain(
                "suppressed", "kill_switch", f"kill switch {switch}: no new entries", None, journey
            )
            return
        last_order = s.commerce.last_order_at
        if last_order is not None:
            for window in self.policy.suppress_after_order:
                if window.tags & journey.tags and self.now - last_order < window.duration:
                    self.explain(
                        "suppressed",
                        "suppressed_after_purchase",
                        f"ordered {format_duration(self.now - last_order)} ago: this journey "
                        f"does not start for {format_duration(window.duration)} after an order",
                        None,
                        journey,
                    )
                    return
        if journey.group is not None:
            for other in list(s.enrollments):
                other_j = self.journey_of(other)
                if other_j is None or other_j.group != journey.group or other is active:
                    continue
                if other_j.priority >= journey.priority:
                    self.explain(
                        "suppressed",
                        "lost_arbitration",
                        f"already in {other_j.id} (priority {other_j.priority}) of group {journey.group}",
                        None,
                        journey,
                    )
                    return
                self.exit(other, other_j, f"preempted_by:{journey.id}")
        if active is not None:
            active_j = self.journey_of(active)
            self.exit(active, active_j, "reentered")
        self.enter(journey, ev, trigger_key)

    def overtaken(self, journey: Journey, ev: CustomerEvent) -> bool:
        """True when the trigger arrived late and an exit event already happened after it
        (e.g. an add-to-cart delivered after the order that followed it): entering now would
        start a journey the customer has already left."""
        s = self.state
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

    def enter(self, journey: Journey, ev: CustomerEvent | None, trigger_key: str) -> None:
        s = self.state
        enr = Enrollment(
            enrollment_id=stable_id(self.cid, journey.id, journey.version, trigger_key),
            journey_id=journey.id,
            version=journey.version,
            entered_at=self.now,
            trigger=_trigger_facts(ev),
        )
        holdout = (
            journey.holdout_pct > 0
            and bucket(self.cid, journey.id, "holdout") < journey.holdout_pct
        )
        if journey.variants:
            point = bucket(self.cid, journey.id, "variant")
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
        hist.last_entered_at = self.now
        hist.last_version = journey.version
        if journey.goal is not None:
            s.attributions.append(
                Attribution(
                    enrollment_id=enr.enrollment_id,
                    journey_id=journey.id,
                    version=journey.version,
                    entered_at=self.now,
                    until=self.now + journey.goal.within,
                    variant=enr.variant,
                    holdout=holdout,
                    trigger_event_id=ev.event_id if ev else None,
                )
            )
        self.outcome(enr, journey, "entered", holdout=holdout)
        if holdout:
            # Holdout customers receive nothing from this journey; their conversions are still
            # counted through the attribution record, which is what lift is measured against.
            hist.last_exited_at = self.now
            hist.last_exit_reason = "holdout"
            self.explain(
                "suppressed",
                "holdout",
                f"in the {journey.holdout_pct:g}% holdout group: nothing is sent",
                enr,
                journey,
            )
            return
        s.enrollments.append(enr)
        self.run(enr, journey, journey.first_step, self.now)

    def exits(self, ev: CustomerEvent) -> None:
        activity = is_activity(ev.event_type)
        for enr in list(self.state.enrollments):
            journey = self.journey_of(enr)
            if journey is None:
                continue
            ctx = EvalContext(self.state, ev, enr, self.now)
            for rule in journey.exits:
                hit = rule.event == ev.event_type or (rule.event == ACTIVITY and activity)
                if hit and rule.condition(ctx):
                    self.exit(enr, journey, f"exit_on:{ev.event_type}")
                    break

    def goals(self, ev: CustomerEvent) -> None:
        for a in self.state.attributions:
            if a.converted or ev.event_id == a.trigger_event_id:
                continue
            # Event time, not processing time: an in-store order reported late still counts.
            if not a.entered_at - _CLOCK_SKEW <= ev.event_time <= a.until:
                continue
            journey = self.rules.version(a.journey_id, a.version)
            if journey is None or journey.goal is None or ev.event_type not in journey.goal.events:
                continue
            if not journey.goal.condition(EvalContext(self.state, ev, None, self.now)):
                continue
            a.converted = True
            revenue = ev.order.total if ev.order is not None else None
            self.outcomes.append(
                Outcome(
                    outcome_id=stable_id(a.enrollment_id, "converted"),
                    journey_id=a.journey_id,
                    journey_version=a.version,
                    customer_id=self.cid,
                    kind="converted",
                    occurred_at=self.now,
                    variant=a.variant,
                    holdout=a.holdout,
                    reason=f"goal {ev.event_type} within the attribution window",
                    revenue=Money(revenue.amount_minor, revenue.currency) if revenue else None,
                )
            )

    def mark_engagement(self, ev: CustomerEvent) -> None:
        if ev.event_type not in ("message_opened", "message_clicked") or ev.message is None:
            return
        for enr in self.state.enrollments:
            if (ev.message.action_id and ev.message.action_id in enr.action_ids) or (
                ev.message.action_id is None and ev.message.journey_id == enr.journey_id
            ):
                enr.engaged = True

    def wait_fors(self, ev: CustomerEvent) -> None:
        for enr in list(self.state.enrollments):
            if enr.status != "waiting_for":
                continue
            journey = self.journey_of(enr)
            step = journey.steps.get(enr.step_id or "") if journey else None
            if journey is None or not isinstance(step, WaitForStep):
                continue
            if ev.event_type in step.events and step.condition(
                EvalContext(self.state, ev, enr, self.now)
            ):
                enr.due_at = None
                enr.seq += 1
                self.run(enr, journey, step.on_event, self.now)

    def release_holds(self, reason: str) -> None:
        for enr in self.state.enrollments:
            if enr.status == "held" and enr.hold_reason == reason:
                journey = self.journey_of(enr)
                if journey is not None:
                    enr.due_at = None
                    enr.seq += 1
                    enr.status = "send_pending"
                    self.pending.append(_Pending(enr, journey))

    # --- sending ------------------------------------------------------------------------------
    def process_sends(self) -> None:
        for _ in range(_MAX_SEND_ROUNDS):
            batch = [
                p
                for p in self.pending
                if p.enrollment in self.state.enrollments and p.enrollment.status == "send_pending"
            ]
            self.pending = []
            if not batch:
                return
            unique: dict[int, _Pending] = {}
            for p in batch:
                unique.setdefault(id(p.enrollment), p)
            # Arbitration: priority first, then expected value (journey value x channel odds).
            ordered = sorted(
                unique.values(),
                key=lambda p: (-p.journey.priority, -self.expected_value(p), p.journey.id),
            )
            for p in ordered:
                self.send(p.enrollment, p.journey)

    def expected_value(self, p: _Pending) -> float:
        step = p.journey.steps.get(p.enrollment.step_id or "")
        if not isinstance(step, SendStep):
            return 0.0
        return p.journey.value * max(
            posterior_mean(self.state, ch, self.policy) for ch in step.channels
        )

    def send(self, enr: Enrollment, journey: Journey) -> None:
        step = journey.steps.get(enr.step_id or "")
        if not isinstance(step, SendStep):
            self.exit(enr, journey, "missing_step")
            return
        action_id = stable_id(self.cid, journey.id, journey.version, enr.enrollment_id, step.id)
        due_since = enr.step_due_since or self.now
        category = step.category or journey.category
        expires_at = due_since + (step.expires_after or self.policy.expiry_for(category))
        verdict = evaluate(
            state=self.state,
            journey=journey,
            step=step,
            enrollment=enr,
            action_id=action_id,
            now=self.now,
            expires_at=expires_at,
            rules=self.rules,
            marketing_sent_now=self.marketing_sent_now,
        )
        details = verdict.details
        match verdict.kind:
            case "send":
                assert verdict.channel is not None
                self.emit(
                    enr, journey, step, action_id, verdict.channel, expires_at, verdict.message
                )
                self.explain(
                    "sent",
                    "sent",
                    verdict.message,
                    enr,
                    journey,
                    verdict.channel,
                    action_id,
                    details=details,
                )
                self.run(enr, journey, step.next, self.now)
            case "suppress":
                self.explain(
                    "suppressed",
                    verdict.code,
                    verdict.message,
                    enr,
                    journey,
                    verdict.channel,
                    action_id,
                    details=details,
                )
                self.outcome(
                    enr,
                    journey,
                    "suppressed",
                    step_id=step.id,
                    reason=verdict.code,
                    action_id=action_id,
                )
                self.run(enr, journey, step.next, self.now)
            case "defer":
                assert verdict.until is not None
                # An engine-chosen delay is not lateness: the expiry clock restarts at the new time.
                enr.step_due_since = verdict.until
                if verdict.code == "send_time":
                    enr.sto_done = True
                self.schedule(enr, verdict.until, "send_pending")
                self.explain(
                    "deferred",
                    verdict.code,
                    verdict.message,
                    enr,
                    journey,
                    action_id=action_id,
                    until=verdict.until,
                )
            case "hold":
                assert verdict.until is not None
                self.schedule(enr, verdict.until, "held")
                enr.hold_reason = verdict.code
                self.explain(
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
                self.schedule(enr, verdict.until, "awaiting_approval")
                enr.pending_action_id = action_id
                self.explain(
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

    def emit(
        self,
        enr: Enrollment,
        journey: Journey,
        step: SendStep,
        action_id: str,
        channel: str,
        expires_at: datetime,
        channel_why: str,
    ) -> None:
        s = self.state
        category = step.category or journey.category
        trigger = enr.trigger.get("event_type", "inactivity")
        reason = (
            f"{journey.name} (v{journey.version}), step {step.id}: entered on {trigger} at "
            f"{to_iso(enr.entered_at)}; channel {channel}: {channel_why}; consented, within caps, "
            "outside quiet hours"
        )
        if enr.approved_by:
            reason += f"; approved by {enr.approved_by}"
        payload = {**enr.trigger, **step.payload}
        payload.pop("event_type", None)
        self.actions.append(
            Action(
                action_id=action_id,
                customer_id=self.cid,
                channel=channel,
                journey_id=journey.id,
                journey_version=journey.version,
                step_id=step.id,
                template_id=step.template_for(enr.variant),
                category=category,
                created_at=self.now,
                not_before=self.now,
                expires_at=max(expires_at, self.now),
                reason=reason,
                variant=enr.variant,
                offer_id=step.offer,
                destination=destination(s, channel),
                locale=s.preferences.language,
                priority=journey.priority,
                payload=payload,
            )
        )
        s.send_log.append(
            SendRecord(action_id, self.now, channel, category, journey.id, step.offer)
        )
        s.engagement.setdefault(channel, ChannelEngagement()).sends += 1
        if step.offer:
            s.offers_in_flight.append(
                OfferInFlight(
                    step.offer,
                    action_id,
                    journey.id,
                    self.now,
                    self.now + self.policy.offer_in_flight_for,
                )
            )
        enr.action_ids.append(action_id)
        enr.pending_action_id = None
        if category == "marketing":
            self.marketing_sent_now = True
        self.outcome(enr, journey, "sent", step_id=step.id, channel=channel, action_id=action_id)

    # --- records ------------------------------------------------------------------------------
    def outcome(
        self,
        enr: Enrollment,
        journey: Journey,
        kind: OutcomeKind,
        *,
        step_id: str | None = None,
        channel: str | None = None,
        action_id: str | None = None,
        reason: str | None = None,
        holdout: bool = False,
    ) -> None:
        self.outcomes.append(
            Outcome(
                outcome_id=stable_id(enr.enrollment_id, kind, step_id or ""),
                journey_id=journey.id,
                journey_version=journey.version,
                customer_id=self.cid,
                kind=kind,
                occurred_at=self.now,
                step_id=step_id,
                variant=enr.variant,
                holdout=holdout,
                channel=channel,
                action_id=action_id,
                reason=reason,
            )
        )

    def explain(
        self,
        kind: ExplanationKind,
        code: str,
        message: str,
        enr: Enrollment | None,
        journey: Journey,
        channel: str | None = None,
        action_id: str | None = None,
        until: datetime | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        self.explanations.append(
            Explanation(
                customer_id=self.cid,
                kind=kind,
                code=code,
                message=message,
                at=self.now,
                journey_id=journey.id,
                journey_version=journey.version,
                step_id=enr.step_id if enr else None,
                channel=channel,
                action_id=action_id,
                until=until,
                details=details or {},
            )
        )

    def refresh_idle_timers(self) -> None:
        """Keep one inactivity check per inactivity-triggered journey, due when the customer
        will have been idle long enough; activity moves it, so the old token goes stale."""
        s = self.state
        last = s.last_activity_at
        wanted: dict[str, datetime] = {}
        if last is not None:
            for journey in self.rules.inactivity_journeys():
                assert journey.entry.inactivity is not None
                wanted[f"{_IDLE_PREFIX}{journey.id}|{to_iso(last)}"] = (
                    last + journey.entry.inactivity
                )
        for token in [t for t in s.timers if t.startswith(_IDLE_PREFIX) and t not in wanted]:
            del s.timers[token]
        for token, due in wanted.items():
            if due > self.now:  # a check that already fired is not scheduled again
                s.timers.setdefault(token, due)

    def finish(self) -> Decision:
        self.process_sends()
        self.refresh_idle_timers()
        s = self.state
        s.send_log = [r for r in s.send_log if self.now - r.at < _SEND_LOG_KEEP]
        s.offers_in_flight = [o for o in s.offers_in_flight if o.until > self.now]
        s.attributions = [a for a in s.attributions if a.until > self.now and not a.converted]
        if self.explanations:
            s.recent_decisions.extend(
                DecisionNote(
                    e.at, e.kind, e.code, e.message, e.journey_id, e.step_id, e.channel, e.action_id
                )
                for e in self.explanations
            )
            del s.recent_decisions[:-MAX_DECISION_NOTES]
        wakeups = [w for w in pending_wakeups(s) if (w.token, w.due_at) not in self.known_wakeups]
        return Decision(
            self.cid,
            s,
            tuple(self.actions),
            tuple(wakeups),
            tuple(self.outcomes),
            tuple(self.explanations),
        )


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
