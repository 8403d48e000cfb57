"""Enrolment statuses: the transition table allows exactly the moves the engine makes."""

from __future__ import annotations

import pytest

from orchestrator.engine import CustomerState, Enrollment
from orchestrator.engine.enrollment_status import (
    TRANSITIONS,
    EnrollmentStatus,
    move,
    schedule,
    wake,
)
from orchestrator.engine.errors import IllegalTransition

from .factories import T0, at

S = EnrollmentStatus


def enrolment(status: EnrollmentStatus) -> Enrollment:
    return Enrollment("enr-1", "promo", 1, T0, step_id="message", status=status)


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (S.READY, S.SEND_PENDING),  # a journey that starts with a send
        (S.READY, S.EXITED),  # a branch straight to an exit
        (S.WAITING, S.WAITING),  # a wait after a wait
        (S.WAITING_FOR, S.SEND_PENDING),  # the awaited event came
        (S.SEND_PENDING, S.SEND_PENDING),  # deferred (quiet hours, arbitration, send time)
        (S.SEND_PENDING, S.HELD),  # an open ticket or a paused journey
        (S.SEND_PENDING, S.AWAITING_APPROVAL),
        (S.HELD, S.SEND_PENDING),  # the hold cleared or is retried
        (S.AWAITING_APPROVAL, S.SEND_PENDING),  # approved, or the approval timed out
        (S.AWAITING_APPROVAL, S.WAITING),  # rejected: the steps after the send
    ],
)
def test_the_moves_the_engine_makes_are_allowed(start: S, to: S) -> None:
    enr = enrolment(start)
    move(enr, to)
    assert enr.status is to


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (S.HELD, S.WAITING),  # a held send resumes only as a send
        (S.HELD, S.AWAITING_APPROVAL),
        (S.WAITING, S.HELD),  # only a send can be held
        (S.WAITING_FOR, S.AWAITING_APPROVAL),
        (S.SEND_PENDING, S.READY),  # nothing goes back to before its first step
        (S.EXITED, S.SEND_PENDING),  # an exited enrolment never moves again
        (S.EXITED, S.EXITED),
    ],
)
def test_any_other_move_is_refused_naming_the_enrolment(start: S, to: S) -> None:
    enr = enrolment(start)
    with pytest.raises(IllegalTransition, match=f"enr-1 in journey promo v1: no move from {start}"):
        move(enr, to)
    assert enr.status is start


def test_every_status_has_a_row_and_only_exited_is_final() -> None:
    assert set(TRANSITIONS) == set(S)
    assert [s for s, targets in TRANSITIONS.items() if not targets] == [S.EXITED]
    assert all(S.EXITED in TRANSITIONS[s] for s in S if s is not S.EXITED)  # exit rules, anywhere


def test_schedule_makes_older_wake_ups_stale_and_wake_takes_it_off_its_timer() -> None:
    enr = enrolment(S.READY)
    schedule(enr, S.WAITING, at(hours=1))
    first = enr.token
    assert (enr.status, enr.due_at) == (S.WAITING, at(hours=1))
    wake(enr)
    assert enr.due_at is None and enr.token != first


def test_a_stored_status_loads_as_the_enum_and_is_stored_as_its_word() -> None:
    state = CustomerState("c1", enrollments=[enrolment(S.AWAITING_APPROVAL)])
    doc = state.to_dict()
    assert doc["enrollments"][0]["status"] == "awaiting_approval"
    assert type(doc["enrollments"][0]["status"]) is str
    loaded = CustomerState.from_dict(doc)
    assert loaded.enrollments[0].status is S.AWAITING_APPROVAL and loaded == state
