"""Webhook signatures: HMAC-SHA256 over ``"<timestamp>.<body>"``, like Stripe's scheme.

The sender adds ``Tutti-Signature: t=<unix seconds>,v1=<hex digest>``. A receiver recomputes
the digest over the timestamp and the *raw* body bytes with the shared secret, compares in
constant time, and rejects timestamps older than its tolerance: a captured request cannot be
replayed later, and the body cannot be altered. Several ``v1=`` entries may appear while a secret
is being rotated; any match is accepted. This module has no dependencies so receivers can copy it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "SIGNATURE_HEADER",
    "SignatureError",
    "sign",
    "signature_header",
    "verify",
]

SIGNATURE_HEADER = "Tutti-Signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """The request is not signed by the shared secret, or the signature is too old."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},v1={sign(secret, ts, body)}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """Return the signed timestamp, or raise :class:`SignatureError` saying what is wrong."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError("timestamp is not an integer") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("header must contain t=<timestamp> and v1=<signature>")
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp outside the {tolerance_s}s tolerance (replayed?)")
    expected = sign(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match the body and secret")
    return timestamp
