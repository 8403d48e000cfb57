"""Signed, expiring unsubscribe links: what the e-mail sender puts in ``List-Unsubscribe`` and
what the unsubscribe server accepts. Pure: no I/O, the clock is an argument.

A token is ``<payload>.<signature>``, both base64url without padding: the payload is compact
JSON holding the customer id, channel, purpose and expiry (never a contact point), and the
signature is HMAC-SHA256 over the payload with ``unsubscribe.secret``. The payload is signed,
not encrypted: it carries nothing a person should not see about themselves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orchestrator.config import UnsubscribeSettings
from orchestrator.engine.decision import Action
from orchestrator.errors import ConfigError
from orchestrator.unsubscribe.errors import ExpiredLinkError, InvalidLinkError
from orchestrator.vocabulary import ACTION_CHANNELS, CONSENT_PURPOSES

__all__ = [
    "MAX_TOKEN_LENGTH",
    "UnsubscribeLinks",
    "UnsubscribeToken",
    "require_secret",
    "sign_token",
    "verify_token",
]

#: Longer query strings are refused before any decoding: real tokens are ~150 characters.
MAX_TOKEN_LENGTH = 1024
_VERSION = 1
# Domain separation: a signature made for something else with the same key never verifies here.
_CONTEXT = b"tutti-unsubscribe-v1:"
# Strict alphabet: Python's base64 decoder skips foreign characters, which would let many
# spellings of one link verify.
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class UnsubscribeToken:
    """Whose messages, on which channel, for which purpose; valid until ``expires_at``."""

    customer_id: str
    channel: str
    purpose: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: str) -> bytes:
    return hmac.new(secret.encode(), _CONTEXT + payload.encode(), hashlib.sha256).digest()


def sign_token(token: UnsubscribeToken, secret: str) -> str:
    body = {
        "v": _VERSION,
        "c": token.customer_id,
        "ch": token.channel,
        "p": token.purpose,
        "exp": int(token.expires_at.timestamp()),
    }
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_b64(_mac(secret, payload))}"


def verify_token(text: str, secret: str, now: datetime) -> UnsubscribeToken:
    """The token's content if its signature holds and it has not expired.

    The signature is checked (in constant time) before anything in the payload is parsed, so an
    altered link is refused without interpreting attacker-chosen bytes.
    """
    if len(text) > MAX_TOKEN_LENGTH or not _TOKEN.fullmatch(text):
        raise InvalidLinkError("malformed unsubscribe token")
    payload, signature = text.split(".")
    try:
        given = _unb64(signature)
    except (binascii.Error, ValueError):
        raise InvalidLinkError("malformed unsubscribe signature") from None
    # A non-canonical spelling (unused low bits of the last character) is another link.
    if _b64(given) != signature or not hmac.compare_digest(given, _mac(secret, payload)):
        raise InvalidLinkError("unsubscribe token signature does not match")
    try:
        body = json.loads(_unb64(payload))
        token = UnsubscribeToken(
            customer_id=str(body["c"]),
            channel=str(body["ch"]),
            purpose=str(body["p"]),
            expires_at=datetime.fromtimestamp(int(body["exp"]), UTC),
        )
        version = body["v"]
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError):
        # Only reachable with a valid signature: a token from a newer, incompatible Tutti.
        raise InvalidLinkError("unsubscribe token payload is not readable") from None
    if version != _VERSION or token.channel not in ACTION_CHANNELS:
        raise InvalidLinkError("unsubscribe token of an unknown version or channel")
    if token.purpose not in CONSENT_PURPOSES or not token.customer_id:
        raise InvalidLinkError("unsubscribe token without a purpose or customer")
    if now >= token.expires_at:
        raise ExpiredLinkError("unsubscribe link has expired")
    return token


def require_secret(settings: UnsubscribeSettings, needed_by: str) -> str:
    """The configured secret, or a ConfigError naming the setting for the process that needs it."""
    if not settings.secret:
        raise ConfigError(
            f"setting unsubscribe.secret is missing; {needed_by} needs it to sign or check "
            "unsubscribe links: set TUTTI_UNSUBSCRIBE_SECRET (or [unsubscribe] secret in the "
            "config file) to the same random string of 32+ characters for the e-mail sender and "
            "tutti unsubscribe-server"
        )
    return settings.secret


class UnsubscribeLinks:
    """Makes the unsubscribe link of an action: marketing only, for the action's channel."""

    def __init__(self, base_url: str, secret: str, lifetime: timedelta) -> None:
        self.base_url = base_url
        self._secret = secret
        self.lifetime = lifetime

    @classmethod
    def from_settings(cls, settings: UnsubscribeSettings, needed_by: str) -> UnsubscribeLinks:
        secret = require_secret(settings, needed_by)
        return cls(settings.base_url, secret, timedelta(days=settings.link_lifetime_days))

    def url(self, token: UnsubscribeToken) -> str:
        sep = "&" if "?" in self.base_url else "?"
        return f"{self.base_url}{sep}t={sign_token(token, self._secret)}"

    def for_action(self, action: Action) -> str | None:
        """None for transactional and service messages (and an unknown category): an order
        confirmation must not offer to unsubscribe from marketing. The expiry counts from the
        last moment the action may be sent, so the link lives its full lifetime whenever the
        sender delivers it, and a resend after a crash carries the very same link."""
        if action.category != "marketing" or action.channel not in ACTION_CHANNELS:
            return None
        return self.url(
            UnsubscribeToken(
                action.customer_id,
                action.channel,
                "marketing",
                action.expires_at.astimezone(UTC) + self.lifetime,
            )
        )
