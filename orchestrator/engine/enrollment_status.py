"""An enrolment's status and the only moves between statuses: one table; any other move raises.

The engine changes an enrolment's status only through `move` (or `schedule`, which also sets
the wake-up), so a status the table does not expect is a bug caught where it happens, not a
customer stuck in a journey. Exiting is a move too: an exited enrolment leaves the state and
can never move again.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from orchestrator.engine.errors import IllegalTransition

if TYPE_CHECKING:  # state.py imports this module for the field's type
    from orchestrator.engine.state import Enrollment

__all__ = ["TRANSITIONS", "EnrollmentStatus", "move", "schedule", "wake"]


class EnrollmentStatus(StrEnum):
    """Where an enrolment stands; the value is what the stored state holds."""

    READY = "ready"  # just entered, its first step not walked yet
    WAITING = "waiting"  # at a `wait` step, due when the wait ends
    WAITING_FOR = "waiting_for"  # at a `wait_for` step: its event, or the timeout
    SEND_PENDING = "send_pending"  # at a `send` step, due to meet governance (now or deferred)
    HELD = "held"  # a send waiting for a condition to clear (open ticket, paused journey)
    AWAITING_APPROVAL = "awaiting_approval"  # a send waiting for an operator's approval
    EXITED = "exited"  # left the journey (and the state): no further move


_S = EnrollmentStatus
# Where walking the steps can leave an enrolment: at a send, at a wait, or out of the journey.
_WALKED = frozenset({_S.SEND_PENDING, _S.WAITING, _S.WAITING_FOR, _S.EXITED})

TRANSITIONS: Mapping[EnrollmentStatus, frozenset[EnrollmentStatus]] = {
    _S.READY: _WALKED,  # the first steps are walked on entry
    _S.WAITING: _WALKED,  # the wait ended: the next steps are walked
    _S.WAITING_FOR: _WALKED,  # the event came or the timeout passed
    # Governance sent or suppressed it (the next steps), deferred it (still pending), held it,
    # or asked for approval.
    _S.SEND_PENDING: _WALKED | {_S.HELD, _S.AWAITING_APPROVAL},
    _S.HELD: frozenset({_S.SEND_PENDING, _S.EXITED}),  # the hold cleared or is retried
    # Approved or timed out (pending again), rejected (the steps after the send).
    _S.AWAITING_APPROVAL: _WALKED,
    _S.EXITED: frozenset(),
}


def move(enrollment: Enrollment, to: EnrollmentStatus) -> None:
    """Set the enrolment's status, if the table allows the move from where it stands."""
    current = EnrollmentStatus(enrollment.status)
    if to not in TRANSITIONS[current]:
        raise IllegalTransition(
            f"enrolment {enrollment.enrollment_id} in journey {enrollment.journey_id} "
            f"v{enrollment.version}: no move from {current} to {to}"
        )
    enrollment.status = to


def schedule(enrollment: Enrollment, to: EnrollmentStatus, due: datetime) -> None:
    """Move the enrolment and make it due at `due`; any wake-up scheduled before goes stale."""
    move(enrollment, to)
    enrollment.due_at = due
    enrollment.seq += 1


def wake(enrollment: Enrollment) -> None:
    """Take the enrolment off its timer now (an event or command moved it): the wake-up it was
    waiting for goes stale."""
    enrollment.due_at = None
    enrollment.seq += 1
