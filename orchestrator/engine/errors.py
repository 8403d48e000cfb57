"""Errors of the decision engine, under Tutti's root error; each says what the operator should do."""

from __future__ import annotations

from orchestrator.errors import JourneyError, TuttiError

__all__ = ["JourneyError", "PolicyError", "SignalError"]


class PolicyError(TuttiError):
    """The governance policy file is invalid; the message names the file, field and expectation."""


class SignalError(TuttiError):
    """An event, receipt or command dict cannot be turned into a signal (missing/odd field).

    The worker should dead-letter the record with this message as the reason.
    """
