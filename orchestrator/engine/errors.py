"""Errors of the decision engine, under Tutti's root error; each says what the operator should do."""

from __future__ import annotations

from orchestrator.errors import JourneyError, TuttiError

__all__ = ["ConditionError", "IllegalTransition", "JourneyError", "PolicyError", "SignalError"]


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


class ConditionError(TuttiError):
    """A journey condition cannot be evaluated for this customer: the value it reads is of
    another type than the one it compares with (a custom attribute sent as text where the
    journey compares numbers, say). The engine skips that journey step for that customer
    (explanation ``condition_error``, counted by the worker); the other journeys still run."""
