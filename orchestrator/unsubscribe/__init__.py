"""One-click unsubscribe (RFC 8058): signed links for marketing e-mail (``links``), the consent
events a choice produces (``consent``) and the HTTP server that turns the one into the other
(``server``, imported on demand so the senders do not load aiohttp)."""

from __future__ import annotations

from orchestrator.unsubscribe.errors import ExpiredLinkError, InvalidLinkError, UnsubscribeError
from orchestrator.unsubscribe.links import (
    UnsubscribeLinks,
    UnsubscribeToken,
    require_secret,
    sign_token,
    verify_token,
)

__all__ = [
    "ExpiredLinkError",
    "InvalidLinkError",
    "UnsubscribeError",
    "UnsubscribeLinks",
    "UnsubscribeToken",
    "require_secret",
    "sign_token",
    "verify_token",
]
