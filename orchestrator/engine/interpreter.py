"""The step interpreter: walks an enrolment through its journey's steps until it has to wait.

A walk stops at a `send` (queued for governance), a `wait` or `wait_for` (scheduled), or the end
of the journey; `branch` and `audience` steps are done on the spot. A missing step ends the journey rather
than crashing it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import assert_never

from orchestrator.engine.audiences import audience_step
from orchestrator.engine.conditions import EvalContext
from orchestrator.engine.enrollment_status import EnrollmentStatus, move, schedule
from orchestrator.engine.journey import (
    AudienceStep,
    BranchStep,
    ExitStep,
    Journey,
    SendStep,
    WaitForStep,
    WaitStep,
)
from orchestrator.engine.run import Run
from orchestrator.engine.state import MAX_HISTORY, Enrollment, StepVisit
from orchestrator.engine.timeutil import local_time_to_utc, zone

__all__ = ["walk"]

_MAX_STEPS_PER_WALK = 64  # a journey graph is acyclic; this only guards against surprises


def walk(
    run: Run,
    enr: Enrollment,
    journey: Journey,
    step_id: str | None,
    now: datetime,
    logical: datetime | None = None,
) -> None:
    """Walk the enrolment from `step_id` until it has to wait (or ends).

    `logical` is when this move was due (a late wake-up's due time): a send reached now
    counts its expiry from then, so a reminder three days late is dropped as expired. Without
    it, the call's logical time (`Run.at`: when its signal reached the pipeline), so a send a
    backlogged event triggers joins the arbitration window its event falls in.
    """
    ev = run.event
    due_since = logical or run.at
    sid = step_id
    for _ in range(_MAX_STEPS_PER_WALK):
        if sid is None:
            run.exit(enr, journey, "completed")
            return
        step = journey.steps.get(sid)
        if step is None:  # a missing edge ends the journey rather than crashing
            run.exit(enr, journey, "missing_step")
            return
        enr.step_id = sid
        enr.history.append(StepVisit(now, sid, type(step).__name__))
        del enr.history[:-MAX_HISTORY]
        run.outcome(enr, journey, "step", step_id=sid)
        match step:
            case SendStep():
                move(enr, EnrollmentStatus.SEND_PENDING)
                enr.step_due_since = due_since
                enr.sto_done = False
                enr.approved_by = None
                enr.pending_action_id = None
                enr.hold_reason = None
                run.queue_send(enr, journey)
                return
            case WaitStep():
                schedule(enr, EnrollmentStatus.WAITING, _wait_until(run, step, now))
                return
            case WaitForStep():
                schedule(enr, EnrollmentStatus.WAITING_FOR, now + step.timeout)
                return
            case BranchStep():
                ctx = EvalContext(run.state, ev, enr, now, run.scores)
                chosen = step.otherwise
                for case in step.cases:
                    verdict = run.holds(case.condition, ctx, journey, enr, f"branch {sid}")
                    if verdict is None:  # no path can be chosen for this customer
                        run.exit(enr, journey, "condition_error")
                        return
                    if verdict:
                        chosen = case.next
                        break
                sid = chosen
            case ExitStep():
                run.exit(enr, journey, step.reason)
                return
            case AudienceStep():
                audience_step(run, enr, journey, step)
                sid = step.next
            case _:
                assert_never(step)
    run.exit(enr, journey, "step_limit")


def _wait_until(run: Run, step: WaitStep, now: datetime) -> datetime:
    """The end of a wait: after its duration, or at the next `until` local time of day in the
    customer's time zone (`day_offset` days on)."""
    if step.duration is not None:
        return now + step.duration
    assert step.until is not None
    tz = zone(run.state.preferences.time_zone, run.policy.default_time_zone)
    local = now.astimezone(tz)
    at = local_time_to_utc(local.date() + timedelta(days=step.day_offset), step.until, tz)
    if at <= now:
        at = local_time_to_utc(local.date() + timedelta(days=step.day_offset + 1), step.until, tz)
    return at
