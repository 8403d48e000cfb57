"""Personal data never reaches logs or receipts through provider error texts."""

from __future__ import annotations

import pytest

from orchestrator.senders.privacy import mask, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("550 5.1.1 <ann.smith+promo@example.co.uk>: Recipient address rejected", "ann.smith"),
        ("invalid number +33 6 12 34 56 78 for this account", "12 34"),
        ("number 0612345678 unreachable", "0612345678"),
        ("token 'dGhpcyBpcyBhIHB1c2ggdG9rZW4' unknown", "dGhpcyBpcyBhIHB1c2ggdG9rZW4"),
    ],
)
def test_redact_removes_addresses_numbers_and_the_known_destination(text: str, secret: str) -> None:
    out = redact(text, "dGhpcyBpcyBhIHB1c2ggdG9rZW4")
    assert secret not in out
    assert "<redacted>" in out


def test_redact_keeps_status_codes_readable() -> None:
    assert (
        redact("HTTP 503: upstream busy, retry in 30 s") == "HTTP 503: upstream busy, retry in 30 s"
    )


def test_mask_leaves_only_a_hint() -> None:
    assert mask("ann.smith@example.com") == "a***@example.com"
    assert mask("+33612345678") == "+33*******78"
    assert mask(None) == "-"
