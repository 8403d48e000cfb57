"""Keep personal data out of logs and receipts.

Provider error texts often quote the recipient ("550 5.1.1 <ann@example.com>: user unknown");
every free-text reason passes through :func:`redact` before it is logged or written to Kafka.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["fingerprint", "mask", "redact"]

_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+")
# Seven or more digits, possibly split by spaces, dots or dashes: phone numbers, not status codes.
_PHONE = re.compile(r"\+?\d(?:[\s().-]?\d){6,}")
_REDACTED = "<redacted>"


def redact(text: str, *known: str | None, limit: int = 300) -> str:
    """``text`` with the known personal values, e-mail addresses and phone numbers removed."""
    for value in known:
        if value:
            text = text.replace(value, _REDACTED)
    text = _EMAIL.sub(_REDACTED, text)
    text = _PHONE.sub(_REDACTED, text)
    return text[:limit]


def mask(destination: str | None) -> str:
    """A hint for humans at a development console: ``a***@example.com``, ``+33******78``."""
    if not destination:
        return "-"
    if "@" in destination:
        local, _, domain = destination.partition("@")
        return f"{local[:1]}***@{domain}"
    return f"{destination[:3]}{'*' * max(len(destination) - 5, 0)}{destination[-2:]}"


def fingerprint(value: str) -> str:
    """A short stable hash, to correlate log lines about one destination without showing it."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]
