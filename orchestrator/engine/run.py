"""The working memory of one `decide` call (`Run`) and the records it collects: outcomes,
explanations, the sends waiting for governance, and the end of an enrolment.

The step interpreter, the enrolment rules, sending and dispatch all work on one `Run`, made
per call around a private copy of the customer's state; nothing in it outlives the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.engine.conditions import Condition, EvalContext
from orchestrator.engine.decision import (
    Action,
    Explanation,
    ExplanationKind,
    Outcome,
    OutcomeKind,
    stable_id,
)
from orchestrator.engine.enrollment_status import EnrollmentStatus, move
from orchestrator.engine.journey import Journey
from orchestrator.engine.rules import Rules
from orchestrator.engine.scores import ScoreBook
from orchestrator.engine.signals import CustomerEvent
from orchestrator.engine.state import CustomerState, Enrollment, JourneyHistory, pending_wakeups
from orchestrator.errors import TuttiError

__all__ = ["PendingSend", "Run"]


@dataclass
class PendingSend:
    """A send step due in this call, waiting to meet governance (`sending.send_due`)."""

    enrollment: Enrollment
    journey: Journey
    # The close of the arbitration window it was decided in (None: not a marketing send, or
    # arbitration across events is off), named when it loses.
    window_closes_at: datetime | None = None


class Run:
    """The working memory of one decide call: the state being changed and what it produced."""

    def __init__(
        self, state: CustomerState, now: datetime, rules: Rules, at: datetime | None = None
    ) -> None:
        self.state = state
        self.now = now
        # The call's logical time: when its signal reached the pipeline (`decide`'s
        # ``arrived_at``), never after ``now``. Sends reached in the call are due then, and
        # arbitration windows close on it (engine/arbitration.py); everything else (expiry,
        # quiet hours, caps, waits) runs on ``now``. The simulator's clock: equal to ``now``.
        self.at = now if at is None or at > now else at
        self.rules = rules
        self.policy = rules.policy
        self.cid = state.customer_id
        self.actions: list[Action] = []
        self.outcomes: list[Outcome] = []
        self.explanations: list[Explanation] = []
        self.pending: list[PendingSend] = []
        # One marketing message per customer per moment, across calls too: separate events at
        # the same instant (or a wake-up and an event) do not each send one.
        self.marketing_sent_now = any(
            r.at == now and r.category == "marketing" for r in state.send_log
        )
        # The event being handled; None while enrolments that were already due are advanced
        # first, and for wake-ups, receipts and commands.
        self.event: CustomerEvent | None = None
        # Wake-ups already known to the worker; only new ones are returned.
        self.known_wakeups = {(w.token, w.due_at) for w in pending_wakeups(state)}
        # Predictive scores, computed only if a condition asks for one, once per call.
        self.scores = ScoreBook(rules.models, now)
        # Segments the customer entered / left in this call (engine/membership.py), in order.
        # The hook for what follows membership (an ad audience per segment): read them after
        # membership.update_segments, which runs right after each signal changed the profile.
        self.segments_entered: list[str] = []
        self.segments_exited: list[str] = []
        # Their internal signals (``segment_entered:vip``) not yet handled in this call.
        self.segment_triggers: list[tuple[str, str]] = []  # (trigger, cause)
        # Consent as the call found it: a change of the ads consent moves the customer in or
        # out of their segments' ad audiences (engine/audiences.py).
        self.consent_at_start = dict(state.consent)

    def journey_of(self, enr: Enrollment) -> Journey | None:
        """The journey version the enrolment runs (None once it is no longer published)."""
        return self.rules.version(enr.journey_id, enr.version)

    def queue_send(self, enr: Enrollment, journey: Journey) -> None:
        """The enrolment's send step is due: it meets governance when the call's sends are
        arbitrated together."""
        self.pending.append(PendingSend(enr, journey))

    def exit(self, enr: Enrollment, journey: Journey | None, reason: str) -> None:
        """End the enrolment: it leaves the state, and its journey history keeps why."""
        s = self.state
        if enr in s.enrollments:
            s.enrollments.remove(enr)
        move(enr, EnrollmentStatus.EXITED)
        enr.due_at = None
        hist = s.journeys.setdefault(enr.journey_id, JourneyHistory())
        hist.last_exited_at = self.now
        hist.last_exit_reason = reason
        if journey is not None:
            self.outcome(enr, journey, "exited", reason=reason)

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
        occasion: str = "",
    ) -> None:
        """``occasion`` tells apart outcomes of one kind at one step (a send deferred twice)."""
        parts = (occasion,) if occasion else ()
        self.outcomes.append(
            Outcome(
                outcome_id=stable_id(enr.enrollment_id, kind, step_id or "", *parts),
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

    def holds(
        self,
        condition: Condition,
        ctx: EvalContext,
        journey: Journey,
        enr: Enrollment | None,
        where: str,
    ) -> bool | None:
        """The condition's verdict for this customer, or None when it cannot be evaluated
        (``ConditionError``: a value of another type; or a fault in evaluating it). Then that
        one journey step is skipped for this customer, explained as ``condition_error`` (the
        worker counts and logs it) and the other journeys run on: one journey that does not
        fit some profiles never stops a customer's signal (issue 13, scenario 9)."""
        try:
            return condition(ctx)
        except Exception as exc:  # evaluating a condition changes nothing: safe to skip
            reason = str(exc) if isinstance(exc, TuttiError) else type(exc).__name__
            self.explain(
                "info",
                "condition_error",
                f"{where}: {reason}; skipped for this customer",
                enr,
                journey,
                details={"where": where},
            )
            return None

    def scores_for(self, journey: Journey) -> str:
        """The scores this call computed that the journey's rules use, with their top reasons
        ('churn risk 0.72: no order for 54 days, ...'); '' when none."""
        used = [s for s in self.scores.used if f"score.{s.name}" in journey.text]
        return "; ".join(s.describe() for s in used)

    def note(self, code: str, message: str) -> None:
        """An explanation about the customer rather than a journey (erased, nothing to approve)."""
        self.explanations.append(Explanation(self.cid, "info", code, message, self.now))
