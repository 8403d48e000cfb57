"""Errors of the unsubscribe links and server, each saying what the person or operator can do."""

from __future__ import annotations

from orchestrator.errors import TuttiError

__all__ = ["ExpiredLinkError", "InvalidLinkError", "UnsubscribeError"]


class UnsubscribeError(TuttiError):
    """Root of the unsubscribe errors."""


class InvalidLinkError(UnsubscribeError):
    """The link was altered, truncated or signed with another secret: nothing is changed. If
    every link fails, the sender and the server do not share unsubscribe.secret."""


class ExpiredLinkError(UnsubscribeError):
    """The link is genuine but older than unsubscribe.link_lifetime_days: nothing is changed;
    the person can use the link in a more recent message."""
