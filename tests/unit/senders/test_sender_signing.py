"""Webhook signatures: what a receiver verifying Tutti's requests relies on."""

from __future__ import annotations

import pytest

from orchestrator.senders.signing import SignatureError, signature_header, verify

SECRET = "whsec_test"
BODY = b'{"action_id":"a1","text":"hi"}'


def test_a_fresh_signature_verifies_and_returns_its_timestamp() -> None:
    header = signature_header(SECRET, BODY, timestamp=1_700_000_000)
    assert verify(SECRET, header, BODY, now=1_700_000_010) == 1_700_000_000


@pytest.mark.parametrize(
    ("secret", "body", "now", "message"),
    [
        ("other-secret", BODY, 1_700_000_000, "does not match"),
        (SECRET, BODY + b" ", 1_700_000_000, "does not match"),
        (SECRET, BODY, 1_700_000_000 + 301, "tolerance"),
        (SECRET, BODY, 1_700_000_000 - 301, "tolerance"),
    ],
    ids=["wrong-secret", "tampered-body", "replayed-late", "from-the-future"],
)
def test_forged_tampered_or_replayed_requests_are_rejected(
    secret: str, body: bytes, now: int, message: str
) -> None:
    header = signature_header(SECRET, BODY, timestamp=1_700_000_000)
    with pytest.raises(SignatureError, match=message):
        verify(secret, header, body, now=now)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=12", "t=soon,v1=abc"])
def test_malformed_headers_are_rejected(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify(SECRET, header, BODY, now=12)


def test_any_signature_matches_during_secret_rotation() -> None:
    old = signature_header("old-secret", BODY, timestamp=100).split(",")[1]
    header = signature_header(SECRET, BODY, timestamp=100) + "," + old
    assert verify("old-secret", header, BODY, now=100) == 100
    assert verify(SECRET, header, BODY, now=100) == 100
