"""Errors of the decision engine, under Tutti's root error; each says what the operator should do."""

from __future__ import annotations

from orchestrator.errors import JourneyError, TuttiError

__all__ = ["IllegalTransition", "JourneyError", "PolicyError", "SignalError"]


class PolicyError(TuttiError):
    """The governance policy file is invalid; the message names the file, field and expectation."""


class SignalError(TuttiError):
    """An event, receipt or command dict cannot be turned into a signal (missing/odd field).

    The worker should dead-letter the record with this message as the reason.
    """


class IllegalTransition(TuttiError):
    """The engine tried to move an enrolment where its transition table does not allow: a bug in
    the engine, not in the input. The worker dead-letters the signal; report it with the
    customer's recent decisions (`tutti customer show`) so the move can be fixed or allowed."""
